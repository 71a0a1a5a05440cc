"""Per-layer rule assignments that round-trip through JSON and build a composite.

A :class:`RuleMap` says, for every leaf layer of a (canonized) model, which LRP rule it gets and
with which parameters, together with the canonizer set the names refer to.  It is immutable, so an
edit (:meth:`RuleMap.with_rule`) yields a new map, which makes undo and caching simple.  It is what
the desktop app's module tree edits and what ``lrp-explain --rules`` reads.

Examples
--------
>>> rules = RuleMap.from_preset(model, "epsilon_plus", canonizer="merge_batchnorm")
>>> rules = rules.with_rule(["features.0"], RuleChoice("Flat"))
>>> rules.save("rules.json")
>>> with RuleMap.load("rules.json").to_composite().context(model):
...     ...
"""

from __future__ import annotations

import hashlib
import inspect
import json
import math
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from . import rules, types
from .attention import AttentionCore
from .canonizers import CANONIZERS, get_canonizers
from .composites import COMPOSITES, NameMapComposite
from .core import Composite, Hook
from .layer import ChannelAffine, Prepend, Product, Scale, Sum

if TYPE_CHECKING:
    from .recommend import Recommendation

FORMAT = "lrp-desktop rule map"
FORMAT_VERSION = 1
NO_RULE = "none"
LRP_RULES = frozenset({"Epsilon", "Gamma", "AlphaBeta", "ZPlus", "ZBox", "Flat", "WSquare"})
"""Rules that redistribute relevance through weighted layers: a map with one of them is LRP."""

ParamValue = float | tuple[float, ...]


@dataclass(frozen=True)
class ParamSpec:
    """An editable parameter of a rule.

    Attributes
    ----------
    name : str
        Keyword of the rule class, e.g. ``"gamma"``.
    default : float or None
        Default value; None where there is no sensible default (the ZBox bounds).
    minimum : float
        Smallest allowed value.
    per_channel : bool
        Whether a list with one value per input channel is allowed besides a single number.
    description : str
        What the parameter does, in plain language.
    """

    name: str
    default: float | None
    minimum: float
    per_channel: bool = False
    description: str = ""


@dataclass(frozen=True)
class RuleSpec:
    """A rule the user can choose: its class, editable parameters and where it applies.

    Attributes
    ----------
    name : str
        Name in rule maps and JSON: the class name, or ``"none"`` for the plain gradient.
    rule_class : type or None
        The hook class in :mod:`.rules` (None for ``"none"``).
    params : tuple of ParamSpec
        The editable parameters.
    accepts : tuple of type or None
        Layer types the rule can handle; None for any layer.
    accepts_text : str
        The same in words, for error messages.
    description : str
        Plain-language description (from ``rules.RULE_DESCRIPTIONS``).
    """

    name: str
    rule_class: type[Hook] | None
    params: tuple[ParamSpec, ...]
    accepts: tuple[type, ...] | None
    accepts_text: str
    description: str

    def default_params(self) -> dict[str, float]:
        """Return the parameters that have defaults, with those defaults."""
        return {spec.name: spec.default for spec in self.params if spec.default is not None}

    def handles(self, module: nn.Module) -> bool:
        """Return whether the rule can be attached to ``module``."""
        return self.accepts is None or isinstance(module, self.accepts)


_PARAM_TEXT = {
    "epsilon": "Added to denominators; larger values absorb weak, contradictory evidence.",
    "gamma": "How much positive contributions are favoured; 0 gives Epsilon.",
    "alpha": "Weight of the positive contributions.",
    "beta": "Weight of the negative contributions (alpha - beta must be 1).",
    "low": "Lowest possible input value after normalisation (a number or one per channel).",
    "high": "Highest possible input value after normalisation (a number or one per channel).",
    "stabilizer": "Small number added to denominators against division by zero.",
    "beta_smooth": "Sharpness of the softplus; larger is closer to the plain gradient.",
}


def _param(name: str, default: float | None, minimum: float = 0.0) -> ParamSpec:
    per_channel = name in ("low", "high")
    return ParamSpec(name, default, minimum, per_channel, _PARAM_TEXT[name])


