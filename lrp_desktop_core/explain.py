"""One call from (model, input, method, target) to an explanation.

:func:`explain` runs a :class:`Method` (LRP with a rule map, one of the gradient-based and
perturbation baselines, or attention rollout for Vision Transformers) on a batch and returns an
:class:`Explanation` of plain numpy arrays, ready for drawing, exporting and scoring.  It is
cancellable between steps, reports its progress, and leaves the model exactly as it found it, also
when it fails half-way.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn

from .attribution import (
    Attributor,
    Gradient,
    IntegratedGradients,
    Occlusion,
    SmoothGrad,
    occlude_independent,
    one_hot,
    resolve_target,
)
from .faults import (  # the errors explain raises are importable from here too
    DeviceOutOfMemoryError,  # noqa: F401
    NonFiniteError,  # noqa: F401
    check_finite,
    out_of_memory_error,
)
from .input_check import check_input
from .names import METHODS

if TYPE_CHECKING:
    from .rulemap import RuleMap

METHOD_KINDS = METHODS.names
"""The method kinds, as the catalogue lists them (:data:`~.names.METHODS`)."""

DEFAULT_PARAMS: dict[str, dict[str, Any]] = {
    kind: entry.defaults() for kind, entry in METHODS.items()
}
"""Every parameter each method kind accepts, with its default."""

CLASS_AGNOSTIC_KINDS = frozenset(kind for kind, entry in METHODS.items() if entry.class_agnostic)
"""Method kinds whose map is the same for every class and no share of the explained logit, so no
conservation figure applies to it (see :func:`relevance_conservation`)."""

Target = int | Sequence[int] | np.ndarray | torch.Tensor | None


class UnsupportedModelError(ValueError):
    """Raised before any computation when a method cannot explain a model at all.

    Whatever the input; the message says which methods can.
    """


class NotHookableError(UnsupportedModelError):
    """Raised when LRP is asked of a model that cannot be hooked (a TorchScript model)."""


class ExplainCancelled(Exception):
    """Raised when the ``cancel`` callback of a long computation returns True."""


def raise_if_cancelled(cancel: Callable[[], bool] | None) -> None:
    """Raise :class:`ExplainCancelled` if ``cancel`` is given and returns True."""
    if cancel is not None and cancel():
        raise ExplainCancelled("the computation was cancelled")


@dataclass(frozen=True)
class Method:
    """What to compute: an attribution method and its settings.

    Parameters
    ----------
    kind : str
        One of :data:`METHOD_KINDS`.  "lrp" propagates the explained logit backwards through the
        rules of ``rulemap``, so the relevance sums to that logit where the rules conserve it.
        "gradient" is the plain input gradient of the explained logit, "smoothgrad" its mean over
        noisy copies of the input, "integrated_gradients" the path integral from a zero baseline
        (input times mean gradient, summing to ``f(x) - f(0)``), and "occlusion" the drop of the
        logit when a sliding window (``window`` x ``window`` pixels, all channels, every ``stride``
        pixels, wrapping around the border) is set to zero, summed over the windows that cover an
        element.  Each is computed by its class in :mod:`.attribution` (see
        :func:`attributor_for`), so the numbers equal those of the class called directly;
        SmoothGrad's last sample is the input itself, as in zennit.  A rule map of
        modified-gradient rules only (e.g. the "guided_backprop" preset) runs as "lrp" too; its
        label then omits "LRP".
        "rollout" is attention rollout (Abnar and Zuidema 2020, see :mod:`.rollout`), for
        Vision Transformers with a class token only: how much each patch flows into the class
        token through all attention layers; it is class-agnostic, the same for every target.
    rulemap : RuleMap, optional
        The rules for "lrp" (required there); must be None for the other kinds.
    params : dict, optional
        Settings of the kind, see :data:`DEFAULT_PARAMS`; missing ones take the defaults.
    """

    kind: str
    rulemap: RuleMap | None = None
    params: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.kind not in METHOD_KINDS:
            choices = ", ".join(METHOD_KINDS)
            raise ValueError(f"unknown method {self.kind!r}; choose one of {choices}")
        if (self.kind == "lrp") != (self.rulemap is not None):
            raise ValueError("an 'lrp' method needs a rule map, and only 'lrp' takes one")
        unknown = sorted(set(self.params) - set(DEFAULT_PARAMS[self.kind]))
        if unknown:
            allowed = ", ".join(DEFAULT_PARAMS[self.kind]) or "none"
            raise ValueError(
                f"unknown parameter(s) {', '.join(unknown)} for {self.kind!r}; allowed: {allowed}"
            )
        object.__setattr__(self, "params", dict(self.params))

    def __hash__(self) -> int:
        rules = None if self.rulemap is None else self.rulemap.fingerprint()
        return hash((self.kind, rules, tuple(sorted(self.params.items()))))

    def settings(self) -> dict[str, Any]:
        """Return all parameters of the kind: the given ones over the defaults."""
        return {**DEFAULT_PARAMS[self.kind], **self.params}

    def label(self) -> str:
        """Return a short caption, e.g. ``"LRP epsilon_plus"`` or ``"SmoothGrad (20 x 0.1)"``."""
        settings = self.settings()
        if self.kind == "lrp":
            assert self.rulemap is not None
            name = self.rulemap.preset or "custom rules"
            return f"LRP {name}" if self.rulemap.is_lrp else name
        return METHODS[self.kind].label(settings)

    @property
    def class_agnostic(self) -> bool:
        """Whether the map is the same for every class (see :data:`CLASS_AGNOSTIC_KINDS`)."""
        return self.kind in CLASS_AGNOSTIC_KINDS

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-ready description (kind, settings, and the rule map for "lrp")."""
        record: dict[str, Any] = {"kind": self.kind, "label": self.label(), **self.settings()}
        if self.rulemap is not None:
            record["rulemap"] = self.rulemap.to_dict()
        return record


