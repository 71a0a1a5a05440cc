"""Operations on the session's rule map: presets, canonizers, single edits, JSON files.

Every change goes through :func:`~.undo.edit_rulemap`, so it can be undone. Rule maps are built on
the model's skeleton (its structure on the "meta" device), never on the real model, which only the
worker thread touches.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from lrp_desktop_core.rulemap import (
    RULE_CHOICES,
    RuleChoice,
    RuleMap,
    default_choice,
)

from .model_info import ModelInfo
from .reporter import Reporter
from .session import Session
from .undo import edit_rulemap

EDITED_SUFFIX = " (edited)"
#: The cause of the warning about layers a rule did not fit (see ``Reporter.resolve``).
UNFIT_LAYERS = "unfit layers"


def preset_rulemap(info: ModelInfo, preset: str, canonizer: str | None = None) -> RuleMap:
    """Return what ``preset`` gives every layer of the model (ZBox bounds from its input range).

    Parameters
    ----------
    canonizer
        The canonizer set; the model's recommended one when None.
    """
    return RuleMap.recommended(
        info.skeleton, info.spec, preset, canonizer, recommendation=info.recommendation
    )


def base_preset(rulemap: RuleMap | None, info: ModelInfo) -> str:
    """Return the preset a rule map came from (without the "edited" mark), else the model's."""
    if rulemap is None or not rulemap.preset:
        return info.recommendation.preset
    return rulemap.preset.removesuffix(EDITED_SUFFIX)


def current_canonizer(session: Session) -> str:
    """Return the canonizer set of the session's rule map, else the model's recommended one."""
    if session.rulemap is not None:
        return session.rulemap.canonizer
    return _model(session).recommendation.canonizer


def apply_preset(session: Session, preset: str) -> None:
    """Fill every layer with ``preset``'s rules, keeping the current canonizer.

    This builds the rule map in the calling thread; the viewer builds it on its structure
    thread instead (``Controller.apply_preset``) and hands it to :func:`use_preset`.
    """
    use_preset(session, preset_rulemap(_model(session), preset, current_canonizer(session)))


def use_preset(session: Session, rulemap: RuleMap) -> bool:
    """Make a preset's ready-made rule map the session's, as one undoable edit."""
    return edit_rulemap(session, rulemap, f"apply preset {rulemap.preset}")


def change_canonizer(session: Session, canonizer: str) -> None:
    """Switch the canonizer set, keeping each layer's rule where the layer still exists.

    Layers that only exist with the new canonizer (a ResNet's sums, say) get the rule the
    rule map's preset gives them.
    """
    info = _model(session)
    old = session.rulemap
    if old is not None and old.canonizer == canonizer:
        return
    fresh = preset_rulemap(info, base_preset(old, info), canonizer)
    kept = {name: old[name] for name in fresh if old is not None and name in old}
    entries = {name: kept.get(name, fresh[name]) for name in fresh}
    preset = old.preset if old is not None else fresh.preset
    edit_rulemap(session, RuleMap(entries, canonizer, preset), f"use canonizer {canonizer}")


def choice_for(session: Session, rule: str, current: RuleChoice | None = None) -> RuleChoice:
    """Return ``rule`` with the parameters of ``current`` if it is the same rule, else defaults.

    ZBox's bounds default to the model's input range.
    """
    if current is not None and current.rule == rule:
        return current
    return default_choice(rule, _model(session).spec.input_bounds())


def unfit_layers(session: Session, names: Iterable[str], rule: str) -> list[str]:
    """Return which of ``names`` the rule cannot handle, with the layer's type."""
    spec = RULE_CHOICES[rule]
    leaves = layer_modules(session)
    return [
        f"{name} ({type(leaves[name]).__name__})"
        for name in names
        if name in leaves and not spec.handles(leaves[name])
    ]


def layer_modules(session: Session) -> dict:
    """Return the skeleton's rule-taking layers by name, for the current canonizer."""
    info = _model(session)
    return dict(info.canonized_leaves(session.rulemap.canonizer))


def apply_rule(
    session: Session, names: Iterable[str], choice: RuleChoice, reporter: Reporter
) -> list[str]:
    """Give the layers ``names`` the rule ``choice`` as one undoable edit.

    Layers the rule cannot handle are left alone and reported. Returns the layers changed.
    """
    names = list(names)
    unfit = unfit_layers(session, names, choice.rule)
    reporter.resolve(UNFIT_LAYERS)  # this edit's warning, if any, replaces the last one's
    if unfit:
        reporter.warning(
            f"{choice.rule} was not given to {len(unfit)} layer(s)",
            f"{choice.rule} needs {RULE_CHOICES[choice.rule].accepts_text}; these "
            f"layers are not: {', '.join(unfit)}",
            "Select layers of a suitable type.",
            cause=UNFIT_LAYERS,
        )
        skipped = {item.split(" (")[0] for item in unfit}
        names = [name for name in names if name not in skipped]
    if names:
        target = names[0] if len(names) == 1 else f"{len(names)} layers"
        edit_rulemap(
            session, session.rulemap.with_rule(names, choice), f"set {target} to {choice.label()}"
        )
    return names


def save_rules(session: Session, path: Path, reporter: Reporter) -> bool:
    """Write the session's rule map as JSON; report the outcome."""
    if session.rulemap is None:
        reporter.error("No rules to save", "No model with a rule map is loaded.")
        return False
    try:
        session.rulemap.save(path)
    except OSError as error:
        reporter.error(
            "Could not save the rules", f"{path}: {error}", "Choose a folder you can write to."
        )
        return False
    reporter.info("Saved the rules", str(path))
    return True


def load_rules(session: Session, path: Path, reporter: Reporter) -> bool:
    """Read a rule map from JSON and use it if it fits the model; report what does not fit."""
    info = session.model
    if info is None:
        reporter.error("No model to give rules to", "Load a model first.")
        return False
    try:
        rulemap = RuleMap.load(path)
        problems = rulemap.mismatches(info.skeleton)
    except ValueError as error:
        reporter.error(
            "Could not load the rules",
            str(error),
            "Choose a JSON file saved with File > Save rules.",
        )
        return False
    if problems:
        reporter.error(
            f"The rules in {Path(path).name} do not fit {info.spec.title}",
            "These layers do not match:\n" + "\n".join(problems),
            "Load rules saved for this model, or fix the listed layers.",
        )
        return False
    edit_rulemap(session, rulemap, f"load rules from {Path(path).name}")
    reporter.info("Loaded the rules", str(path))
    return True


def _model(session: Session) -> ModelInfo:
    if session.model is None:
        raise ValueError("no model is loaded")
    return session.model