_STABILIZER = _param("stabilizer", 1e-6)
_WEIGHTED = ((types.Linear,), "a convolution or linear layer")
_LINEAR_OPS = (
    (types.Linear, types.AvgPool, types.BatchNorm, Sum, Prepend),
    "a convolution, linear, average pooling, batch norm, sum or prepend layer",
)
_RELU = ((nn.ReLU,), "a ReLU")
_ELEMENTWISE = (
    (
        types.Activation,
        types.BatchNorm,
        nn.Identity,
        nn.Dropout,
        nn.Dropout2d,
        Scale,
        ChannelAffine,
    ),
    "a layer that keeps the shape: an activation, batch norm, dropout, identity, layer scale or "
    "input transform",
)
_PRODUCT = ((Product,), "a product of a signal and a gate")
_ATTENTION = ((AttentionCore,), "an attention core")
_ANY = (None, "any layer")
_NO_RULE_TEXT = "No rule: the plain gradient flows through this layer, as without LRP."

_RULE_TABLE: tuple[tuple[str, tuple[ParamSpec, ...], tuple[Any, str]], ...] = (
    ("Epsilon", (_param("epsilon", 1e-6),), _LINEAR_OPS),
    ("Gamma", (_param("gamma", 0.25), _STABILIZER), _WEIGHTED),
    ("AlphaBeta", (_param("alpha", 2.0), _param("beta", 1.0), _STABILIZER), _WEIGHTED),
    ("ZPlus", (_STABILIZER,), _WEIGHTED),
    (
        "ZBox",
        (_param("low", None, -math.inf), _param("high", None, -math.inf), _STABILIZER),
        _WEIGHTED,
    ),
    ("Flat", (_STABILIZER,), _WEIGHTED),
    ("WSquare", (_STABILIZER,), _WEIGHTED),
    ("Norm", (_STABILIZER,), _LINEAR_OPS),
    ("Pass", (), _ELEMENTWISE),
    ("LayerNormEpsilon", (_param("epsilon", 1e-6),), ((types.LayerNorm,), "a layer norm")),
    ("SignalTakesAll", (), _PRODUCT),
    ("UniformSplit", (), _PRODUCT),
    ("AttentionConservative", (_param("epsilon", 1e-6),), _ATTENTION),
    ("AttentionAttnLRP", (_param("epsilon", 1e-6),), _ATTENTION),
    ("ReLUDeconvNet", (), _RELU),
    ("ReLUGuidedBackprop", (), _RELU),
    ("ReLUBetaSmooth", (_param("beta_smooth", 10.0),), _RELU),
    (NO_RULE, (), _ANY),
)

RULE_CHOICES: dict[str, RuleSpec] = {
    name: RuleSpec(
        name=name,
        rule_class=None if name == NO_RULE else getattr(rules, name),
        params=params,
        accepts=accepts[0],
        accepts_text=accepts[1],
        description=_NO_RULE_TEXT if name == NO_RULE else rules.RULE_DESCRIPTIONS[name],
    )
    for name, params, accepts in _RULE_TABLE
}
"""Every rule the rule editor offers, by name (class names as in zennit, plus ``"none"``)."""