@dataclass(frozen=True)
class Explanation:
    """The result of :func:`explain` for a batch of ``N`` inputs, as numpy arrays.

    Attributes
    ----------
    relevance : np.ndarray
        Relevance per input element, float32, shape ``(N, C, H, W)``.
    logits : np.ndarray
        Model outputs, shape ``(N, K)``.
    probabilities : np.ndarray
        Softmax of the logits, shape ``(N, K)``.
    target : np.ndarray
        Explained class per sample, int64, shape ``(N,)``.
    explained_output : np.ndarray
        The explained logit per sample, shape ``(N,)``.
    relevance_sum : np.ndarray
        Total relevance per sample, shape ``(N,)``.
    seconds : float
        Wall time of the computation.
    method : Method, optional
        The method that produced it.
    device : str
        The device it ran on, e.g. ``"cpu"`` or ``"cuda:0"``.
    warnings : tuple of str
        Why the relevance may be wrong, one sentence each, for an "lrp" method: what the audit
        of the relevance path found (see :func:`~.audit.audit_rulemap`), and explained outputs
        so small that the rules' stabilizers take their relevance; empty when all is well.
    """

    relevance: np.ndarray
    logits: np.ndarray
    probabilities: np.ndarray
    target: np.ndarray
    explained_output: np.ndarray
    relevance_sum: np.ndarray
    seconds: float
    method: Method | None = None
    device: str = "cpu"
    warnings: tuple[str, ...] = ()

    def __len__(self) -> int:
        return len(self.target)


def relevance_conservation(explanation: Explanation) -> np.ndarray:
    """Return the total relevance divided by the explained logit, per sample.

    Close to 1 for LRP rules that conserve relevance; NaN where the explained logit is zero, and
    everywhere for a class-agnostic method (attention rollout), whose map is no share of the logit.
    """
    out = np.full(explanation.relevance_sum.shape, np.nan)
    if explanation.method is not None and explanation.method.class_agnostic:
        return out
    np.divide(
        explanation.relevance_sum.astype(np.float64),
        explanation.explained_output.astype(np.float64),
        out=out,
        where=explanation.explained_output != 0,
    )
    return out


def model_device(model: nn.Module) -> torch.device:
    """Return the device of the model's first parameter or buffer (CPU for a model without any)."""
    for tensor in (*model.parameters(), *model.buffers()):
        return tensor.device
    return torch.device("cpu")


