"""The model's layers as a tree with the rule of each layer, kept in an item model made by Qt.

The rows are the layers a rule can be given (the leaves after canonizing, from
``rulemap.canonized_leaves``), grouped under the modules that contain them. Columns: name, type,
number of parameters, rule, rule parameters. Editing the rule of a group gives the rule to every
layer in it. The tree edits the session's rule map (as undoable steps) and nothing else; layers
without a rule or with a questionable one are marked, with the reason as a tooltip (the reasons,
``coverage.rule_coverage``'s, are computed in the background; see the session's coverage). So are
the layers and groups in which the audit of the relevance path found an operation that no rule
redistributes (see the session's audit); a finding in the model's own forward has no row.

The cells are written once per change into a ``QStandardItemModel`` that Qt made (see
:func:`.native.native_item_model`), so a view paints and lays out the tree without calling
Python: while the worker runs LRP, every call into Python from the GUI thread may wait for the
interpreter lock, and a tree answered from Python waited hundreds of times per repaint.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from PySide6.QtCore import QModelIndex, QObject, QPersistentModelIndex, Qt, Signal
from PySide6.QtGui import QBrush, QColor, QStandardItemModel
from PySide6.QtWidgets import QApplication, QStyle

from lrp_desktop_core.parts import describe_part
from lrp_desktop_core.rulemap import NO_RULE, RULE_CHOICES, RuleChoice

from .native import native_item_model
from .reporter import Reporter
from .rule_editing import apply_rule, choice_for
from .session import Session

COLUMNS = ("Layer", "Type", "Parameters", "Rule", "Rule parameters")
NAME, TYPE, PARAMS, RULE, RULE_PARAMS = range(len(COLUMNS))
MIXED = "(mixed)"
NAME_ROLE = Qt.ItemDataRole.UserRole
WARN_BACKGROUND = QColor(253, 226, 225)
NO_RULE_FOREGROUND = QColor(128, 128, 128)
_PAIR = re.compile(r"\s*(\w+)\s*=\s*(\[[^\]]*\]|[^,;\s\]]+)\s*[,;]?")

Index = QModelIndex | QPersistentModelIndex
_FIXED = Qt.ItemFlag.ItemIsEnabled | Qt.ItemFlag.ItemIsSelectable
_EDITABLE = _FIXED | Qt.ItemFlag.ItemIsEditable


class _Looks(NamedTuple):
    """What the changing cells of a row show, kept to tell what a change changed."""

    summary: tuple[str, str]
    audited: bool
    rule_tooltip: str
    choice: RuleChoice | None
    params: str


@dataclass(eq=False)
class Node:
    """A row of the tree: a layer that takes a rule, or a module grouping such layers."""

    name: str
    label: str
    module_type: str
    parent: Node | None = None
    module: Any = None
    n_params: int = 0
    children: list[Node] = field(default_factory=list)

    @property
    def is_layer(self) -> bool:
        """True for a layer that takes a rule (a leaf)."""
        return self.module is not None

    @property
    def row(self) -> int:
        """Position among the parent's children."""
        return 0 if self.parent is None else self.parent.children.index(self)

    def layers(self) -> list[Node]:
        """Return this node if it is a layer, else every layer below it, in order."""
        if self.is_layer:
            return [self]
        return [layer for child in self.children for layer in child.layers()]


def build_tree(skeleton: Any, leaves: list[tuple[str, Any]]) -> Node:
    """Group named leaf layers under the modules of ``skeleton`` that contain them."""
    root = Node("", "", type(skeleton).__name__)
    groups: dict[str, Node] = {"": root}
    for name, module in leaves:
        parts = name.split(".") if name else [""]
        parent = root
        for depth in range(1, len(parts)):
            path = ".".join(parts[:depth])
            if path not in groups:
                try:
                    group_type = type(skeleton.get_submodule(path)).__name__
                except AttributeError:  # a container only the canonizer adds
                    group_type = "Module"
                groups[path] = Node(path, parts[depth - 1], group_type, parent)
                parent.children.append(groups[path])
            parent = groups[path]
        n_params = sum(p.numel() for p in module.parameters(recurse=False))
        parent.children.append(
            Node(name, parts[-1] or "(model)", type(module).__name__, parent, module, n_params)
        )
    _sum_params(root)
    return root