class RuleChoice:
    """One layer's rule and its parameters; immutable and hashable.

    Parameters
    ----------
    rule : str
        A name in :data:`RULE_CHOICES`.
    params : dict, optional
        Parameter values; missing ones take the defaults.  A per-channel parameter (ZBox's
        ``low``/``high``) is a number or a list with one number per input channel.

    Raises
    ------
    ValueError
        For an unknown rule, unknown or missing parameters, or values the rule rejects.
    """

    __slots__ = ("_items", "rule")

    def __init__(self, rule: str, params: Mapping[str, Any] | None = None) -> None:
        if rule not in RULE_CHOICES:
            raise ValueError(f"unknown rule {rule!r}; choose one of {', '.join(RULE_CHOICES)}")
        spec = RULE_CHOICES[rule]
        given = dict(params or {})
        allowed = {param.name: param for param in spec.params}
        unknown = sorted(set(given) - set(allowed))
        if unknown:
            names = ", ".join(allowed) or "none"
            raise ValueError(f"{rule} has no parameter {', '.join(unknown)} (it takes: {names})")
        values = {**spec.default_params(), **given}
        missing = [name for name in allowed if name not in values]
        if missing:
            raise ValueError(
                f"{rule} needs {' and '.join(missing)}, e.g. the input bounds of the model "
                "(ModelSpec.input_bounds)"
            )
        items = tuple((name, _checked_value(rule, allowed[name], values[name])) for name in allowed)
        object.__setattr__(self, "rule", rule)
        object.__setattr__(self, "_items", items)
        self.build()  # the rule class has the last word on its parameters

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError("RuleChoice is immutable")

    @property
    def params(self) -> dict[str, ParamValue]:
        """The parameter values (a fresh dict; per-channel values as tuples)."""
        return dict(self._items)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, RuleChoice):
            return NotImplemented
        return (self.rule, self._items) == (other.rule, other._items)

    def __hash__(self) -> int:
        return hash((self.rule, self._items))

    def __repr__(self) -> str:
        return f"RuleChoice({self.rule!r}, {self.params!r})"

    def __reduce__(self) -> tuple:
        return RuleChoice, (self.rule, self.params)

    def label(self) -> str:
        """Return a short text such as ``"Gamma(gamma=0.25)"`` for tables and captions."""
        shown = ", ".join(
            f"{name}={_format_value(value)}" for name, value in self._items if name != "stabilizer"
        )
        return f"{self.rule}({shown})" if shown else self.rule

    def to_dict(self) -> dict[str, Any]:
        """Return ``{"rule": ..., "params": {...}}`` with lists for per-channel values."""
        params = {name: list(v) if isinstance(v, tuple) else v for name, v in self._items}
        return {"rule": self.rule, "params": params}

    def build(self) -> Hook | None:
        """Return a new rule instance (None for ``"none"``).

        Raises
        ------
        ValueError
            If the rule class rejects the parameters.
        """
        rule_class = RULE_CHOICES[self.rule].rule_class
        if rule_class is None:
            return None
        kwargs = {name: _as_rule_argument(value) for name, value in self._items}
        try:
            return rule_class(**kwargs)
        except (TypeError, ValueError) as error:
            raise ValueError(f"invalid {self.rule} parameters: {error}") from None


def default_choice(
    rule: str, input_bounds: tuple[torch.Tensor, torch.Tensor] | None = None
) -> RuleChoice:
    """Return ``rule`` with default parameters; ZBox takes its bounds from ``input_bounds``.

    Parameters
    ----------
    rule : str
        A name in :data:`RULE_CHOICES`.
    input_bounds : (low, high), optional
        The lowest and highest input values, e.g. ``ModelSpec.input_bounds()``.
    """
    if rule == "ZBox" and input_bounds is not None:
        low, high = input_bounds
        return RuleChoice(rule, {"low": _plain_value(low), "high": _plain_value(high)})
    return RuleChoice(rule)