def model_dtype(model: nn.Module) -> torch.dtype:
    """Return the floating point type of the model's first floating parameter (else float32)."""
    floating = (p.dtype for p in model.parameters() if p.is_floating_point())
    return next(floating, torch.float32)


def explain(
    model: nn.Module,
    inputs: torch.Tensor,
    method: Method,
    target: Target = None,
    *,
    cancel: Callable[[], bool] | None = None,
    progress: Callable[[float], None] | None = None,
) -> Explanation:
    """Explain the model's decision on a batch of inputs.

    Parameters
    ----------
    model : nn.Module
        Classifier returning logits of shape ``(N, K)``; it runs where its parameters are, in
        evaluation mode, and is returned unchanged (parameters, buffers, modes, hooks).
    inputs : torch.Tensor
        Preprocessed inputs, floating point, shape ``(N, C, H, W)``, finite; moved to the model's
        device and floating point type (float32 for a model without floating parameters).
    method : Method
        What to compute.
    target : int, sequence of int, or None
        The class to explain: None for the top-1 class of each sample, one index for all samples,
        or one index per sample.
    cancel : callable, optional
        Polled between steps; when it returns True, :class:`ExplainCancelled` is raised.
    progress : callable, optional
        Called with the finished share (0 to 1) after each step.

    Returns
    -------
    Explanation
        Relevance, prediction and timing as numpy arrays.

    Raises
    ------
    ValueError
        When the inputs do not fit the model (see :func:`~.attribution.check_input`).
    UnsupportedModelError
        When the method cannot explain this model at all (LRP of a TorchScript model, attention
        rollout of a model without a Vision Transformer), before any computation.
    NonFiniteError
        When the inputs, the logits or the relevance hold NaN or inf.
    DeviceOutOfMemoryError
        When the device runs out of memory; its cache is emptied first.
    """
    start = time.perf_counter()
    device = model_device(model)
    given = torch.as_tensor(inputs).detach()
    dtype = model_dtype(model)
    check_input(model, given, ndim=4)
    check_finite(given, "input", method, dtype)
    failure = None
    try:
        logits, targets, relevance, warnings = _compute(
            model, given.to(device=device, dtype=dtype), method, target, cancel, progress
        )
    except torch.cuda.OutOfMemoryError:
        failure = out_of_memory_error(given, device, method)
    if failure is not None:  # raised here, where the failed computation's tensors are freed
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        raise failure
    logits = logits.detach().double()
    logits_float = logits.float()
    check_finite(logits_float, "logits", method, dtype)
    relevance_float = relevance.detach().float()
    check_finite(relevance_float, "relevance", method, dtype)
    explained = logits.gather(1, targets[:, None])[:, 0]
    if method.kind == "lrp":
        assert method.rulemap is not None
        warnings += _stabilizer_warnings(explained, method.rulemap.largest_stabilizer)
    relevance_np = relevance_float.cpu().numpy()
    return Explanation(
        relevance=relevance_np,
        logits=logits_float.cpu().numpy(),
        probabilities=torch.softmax(logits, dim=1).float().cpu().numpy(),
        target=targets.cpu().numpy(),
        explained_output=explained.float().cpu().numpy(),
        relevance_sum=relevance_np.reshape(len(relevance_np), -1).sum(axis=1, dtype=np.float64),
        seconds=time.perf_counter() - start,
        method=method,
        device=str(device),
        warnings=warnings,
    )


def _compute(
    model: nn.Module,
    batch: torch.Tensor,
    method: Method,
    target: Target,
    cancel: Callable[[], bool] | None,
    progress: Callable[[float], None] | None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, tuple[str, ...]]:
    """Return logits, explained classes, relevance and the audit's warnings of ``method``."""
    raise_if_cancelled(cancel)
    warnings = _lrp_warnings(model, batch, method)
    with evaluation_mode(model):
        logits, targets, relevance = _METHODS[method.kind](
            model, batch, target, method, cancel, _ProgressSteps(progress)
        )
    return logits, targets, relevance, warnings


