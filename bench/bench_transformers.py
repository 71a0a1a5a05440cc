"""Speed of LRP on vision transformers: the attention presets side by side with a plain gradient.

Per model (random weights, eval mode, float32, seeded random input at the model's own size), one
warm-up run each, then interleaved timed repeats in a rotating order (``bench_lrp.time_engines``):

* ``gradient``: :func:`lrp_desktop_core.explain.explain` with ``Method("gradient")``;
* ``cp_epsilon``: CP-LRP on attention and Epsilon on every layer with weights (the attention rule
  of every preset's base layer map; here ``epsilon_plus_flat`` with its first layer Epsilon too):
  proportional rules only, so about the cost of a gradient (goal: at most 1.5x);
* ``vit_cp``: the recommended preset (CP-LRP, Gamma on the MLP layers, ZBox on the patch
  embedding);
* ``gamma_everywhere``: ``vit_cp`` with Gamma on every linear layer and convolution but the first
  (goal: at most 3x);
* ``vit_attnlrp``: AttnLRP on attention and Epsilon elsewhere.

The table gives the median seconds and the ratio to the gradient of the same run.

Usage::

    python bench/bench_transformers.py                      # vit_b_16
    python bench/bench_transformers.py --models vit_b_16,swin_t,maxvit_t --repeats 5
"""

from __future__ import annotations

import argparse
import sys

import torch
from bench_lrp import inputs_for, time_engines
from torch import nn

from lrp_desktop_core.explain import Method, explain
from lrp_desktop_core.models import load_model
from lrp_desktop_core.rulemap import RuleChoice, RuleMap

GAMMA = RuleChoice("Gamma", {"gamma": 0.25})


def rule_maps(model: nn.Module, spec) -> dict[str, RuleMap]:
    """Return the rule map of every compared setting, keyed by its column name."""
    cp = RuleMap.recommended(model, spec, "vit_cp")
    first = next(iter(cp))
    weighted = [name for name, choice in cp.items() if choice.rule == "Epsilon" and name != first]
    return {
        "cp_epsilon": RuleMap.recommended(model, spec, "epsilon_plus_flat").with_rule(
            first, RuleChoice("Epsilon")
        ),
        "vit_cp": cp,
        "gamma_everywhere": cp.with_rule(weighted, GAMMA),
        "vit_attnlrp": RuleMap.recommended(model, spec, "vit_attnlrp"),
    }


def measure(name: str, repeats: int, batch: int) -> dict[str, float]:
    """Median seconds per setting for the registry model ``name``."""
    torch.manual_seed(0)
    loaded = load_model(name)
    model = loaded.model
    methods = {"gradient": Method("gradient")}
    methods.update(
        {key: Method("lrp", rules) for key, rules in rule_maps(model, loaded.spec).items()}
    )
    images, one_hot = inputs_for(model, batch, loaded.spec.input_size[0])
    target = one_hot.argmax(1)

    def through_explain(method: Method):
        return lambda images, one_hot: explain(model, images, method, target).relevance

    functions = {key: through_explain(method) for key, method in methods.items()}
    seconds, _ = time_engines(functions, images, one_hot, repeats)
    return seconds


def format_table(rows: dict[str, dict[str, float]]) -> str:
    """Return a Markdown table: seconds and the ratio to the gradient per model and setting."""
    settings = list(next(iter(rows.values())))
    lines = [
        "| model | " + " | ".join(settings) + " |",
        "|---|" + "---:|" * len(settings),
    ]
    for model, seconds in rows.items():
        cells = [f"{seconds['gradient']:.2f} s"] + [
            f"{seconds[key]:.2f} s ({seconds[key] / seconds['gradient']:.2f}x)"
            for key in settings[1:]
        ]
        lines.append(f"| {model} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="vit_b_16", help="comma-separated registry names")
    parser.add_argument("--repeats", type=int, default=5, help="timed runs per setting (median)")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    rows = {name: measure(name, args.repeats, args.batch) for name in args.models.split(",")}
    print(format_table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
