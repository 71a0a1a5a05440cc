"""The model's layers as a tree with the rule of each layer: a :class:`QAbstractItemModel`.

The rows are the layers a rule can be given (the leaves after canonizing, from
``rulemap.canonized_leaves``), grouped under the modules that contain them. Columns: name, type,
number of parameters, rule, rule parameters. Editing the rule of a group gives the rule to every
layer in it. The tree edits the session's rule map (as undoable steps) and nothing else; layers
without a rule or with a questionable one are marked, with the reason as a tooltip (the reasons,
``coverage.rule_coverage``'s, are computed in the background; see the session's coverage). So are
the layers and groups in which the audit of the relevance path found an operation that no rule
redistributes (see the session's audit); a finding in the model's own forward has no row.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

from PySide6.QtCore import QAbstractItemModel, QModelIndex, QObject, QPersistentModelIndex, Qt
from PySide6.QtGui import QBrush, QColor
from PySide6.QtWidgets import QApplication, QStyle

from lrp_desktop_core.parts import describe_part
from lrp_desktop_core.rulemap import NO_RULE, RULE_CHOICES, RuleChoice

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
_INVALID = QModelIndex()


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


class RuleTreeModel(QAbstractItemModel):
    """The layers of the session's model with their rules (see the module docstring).

    Parameters
    ----------
    session
        The session whose model and rule map are shown and edited.
    reporter
        Where rejected edits are explained.
    """

    def __init__(self, session: Session, reporter: Reporter, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.session = session
        self.reporter = reporter
        self.root = Node("", "", "")
        self.canonizer: str | None = None
        self.nodes: dict[str, Node] = {}
        self._summary: dict[str, tuple[str, str]] = {}
        self._audit_notes: dict[str, list[str]] = {}
        self._warning_icon = QApplication.style().standardIcon(
            QStyle.StandardPixmap.SP_MessageBoxWarning
        )
        session.model_changed.connect(self.rebuild)
        session.rulemap_changed.connect(self._on_rulemap_changed)
        session.coverage_changed.connect(self._on_coverage_changed)
        session.audit_changed.connect(self._on_audit_changed)
        self.rebuild()

    # -- building -----------------------------------------------------------------------
    def rebuild(self) -> None:
        """Rebuild the rows from the model's structure and the rule map's canonizer."""
        self.beginResetModel()
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
        self._summary = {}
        self._summarise(self.root)
        self.endResetModel()

    def _index_nodes(self, node: Node) -> None:
        for child in node.children:
            self.nodes[child.name] = child
            self._index_nodes(child)

    def _on_rulemap_changed(self) -> None:
        rulemap = self.session.rulemap
        if rulemap is None or rulemap.canonizer != self.canonizer:
            self.rebuild()
            return
        self._on_coverage_changed()

    def _on_coverage_changed(self) -> None:
        """Show new rules and warnings: the rows stay, only the cells that changed are redrawn.

        The rule and parameter cells of each parent's changed rows are announced as one range.
        Nothing is announced when nothing shown changed (a coverage that confirms the rules),
        and the view never lays the tree out again: it answers a ``layoutChanged`` by asking
        every open row for its index, parent and children, each a call into Python that waits
        for the interpreter while the worker runs.
        """
        before = {
            name: (*self._summary.get(name, ()), self._params_text(node))
            for name, node in self.nodes.items()
        }
        self._summarise(self.root)
        changed: dict[int, tuple[Node, list[int]]] = {}
        for name, node in self.nodes.items():
            if before[name] != (*self._summary[name], self._params_text(node)):
                parent = node.parent or self.root
                changed.setdefault(id(parent), (parent, []))[1].append(node.row)
        for parent, rows in changed.values():
            parent_index = (
                QModelIndex() if parent is self.root else self.createIndex(parent.row, 0, parent)
            )
            self.dataChanged.emit(
                self.index(min(rows), RULE, parent_index),
                self.index(max(rows), RULE_PARAMS, parent_index),
            )

    def _params_text(self, node: Node) -> str:
        return format_params(self._choice(node)) if node.is_layer else ""

    def _on_audit_changed(self) -> None:
        notes = self._place_findings()
        if notes != self._audit_notes:
            self._audit_notes = notes
            self._on_coverage_changed()

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

    def node(self, index: Index) -> Node:
        """Return the node of ``index`` (the invisible root for an invalid index)."""
        return index.internalPointer() if index.isValid() else self.root

    def index_of_layer(self, name: str, column: int = NAME) -> QModelIndex:
        """Return the index of the row named ``name`` (a layer or a group)."""
        node = self.nodes[name]
        return self.createIndex(node.row, column, node)

    # -- structure ----------------------------------------------------------------------
    def index(self, row: int, column: int, parent: Index = _INVALID) -> QModelIndex:
        """Return the index of a cell under ``parent``."""
        node = self.node(parent)
        if not (0 <= row < len(node.children) and 0 <= column < len(COLUMNS)):
            return QModelIndex()
        return self.createIndex(row, column, node.children[row])

    def parent(self, index: Index = _INVALID) -> QModelIndex:  # type: ignore[override]
        """Return the index of the row containing ``index``."""
        if not index.isValid():
            return QModelIndex()
        parent = self.node(index).parent
        if parent is None or parent is self.root:
            return QModelIndex()
        return self.createIndex(parent.row, 0, parent)

    def rowCount(self, parent: Index = _INVALID) -> int:
        """Return the number of rows under ``parent``."""
        if parent.isValid() and parent.column() != 0:
            return 0
        return len(self.node(parent).children)

    def columnCount(self, parent: Index = _INVALID) -> int:
        """Return the number of columns."""
        return len(COLUMNS)

    def headerData(
        self,
        section: int,
        orientation: Qt.Orientation,
        role: int = Qt.ItemDataRole.DisplayRole,
    ) -> Any:
        """Return the column titles."""
        if (
            orientation == Qt.Orientation.Horizontal
            and role == Qt.ItemDataRole.DisplayRole
            and 0 <= section < len(COLUMNS)
        ):
            return COLUMNS[section]
        return None

    def flags(self, index: Index) -> Qt.ItemFlag:
        """Rule cells are editable; parameter cells of layers whose rule has parameters too."""
        if not index.isValid():
            return Qt.ItemFlag.NoItemFlags
        flags = Qt.ItemFlag.ItemIsEnabled | Qt.ItemFlag.ItemIsSelectable
        node = self.node(index)
        if index.column() == RULE or (
            index.column() == RULE_PARAMS
            and node.is_layer
            and self._choice(node) is not None
            and RULE_CHOICES[self._choice(node).rule].params
        ):
            flags |= Qt.ItemFlag.ItemIsEditable
        return flags

    # -- content ------------------------------------------------------------------------
    def _choice(self, node: Node) -> RuleChoice | None:
        rulemap = self.session.rulemap
        return rulemap.get(node.name) if rulemap is not None else None

    def rule_name(self, node: Node) -> str:
        """Return the rule of a layer, or the common rule of a group's layers (or "mixed")."""
        return self._summary[node.name][0]

    def warning(self, node: Node) -> str:
        """Return why a layer (or a layer in a group) deserves attention, or ""."""
        return self._summary[node.name][1]

    def _summarise(self, node: Node) -> tuple[set[str], list[str]]:
        """Store the rule and warnings of ``node`` and everything below it.

        Done once per edit, so that painting the tree looks them up.
        """
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

    def data(self, index: Index, role: int = Qt.ItemDataRole.DisplayRole) -> Any:
        """Return the content of a cell for ``role``."""
        if not index.isValid():
            return None
        node = self.node(index)
        column = index.column()
        if role in (Qt.ItemDataRole.DisplayRole, Qt.ItemDataRole.EditRole):
            return self._text(node, column)
        if role == Qt.ItemDataRole.ToolTipRole:
            return self._tooltip(node, column)
        if role == NAME_ROLE:
            return node.name
        if column != RULE:
            return None
        if role == Qt.ItemDataRole.DecorationRole and self.warning(node):
            return self._warning_icon
        if (
            role == Qt.ItemDataRole.BackgroundRole
            and self.warning(node)
            and (node.is_layer or node.name in self._audit_notes)
        ):
            return QBrush(WARN_BACKGROUND)
        if role == Qt.ItemDataRole.ForegroundRole and self.rule_name(node) == NO_RULE:
            return QBrush(NO_RULE_FOREGROUND)
        return None

    def _text(self, node: Node, column: int) -> str:
        if column == NAME:
            return node.label
        if column == TYPE:
            return node.module_type
        if column == PARAMS:
            return f"{node.n_params:,}"
        if column == RULE:
            return self.rule_name(node)
        return self._params_text(node)

    def _tooltip(self, node: Node, column: int) -> str:
        if column == NAME:
            added = describe_part(node.name) if node.is_layer else None
            parts = (
                node.name or "(model)",
                added and f"Added by the canonizer. {added}",
                self.warning(node),
            )
            return "\n\n".join(part for part in parts if part)
        if column == RULE:
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
        if column == RULE_PARAMS and node.is_layer:
            choice = self._choice(node)
            if choice is not None:
                return "\n".join(
                    f"{param.name}: {param.description}"
                    for param in RULE_CHOICES[choice.rule].params
                )
        return ""

    # -- editing ------------------------------------------------------------------------
    def setData(
        self,
        index: Index,
        value: Any,
        role: int = Qt.ItemDataRole.EditRole,
    ) -> bool:
        """Set a rule (a rule name or a ``RuleChoice``) or a layer's rule parameters.

        The change becomes one undoable step of the session's rule map. A rule the layer cannot
        handle, or parameters the rule rejects, are refused with a message.
        """
        if role != Qt.ItemDataRole.EditRole or not index.isValid():
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