def _lrp_warnings(model: nn.Module, batch: torch.Tensor, method: Method) -> tuple[str, ...]:
    """Check that LRP can run on ``model`` and return the audit's warnings (cached per rule map)."""
    if method.kind != "lrp":
        return ()
    if isinstance(model, torch.jit.ScriptModule):
        raise NotHookableError(
            "LRP needs hooks on the model's layers, and a TorchScript model cannot be hooked. "
            "Load the model as a Python module (its class and a state dict) for LRP; Gradient, "
            "SmoothGrad, Integrated Gradients and Occlusion work on TorchScript models as they are."
        )
    from .audit import audit_rulemap

    assert method.rulemap is not None
    return audit_rulemap(model, method.rulemap, (1, *batch.shape[1:])).warnings


STABILIZER_MARGIN = 100.0
"""An explained output smaller than this many times the rules' largest stabilizer is warned of:
at an output layer with that stabilizer, more than 1 % of the relevance would reach no input."""


def _stabilizer_warnings(explained: torch.Tensor, stabilizer: float) -> tuple[str, ...]:
    """Warn where the explained outputs are so small that the stabilizers take their relevance.

    Random weights give such outputs (an EfficientNet's logits are about 1e-14), and so do classes
    the model all but rules out; the heatmap then comes out faint or empty, not wrong in shape.
    """
    small = (explained.abs() < STABILIZER_MARGIN * stabilizer).nonzero()[:, 0].tolist()
    if not small:
        return ()
    smallest = float(explained.abs().min())
    absorbed = stabilizer / (smallest + stabilizer)
    which = "The explained output"
    if len(explained) > 1:
        numbers = ", ".join(str(index + 1) for index in small)
        which += f" of {len(small)} of the {len(explained)} images in the batch ({numbers})"
    return (
        f"{which} is tiny ({smallest:.2g}) against the rules' epsilon or stabilizer "
        f"({stabilizer:g}): a layer with that stabilizer keeps up to {absorbed:.0%} of the "
        "relevance from reaching the input, so the heatmap comes out faint. Lower epsilon and "
        "stabilizer well below that output, or explain a class with a larger output.",
    )


class _ProgressSteps:
    """Report ``done / total`` to an optional progress callback."""

    def __init__(self, callback: Callable[[float], None] | None) -> None:
        self.callback = callback

    def done(self, finished: int, total: int) -> None:
        if self.callback is not None:
            self.callback(min(1.0, finished / total))


@contextmanager
def evaluation_mode(model: nn.Module) -> Iterator[None]:
    """Put every submodule in evaluation mode and restore each one's own mode afterwards.

    Used around every use of a model, so that e.g. batch norm statistics never change.
    """
    modes = [(module, module.training) for module in model.modules()]
    model.eval()
    try:
        yield
    finally:
        for module, training in modes:
            module.training = training


def _attributor_callback(
    cancel: Callable[[], bool] | None, step: _ProgressSteps
) -> Callable[[int, int], None]:
    """Return the attributors' step callback: report progress, then stop if cancelled."""

    def callback(done: int, total: int) -> None:
        step.done(done, total)
        if done < total:
            raise_if_cancelled(cancel)

    return callback


class _TargetSeed:
    """Output attribution of a target resolved from the output it sees.

    One-hot, or for LRP the explained logit itself, so that relevance sums to it. Keeps the
    classes it chose.
    """

    def __init__(self, target: Target, scale_by_output: bool) -> None:
        self.target = target
        self.scale_by_output = scale_by_output
        self.targets: torch.Tensor | None = None

    def __call__(self, output: torch.Tensor) -> torch.Tensor:
        self.targets = resolve_target(self.target, output)
        seed = one_hot(output, self.targets)
        return seed * output if self.scale_by_output else seed


def _gradient_of(model, batch, target, attributor: Gradient, scale_by_output: bool = False):
    """Run ``attributor`` with the seed of ``target``; return logits, classes and relevance."""
    seed = _TargetSeed(target, scale_by_output)
    logits, relevance = attributor(batch, seed)
    assert seed.targets is not None
    return logits.detach(), seed.targets, relevance


def _plain_forward(
    model: nn.Module, batch: torch.Tensor, target: Target
) -> tuple[torch.Tensor, torch.Tensor]:
    with torch.no_grad():
        logits = model(batch)
    return logits, resolve_target(target, logits)