def _sum_params(node: Node) -> int:
    if not node.is_layer:
        node.n_params = sum(_sum_params(child) for child in node.children)
    return node.n_params


def format_params(choice: RuleChoice | None) -> str:
    """Return a choice's parameters as ``name=value`` pairs (the editable text)."""
    if choice is None:
        return ""
    parts = []
    for name, value in choice.params.items():
        shown = (
            "[" + ", ".join(f"{v:g}" for v in value) + "]"
            if isinstance(value, tuple)
            else f"{value:g}"
        )
        parts.append(f"{name}={shown}")
    return ", ".join(parts)


def parse_params(text: str) -> dict[str, Any]:
    """Read ``name=value`` pairs (a value may be a ``[a, b, c]`` list) into a dict.

    Raises
    ------
    ValueError
        Naming the part that could not be read.
    """
    params: dict[str, Any] = {}
    position = 0
    text = text.strip()
    while position < len(text):
        match = _PAIR.match(text, position)
        if match is None:
            raise ValueError(
                f"cannot read {text[position:]!r}; write name=value pairs such as "
                "gamma=0.25, epsilon=1e-6"
            )
        name, value = match.groups()
        try:
            params[name] = json.loads(value) if value.startswith("[") else float(value)
        except ValueError:
            raise ValueError(f"{name}: {value!r} is not a number or a list of numbers") from None
        position = match.end()
    return params