class RuleMap(Mapping[str, RuleChoice]):
    """An immutable assignment of layer names to rules, plus the canonizer the names refer to.

    Layer names are those of ``model.named_modules()`` after applying the canonizer set (see
    :func:`canonized_leaves`).  A layer with the rule ``"none"`` or without an entry gets no
    rule (the plain gradient passes through it).

    Parameters
    ----------
    rules : mapping of str to RuleChoice, optional
        The rule of each layer, in the model's order.
    canonizer : str, optional
        A name in ``canonizers.CANONIZERS``.
    preset : str, optional
        A label saying where the map came from, e.g. the preset composite's name.
    """

    __slots__ = ("_rules", "canonizer", "preset")

    def __init__(
        self,
        rules: Mapping[str, RuleChoice] | None = None,
        canonizer: str = "none",
        preset: str | None = None,
    ) -> None:
        if canonizer not in CANONIZERS:
            raise ValueError(
                f"unknown canonizer {canonizer!r}; choose one of {', '.join(CANONIZERS)}"
            )
        entries = dict(rules or {})
        for name, choice in entries.items():
            if not isinstance(choice, RuleChoice):
                raise TypeError(f"the rule of {name!r} must be a RuleChoice, not {choice!r}")
        object.__setattr__(self, "_rules", entries)
        object.__setattr__(self, "canonizer", canonizer)
        object.__setattr__(self, "preset", preset)

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError("RuleMap is immutable; use with_rule() for a changed copy")

    def __getitem__(self, name: str) -> RuleChoice:
        return self._rules[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._rules)

    def __len__(self) -> int:
        return len(self._rules)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, RuleMap):
            return NotImplemented
        return (self._rules, self.canonizer, self.preset) == (
            other._rules,
            other.canonizer,
            other.preset,
        )

    def __hash__(self) -> int:
        return hash(self.fingerprint())

    def __repr__(self) -> str:
        return f"RuleMap({len(self)} layers, canonizer={self.canonizer!r}, preset={self.preset!r})"

    def __reduce__(self) -> tuple:
        return RuleMap, (self._rules, self.canonizer, self.preset)

    @classmethod
    def from_preset(
        cls, model: nn.Module, preset: str, canonizer: str = "none", **preset_kwargs: Any
    ) -> RuleMap:
        """Return the rules a preset composite gives each leaf layer of ``model``.

        Parameters
        ----------
        model : nn.Module
            The model; it is canonized while looking and restored afterwards.
        preset : str
            A name in ``composites.COMPOSITES``, e.g. ``"epsilon_gamma_box"``.
        canonizer : str, optional
            A name in ``canonizers.CANONIZERS``.
        **preset_kwargs
            Arguments of the preset, e.g. ``low`` and ``high`` for ``"epsilon_gamma_box"``.
        """
        from .coverage import rule_coverage

        composite = _preset_composite(preset, canonizer, preset_kwargs)
        entries = {}
        for layer in rule_coverage(model, composite):
            rule = layer.rule or NO_RULE
            if rule not in RULE_CHOICES:
                raise ValueError(f"preset {preset!r} uses the rule {rule}, which maps cannot hold")
            editable = {p.name for p in RULE_CHOICES[rule].params}
            params = {k: _plain_value(v) for k, v in layer.params.items() if k in editable}
            entries[layer.name] = RuleChoice(rule, params)
        return cls(entries, canonizer, preset)

    @classmethod
    def recommended(
        cls,
        model: nn.Module,
        spec: Any,
        preset: str | None = None,
        canonizer: str | None = None,
        recommendation: Recommendation | None = None,
        **preset_kwargs: Any,
    ) -> RuleMap:
        """Return the rules that suit ``model``, decided from its structure.

        The canonizer set and preset come from :func:`~.recommend.recommend`; batch norms that
        cannot be merged get the Epsilon rule, and the ZBox bounds are the spec's input bounds as
        the first layer sees them (after an input transform).

        Parameters
        ----------
        model : nn.Module
            The model.
        spec : ModelSpec
            Gives ``input_bounds()``.
        preset : str, optional
            The preset to use instead of the recommended one.
        canonizer : str, optional
            The canonizer set to use instead of the recommended one.
        recommendation : Recommendation, optional
            What :func:`~.recommend.recommend` decided for ``model``, where the caller has it
            already; worked out here when None.
        **preset_kwargs
            Further arguments of the preset (e.g. ``epsilon``), over the recommended ones.
        """
        if recommendation is None:
            from .recommend import recommend

            recommendation = recommend(model)
        preset = preset or recommendation.preset
        kwargs = {}
        if preset in COMPOSITES and "low" in inspect.signature(COMPOSITES[preset]).parameters:
            kwargs["low"], kwargs["high"] = recommendation.first_layer_bounds(*spec.input_bounds())
        kwargs.update(preset_kwargs)
        canonizer = canonizer or recommendation.canonizer
        rulemap = cls.from_preset(model, preset, canonizer, **kwargs)
        affine = [name for name in recommendation.affine_batch_norms if name in rulemap]
        if not affine or not rulemap.is_lrp or canonizer != recommendation.canonizer:
            return rulemap
        epsilon = RuleChoice("Epsilon", {"epsilon": kwargs.get("epsilon", 1e-6)})
        entries = {**rulemap._rules, **dict.fromkeys(affine, epsilon)}
        return cls(entries, rulemap.canonizer, rulemap.preset)

    def with_rule(self, names: str | Iterable[str], choice: RuleChoice) -> RuleMap:
        """Return a copy in which the given layers have the rule ``choice``.

        The preset label gains ``" (edited)"`` so captions show that the map was changed.
        """
        names = [names] if isinstance(names, str) else list(names)
        entries = {**self._rules, **dict.fromkeys(names, choice)}
        if entries == self._rules:
            return self
        preset = self.preset
        if preset is not None and not preset.endswith(" (edited)"):
            preset = f"{preset} (edited)"
        return RuleMap(entries, self.canonizer, preset)

    def to_dict(self) -> dict[str, Any]:
        """Return the JSON-ready form (see :meth:`to_json`)."""
        return {
            "format": FORMAT,
            "version": FORMAT_VERSION,
            "canonizer": self.canonizer,
            "preset": self.preset,
            "layers": {name: choice.to_dict() for name, choice in self._rules.items()},
        }

    def to_json(self) -> str:
        """Return the map as indented JSON text."""
        return json.dumps(self.to_dict(), indent=2)

    @classmethod
    def from_dict(cls, data: Any) -> RuleMap:
        """Build a map from :meth:`to_dict`'s form, checking every entry.

        Raises
        ------
        ValueError
            Naming the layer and the problem, for anything that is not a valid rule map.
        """
        if not isinstance(data, dict) or not isinstance(data.get("layers"), dict):
            raise ValueError('a rule map is a JSON object with a "layers" object')
        if data.get("version", FORMAT_VERSION) != FORMAT_VERSION:
            raise ValueError(f"unsupported rule map version {data['version']!r}")
        entries = {}
        for name, entry in data["layers"].items():
            if not isinstance(entry, dict) or not isinstance(entry.get("rule"), str):
                raise ValueError(f'layer {name!r}: expected {{"rule": NAME, "params": {{...}}}}')
            params = entry.get("params", {})
            if not isinstance(params, dict):
                raise ValueError(f'layer {name!r}: "params" must be an object')
            try:
                entries[name] = RuleChoice(entry["rule"], params)
            except ValueError as error:
                raise ValueError(f"layer {name!r}: {error}") from None
        canonizer, preset = data.get("canonizer", "none"), data.get("preset")
        if not isinstance(canonizer, str):
            raise ValueError(f'"canonizer" must be the name of a canonizer set, not {canonizer!r}')
        return cls(entries, canonizer, None if preset is None else str(preset))

    @classmethod
    def from_json(cls, text: str) -> RuleMap:
        """Parse :meth:`to_json`'s text; bad JSON raises ValueError with the position."""
        try:
            data = json.loads(text)
        except json.JSONDecodeError as error:
            raise ValueError(
                f"not valid JSON (line {error.lineno}, column {error.colno}): {error.msg}"
            ) from None
        return cls.from_dict(data)

    def save(self, path: str | Path) -> Path:
        """Write the map as JSON to ``path`` and return the path."""
        path = Path(path)
        path.write_text(self.to_json() + "\n", encoding="utf-8")
        return path

    @classmethod
    def load(cls, path: str | Path) -> RuleMap:
        """Read a map written by :meth:`save`.

        Raises
        ------
        ValueError
            If the file cannot be read or is not a valid rule map; the message names the file.
        """
        path = Path(path)
        try:
            return cls.from_json(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError) as error:
            raise ValueError(f"cannot read the rule map {path}: {error}") from None
        except ValueError as error:
            raise ValueError(f"{path} is not a valid rule map: {error}") from None

    def mismatches(self, model: nn.Module) -> list[str]:
        """Return what does not fit between the map and ``model`` (empty if all is well).

        Lists layers of the map that the (canonized) model lacks, leaf layers of the model the
        map lacks, and rules on layers they cannot handle (e.g. Gamma on a ReLU).
        """
        leaves = dict(canonized_leaves(model, self.canonizer))
        problems = []
        for name, choice in self._rules.items():
            module = leaves.get(name)
            spec = RULE_CHOICES[choice.rule]
            if module is None:
                problems.append(f"{name!r} is in the rule map but not in the model")
            elif not spec.handles(module):
                problems.append(
                    f"{name!r} is a {type(module).__name__}, which the {choice.rule} rule cannot "
                    f"handle (it needs {spec.accepts_text})"
                )
        for name, module in leaves.items():
            if name not in self._rules:
                problems.append(f"{name!r} ({type(module).__name__}) has no rule in the rule map")
        return problems

    def to_composite(self) -> Composite:
        """Return a fresh composite that attaches these rules by name after canonizing."""
        groups: dict[RuleChoice, list[str]] = {}
        for name, choice in self._rules.items():
            if choice.rule != NO_RULE:
                groups.setdefault(choice, []).append(name)
        name_map = [(names, choice.build()) for choice, names in groups.items()]
        return NameMapComposite(name_map, canonizers=get_canonizers(self.canonizer))

    @property
    def is_lrp(self) -> bool:
        """Tell whether some layer has an LRP rule.

        Else the map only modifies the gradient (guided backpropagation, say).
        """
        return any(choice.rule in LRP_RULES for choice in self._rules.values())

    @property
    def largest_stabilizer(self) -> float:
        """The largest ``epsilon`` or ``stabilizer`` of any layer's rule (0.0 where none has one).

        Relevance a stabilizer takes reaches no input: at a layer whose output is ``z``, a
        stabilizer ``e`` keeps ``e / (|z| + e)`` of the relevance arriving there.
        """
        values = (
            value
            for choice in self._rules.values()
            for name, value in choice.params.items()
            if name in ("epsilon", "stabilizer")
        )
        return max(values, default=0.0)

    def fingerprint(self) -> str:
        """Return a stable hash of the rules and canonizer (the preset label is left out)."""
        content = {"canonizer": self.canonizer, "layers": self.to_dict()["layers"]}
        text = json.dumps(content, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()


def canonized_leaves(model: nn.Module, canonizer: str) -> list[tuple[str, nn.Module]]:
    """Return the named leaf layers of ``model`` as they are while the canonizer set is applied.

    These are the layers a rule map can name: e.g. the ResNet canonizer adds a ``Sum`` module per
    residual block.  The model is restored before returning, also on failure.

    Parameters
    ----------
    model : nn.Module
        The model.
    canonizer : str
        A name in ``canonizers.CANONIZERS``.
    """
    applied = []
    try:
        for instance in get_canonizers(canonizer):
            applied.extend(instance.apply(model))
        return [
            (name, module)
            for name, module in model.named_modules()
            if next(module.children(), None) is None
        ]
    finally:
        for instance in reversed(applied):
            instance.remove()


def _preset_composite(preset: str, canonizer: str, kwargs: dict[str, Any]) -> Composite:
    if preset not in COMPOSITES:
        raise ValueError(f"unknown preset {preset!r}; choose one of {', '.join(COMPOSITES)}")
    try:
        return COMPOSITES[preset](canonizers=get_canonizers(canonizer), **kwargs)
    except TypeError as error:
        raise ValueError(f"preset {preset!r}: {error}") from None


def _checked_value(rule: str, spec: ParamSpec, value: Any) -> ParamValue:
    if spec.per_channel and isinstance(value, (list, tuple)):
        if not value:
            raise ValueError(f"{rule} {spec.name} must not be an empty list")
        return tuple(_checked_number(rule, spec, item) for item in value)
    return _checked_number(rule, spec, value)


def _checked_number(rule: str, spec: ParamSpec, value: Any) -> float:
    kind = "a number or a list of numbers" if spec.per_channel else "a number"
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{rule} {spec.name} must be {kind}, not {value!r}")
    try:
        number = float(value)
    except OverflowError:  # an integer beyond the float range, as JSON allows
        number = math.inf if value > 0 else -math.inf
    if not math.isfinite(number) or number < spec.minimum:
        bound = f" >= {spec.minimum:g}" if math.isfinite(spec.minimum) else ""
        raise ValueError(f"{rule} {spec.name} must be a finite number{bound}, not {number}")
    return number


def _plain_value(value: Any) -> Any:
    """Turn a tensor parameter into a number or a per-channel list of numbers."""
    if not isinstance(value, torch.Tensor):
        return value
    flat = value.detach().cpu().reshape(-1)
    if flat.numel() == 1:
        return float(flat[0])
    if value.ndim > 1 and value.numel() != value.shape[1]:
        raise ValueError(f"cannot store a parameter of shape {tuple(value.shape)} in a rule map")
    return [float(item) for item in flat]


def _as_rule_argument(value: ParamValue) -> float | torch.Tensor:
    """Give per-channel values the shape (1, C, 1, 1) that broadcasts over image batches."""
    if isinstance(value, tuple):
        return torch.tensor(value, dtype=torch.float32).view(1, -1, 1, 1)
    return value


def _format_value(value: ParamValue) -> str:
    if isinstance(value, tuple):
        return "[" + ", ".join(f"{item:.3g}" for item in value) + "]"
    return f"{value:g}"