def attributor_for(
    method: Method, model: nn.Module, *, callback: Callable[[int, int], None] | None = None
) -> Attributor:
    """Return the attributor of :mod:`.attribution` that computes ``method`` (not rollout).

    The attribution's output attribution is given at the call: for "lrp", the one-hot of the
    explained class times the output; for "gradient", "smoothgrad" and "integrated_gradients", the
    one-hot of the explained class; for "occlusion", :func:`occlusion_score` of the explained class.
    Called so, the attributor gives exactly the relevance :func:`explain` gives.
    """
    settings = method.settings()
    if method.kind == "lrp":
        assert method.rulemap is not None
        return Gradient(model, method.rulemap.to_composite(), callback=callback)
    if method.kind == "gradient":
        return Gradient(model, callback=callback)
    if method.kind == "smoothgrad":
        return SmoothGrad(
            model,
            noise_level=float(settings["noise_level"]),
            n_iter=int(settings["n_iter"]),
            seed=int(settings["seed"]),
            callback=callback,
        )
    if method.kind == "integrated_gradients":
        return IntegratedGradients(model, n_iter=int(settings["n_iter"]), callback=callback)
    if method.kind == "occlusion":
        window, stride = int(settings["window"]), int(settings["stride"])
        return Occlusion(
            model,
            occlusion_fn=occlude_window,
            window=(window, window),
            stride=(stride, stride),
            batch_size=int(settings["batch_size"]),
            callback=callback,
        )
    raise ValueError(f"{method.kind!r} has no attributor")


def occlude_window(input: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Set the window (where ``mask`` is True) to zero and keep the rest of the input."""
    return occlude_independent(input, mask, invert=True)


class occlusion_score:  # noqa: N801 - used like a function
    """Output attribution of "occlusion": how much the explained logit drops from ``logits``.

    Parameters
    ----------
    logits : torch.Tensor
        The logits at the unoccluded input, shape ``(N, K)``.
    targets : torch.Tensor
        The explained class of each sample, shape ``(N,)``.
    """

    def __init__(self, logits: torch.Tensor, targets: torch.Tensor) -> None:
        self.reference = logits.detach()
        self.one_hot = one_hot(self.reference, targets)

    def __call__(self, output: torch.Tensor) -> torch.Tensor:
        """Return the drop of the explained logit at ``output`` (zero for the other classes)."""
        return (self.reference - output) * self.one_hot


def _lrp(model, batch, target, method, cancel, step):
    attributor = attributor_for(method, model, callback=_attributor_callback(cancel, step))
    return _gradient_of(model, batch, target, attributor, scale_by_output=True)


def _gradient(model, batch, target, method, cancel, step):
    attributor = attributor_for(method, model, callback=_attributor_callback(cancel, step))
    return _gradient_of(model, batch, target, attributor)


def _seeded(model, batch, target, method, cancel, step):
    """Compute SmoothGrad or Integrated Gradients.

    The class is chosen at the input, before the noise or the path change the output.
    """
    logits, targets = _plain_forward(model, batch, target)
    attributor = attributor_for(method, model, callback=_attributor_callback(cancel, step))
    seed = one_hot(logits, targets)
    return logits, targets, attributor(batch, seed)[1]


def _occlusion(model, batch, target, method, cancel, step):
    logits, targets = _plain_forward(model, batch, target)
    attributor = attributor_for(method, model, callback=_attributor_callback(cancel, step))
    with torch.no_grad():
        relevance = attributor(batch, occlusion_score(logits, targets))[1]
    return logits, targets, relevance


def _rollout(model, batch, target, method, cancel, step):
    from .rollout import attention_rollout  # imports this module

    logits, heat = attention_rollout(model, batch)
    channels = batch.shape[1]
    per_pixel = heat[:, None] / channels  # spread over the channels, as occlusion's drops are
    step.done(1, 1)
    return logits, resolve_target(target, logits), per_pixel.repeat(1, channels, 1, 1)


_METHODS = {
    "lrp": _lrp,
    "gradient": _gradient,
    "smoothgrad": _seeded,
    "integrated_gradients": _seeded,
    "occlusion": _occlusion,
    "rollout": _rollout,
}