class RuleTreeModel(QObject):
    """The layers of the session's model with their rules (see the module docstring).

    Views show :attr:`items`; edits come in through :meth:`edit`.

    Parameters
    ----------
    session
        The session whose model and rule map are shown and edited.
    reporter
        Where rejected edits are explained.
    """

    #: The rows were made anew (a new model or canonizer): views open and size them again.
    rebuilt = Signal()

    def __init__(self, session: Session, reporter: Reporter, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.session = session
        self.reporter = reporter
        self.items: QStandardItemModel = native_item_model(self)
        self.root = Node("", "", "")
        self.canonizer: str | None = None
        self.nodes: dict[str, Node] = {}
        self._summary: dict[str, tuple[str, str]] = {}
        self._shown: dict[str, _Looks] = {}
        self._audit_notes: dict[str, list[str]] = {}
        self._warning_icon = QApplication.style().standardIcon(
            QStyle.StandardPixmap.SP_MessageBoxWarning
        )
        session.model_changed.connect(self.rebuild)
        session.rulemap_changed.connect(self._on_rulemap_changed)
        session.coverage_changed.connect(self._show_changes)
        session.audit_changed.connect(self._on_audit_changed)
        self.rebuild()

    # -- building -----------------------------------------------------------------------
    def rebuild(self) -> None:
        """Rebuild the rows from the model's structure and the rule map's canonizer."""
        session = self.session
        if session.model is None or session.rulemap is None:
            self.root, self.canonizer = Node("", "", ""), None
        else:
            self.canonizer = session.rulemap.canonizer
            leaves = session.model.canonized_leaves(self.canonizer)
            self.root = build_tree(session.model.skeleton, leaves)
        self.nodes = {}
        self._index_nodes(self.root)
        self._audit_notes = self._place_findings()
        self._summary, self._shown = {}, {}
        self._summarise(self.root)
        self.items.clear()
        self.items.setHorizontalHeaderLabels(COLUMNS)
        self._add_rows(self.root, QModelIndex())
        self.rebuilt.emit()

    def _index_nodes(self, node: Node) -> None:
        for child in node.children:
            self.nodes[child.name] = child
            self._index_nodes(child)

    def _add_rows(self, node: Node, parent: QModelIndex) -> None:
        """Add the rows of ``node``'s children under ``parent``, with every cell filled."""
        if not node.children:
            return
        items = self.items
        items.insertRows(0, len(node.children), parent)
        if items.columnCount(parent) < len(COLUMNS):
            missing = len(COLUMNS) - items.columnCount(parent)
            items.insertColumns(items.columnCount(parent), missing, parent)
        for row, child in enumerate(node.children):
            name_cell = items.index(row, NAME, parent)
            items.setItemData(
                name_cell, {Qt.ItemDataRole.DisplayRole: child.label, NAME_ROLE: child.name}
            )
            items.setData(name_cell.siblingAtColumn(TYPE), child.module_type)
            items.setData(name_cell.siblingAtColumn(PARAMS), f"{child.n_params:,}")
            for column in (NAME, TYPE, PARAMS, RULE):  # the parameter cell: in _write
                self._set_editable(name_cell.siblingAtColumn(column), column == RULE)
            self._write(child, name_cell, self._looks(child))
            self._add_rows(child, name_cell)

    def _on_rulemap_changed(self) -> None:
        rulemap = self.session.rulemap
        if rulemap is None or rulemap.canonizer != self.canonizer:
            self.rebuild()
            return
        self._show_changes()

    def _on_audit_changed(self) -> None:
        notes = self._place_findings()
        if notes != self._audit_notes:
            self._audit_notes = notes
            self._show_changes()

    def _show_changes(self) -> None:
        """Rewrite the cells of the rows whose rule, parameters or warnings changed."""
        self._summarise(self.root)
        for name, node in self.nodes.items():
            looks = self._looks(node)
            if self._shown.get(name) != looks:
                self._write(node, self.index_of_layer(name), looks)

    def _place_findings(self) -> dict[str, list[str]]:
        """Return the audit's messages by the row they mark.

        That is the module named, else the nearest row above it (a module without rule-taking
        layers has no row of its own).
        """
        notes: dict[str, list[str]] = {}
        for finding in self.session.audit:
            name = finding.module
            while name and name not in self.nodes:
                name = name.rpartition(".")[0]
            if name:
                notes.setdefault(name, []).append(finding.message)
        return notes

    # -- rows and cells -----------------------------------------------------------------
    def node(self, index: Index) -> Node:
        """Return the node of a cell of :attr:`items` (the invisible root for an invalid one)."""
        if not index.isValid():
            return self.root
        return self.nodes[index.siblingAtColumn(NAME).data(NAME_ROLE)]

    def index_of_layer(self, name: str, column: int = NAME) -> QModelIndex:
        """Return the cell of :attr:`items` in ``column`` of the row named ``name``."""
        node = self.nodes[name]
        parent = (
            QModelIndex()
            if node.parent in (None, self.root)
            else self.index_of_layer(node.parent.name)
        )
        return self.items.index(node.row, column, parent)

    def rule_name(self, node: Node) -> str:
        """Return the rule of a layer, or the common rule of a group's layers (or "mixed")."""
        return self._summary[node.name][0]

    def warning(self, node: Node) -> str:
        """Return why a layer (or a layer in a group) deserves attention, or ""."""
        return self._summary[node.name][1]

    def _summarise(self, node: Node) -> tuple[set[str], list[str]]:
        """Store the rule and warnings of ``node`` and everything below it."""
        if node.is_layer:
            choice = self._choice(node)
            rules = {choice.rule if choice is not None else NO_RULE}
            reasons = self._layer_warnings(node, choice)
        else:
            rules, reasons = set(), []
            for child in node.children:
                child_rules, child_reasons = self._summarise(child)
                rules |= child_rules
                reasons += child_reasons
        reasons = self._audit_notes.get(node.name, []) + reasons
        name = next(iter(rules)) if len(rules) == 1 else MIXED
        self._summary[node.name] = (name, "\n".join(reasons))
        return rules, reasons

    def _layer_warnings(self, layer: Node, choice: RuleChoice | None) -> list[str]:
        entry = self.session.coverage.get(layer.name)
        if entry is not None and entry.warn:
            return [f"{layer.name}: {entry.reason}"]
        if choice is not None and not RULE_CHOICES[choice.rule].handles(layer.module):
            spec = RULE_CHOICES[choice.rule]
            return [
                f"{layer.name}: the {choice.rule} rule cannot handle a {layer.module_type} "
                f"(it needs {spec.accepts_text})"
            ]
        return []

    def _choice(self, node: Node) -> RuleChoice | None:
        rulemap = self.session.rulemap
        return rulemap.get(node.name) if rulemap is not None else None

    def _looks(self, node: Node) -> _Looks:
        """Return what the changing cells of ``node``'s row show."""
        choice = self._choice(node) if node.is_layer else None
        return _Looks(
            self._summary[node.name],
            node.name in self._audit_notes,
            self._rule_tooltip(node),
            choice,
            format_params(choice),
        )

    def _write(self, node: Node, name_cell: QModelIndex, looks: _Looks) -> None:
        """Write the cells that follow the rules, the coverage and the audit of ``node``'s row.

        ``looks`` is what they show (:meth:`_looks`), kept to tell the next change.
        """
        warning, rule = self.warning(node), self.rule_name(node)
        marked = bool(warning) and (node.is_layer or looks.audited)
        choice = looks.choice
        rule_cell = name_cell.siblingAtColumn(RULE)
        params_cell = name_cell.siblingAtColumn(RULE_PARAMS)
        items = self.items
        items.setData(name_cell, self._name_tooltip(node), Qt.ItemDataRole.ToolTipRole)
        items.setItemData(
            rule_cell,
            {
                Qt.ItemDataRole.DisplayRole: rule,
                Qt.ItemDataRole.ToolTipRole: looks.rule_tooltip,
                Qt.ItemDataRole.DecorationRole: self._warning_icon if warning else None,
                Qt.ItemDataRole.BackgroundRole: QBrush(WARN_BACKGROUND) if marked else None,
                Qt.ItemDataRole.ForegroundRole: QBrush(NO_RULE_FOREGROUND)
                if rule == NO_RULE
                else None,
            },
        )
        items.setItemData(
            params_cell,
            {
                Qt.ItemDataRole.DisplayRole: looks.params,
                Qt.ItemDataRole.ToolTipRole: self._params_tooltip(choice),
            },
        )
        self._set_editable(
            params_cell, choice is not None and bool(RULE_CHOICES[choice.rule].params)
        )
        self._shown[node.name] = looks

    def _set_editable(self, cell: QModelIndex, editable: bool) -> None:
        self.items.itemFromIndex(cell).setFlags(_EDITABLE if editable else _FIXED)

    def _name_tooltip(self, node: Node) -> str:
        added = describe_part(node.name) if node.is_layer else None
        parts = (
            node.name or "(model)",
            added and f"Added by the canonizer. {added}",
            self.warning(node),
        )
        return "\n\n".join(part for part in parts if part)

    def _rule_tooltip(self, node: Node) -> str:
        parts = [self.warning(node)]
        entry = self.session.coverage.get(node.name)
        if node.is_layer and entry is not None and not entry.warn:
            parts.append(entry.reason)
        rule = self.rule_name(node)
        if rule in RULE_CHOICES:
            parts.append(f"{rule}: {RULE_CHOICES[rule].description}")
        if not node.is_layer:
            parts.append("Choosing a rule here gives it to every layer in this group.")
        return "\n\n".join(part for part in parts if part)

    @staticmethod
    def _params_tooltip(choice: RuleChoice | None) -> str:
        if choice is None:
            return ""
        return "\n".join(
            f"{param.name}: {param.description}" for param in RULE_CHOICES[choice.rule].params
        )

    # -- editing ------------------------------------------------------------------------
    def edit(self, index: Index, value: Any) -> bool:
        """Set a rule (a rule name or a ``RuleChoice``) or a layer's rule parameters.

        ``index`` is a rule or parameter cell of :attr:`items`. The change becomes one undoable
        step of the session's rule map, which the cells then show. A rule the layer cannot
        handle, or parameters the rule rejects, are refused with a message. Returns whether the
        rule map changed.
        """
        if not index.isValid():
            return False
        node = self.node(index)
        if index.column() == RULE:
            return self._set_rule(node, value)
        if index.column() == RULE_PARAMS and node.is_layer:
            return self._set_params(node, value)
        return False

    def _set_rule(self, node: Node, value: Any) -> bool:
        if isinstance(value, RuleChoice):
            choice = value
        elif value in RULE_CHOICES:
            choice = choice_for(self.session, value, self._choice(node) if node.is_layer else None)
        else:
            self.reporter.error(
                "Unknown rule",
                f"{value!r} is not a rule.",
                f"Choose one of {', '.join(RULE_CHOICES)}.",
            )
            return False
        names = [layer.name for layer in node.layers()]
        return bool(apply_rule(self.session, names, choice, self.reporter))

    def _set_params(self, node: Node, value: Any) -> bool:
        current = self._choice(node)
        if current is None:
            return False
        try:
            params = value if isinstance(value, dict) else parse_params(str(value))
            choice = RuleChoice(current.rule, {**current.params, **params})
        except ValueError as error:
            self.reporter.error(
                f"Parameters of {node.name} not changed",
                str(error),
                "Write name=value pairs, e.g. gamma=0.25.",
            )
            return False
        return bool(apply_rule(self.session, [node.name], choice, self.reporter))
