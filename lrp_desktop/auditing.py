"""The audit of the relevance path in the viewer: asked for on each new rule map, told once.

Relevance is only redistributed where a rule runs; an operation outside every module with a rule
scales it instead, and the heatmap is silently wrong there. The :class:`Auditor` has the worker
audit each new rule map of the model (before the explanation that follows it, which reuses the
engine's cached answer) and stores the findings in the session, where the rule tree reads them.
Whenever what is wrong changes, it reports one warning (with every finding and the parts of the
model no rule explains as details); a clean audit says nothing.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from PySide6.QtCore import QObject

from .reporter import Level, Message, Reporter
from .requests import AuditRequest, AuditResult
from .session import Session
from .worker import Failure, WorkerHost

AUDIT_TITLE = "The heatmap may be wrong"


def audit_message(recommendation: Any, findings: Sequence[Any]) -> Message | None:
    """Return the warning about a model's unsupported parts and audit findings, None if clean.

    Parameters
    ----------
    recommendation
        The model's ``recommend.Recommendation`` (its ``unsupported`` parts are named first).
    findings
        ``audit.AuditFinding`` objects of the current rule map.
    """
    unsupported = tuple(recommendation.unsupported)
    messages = tuple(finding.message for finding in findings)
    if not unsupported and not messages:
        return None
    lines = list(unsupported[:1])  # the rest are in the details
    if messages:
        count = len(messages)
        lines.append(
            f"{count} operation{'s' * (count != 1)} on the relevance path "
            f"{'has' if count == 1 else 'have'} no rule (first: {messages[0]})"
        )
    hint = "Details lists every one"
    if messages:
        hint += "; the rule tree marks where they happen"
    return Message(Level.WARNING, AUDIT_TITLE, "\n".join(lines), hint + ".", unsupported + messages)


class Auditor(QObject):
    """Asks the worker to audit every new rule map and reports what the audit finds.

    Parameters
    ----------
    session
        Whose rule maps are audited and where the findings go.
    host
        The model worker's host (only that thread touches the model).
    reporter
        Where the warning goes.
    """

    def __init__(
        self, session: Session, host: WorkerHost, reporter: Reporter, parent: QObject | None = None
    ) -> None:
        super().__init__(parent)
        self.session = session
        self.host = host
        self.reporter = reporter
        self._request: int | None = None
        self._reported: tuple[str, ...] = ()
        session.model_changed.connect(self._forget_reported)
        session.rulemap_changed.connect(self.audit)
        session.audit_changed.connect(self._report)
        host.finished.connect(self._on_finished)
        host.failed.connect(self._on_failed)
        host.cancelled.connect(self._on_cancelled)

    def audit(self) -> None:
        """Have the worker audit the session's rule map.

        A map audited before (an undo, say) is shown again without asking.
        """
        if self._request is not None:
            self.host.cancel(self._request)
            self._request = None
        rulemap = self.session.rulemap
        if rulemap is None:
            return
        fingerprint = rulemap.fingerprint()
        if fingerprint in self.session.audits:
            self.session.set_audit(fingerprint, self.session.audits[fingerprint])
        else:
            self._request = self.host.submit(AuditRequest(rulemap))

    def _on_finished(self, request_id: int, result: AuditResult) -> None:
        if request_id != self._request:
            return
        self._request = None
        session = self.session
        if session.model is not None and result.model_key == session.model.key:
            session.set_audit(result.fingerprint, result.findings)

    def _on_failed(self, request_id: int, failure: Failure) -> None:
        if request_id == self._request:
            self._request = None
            self.reporter.warning(
                "The relevance path could not be checked",
                failure.text,
                failure.hint or "The heatmap may be wrong where no rule applies.",
            )

    def _on_cancelled(self, request_id: int) -> None:
        if request_id == self._request:
            self._request = None

    def _forget_reported(self) -> None:
        self._reported = ()

    def _report(self) -> None:
        """Warn when what is wrong changed; say so once when it is all put right."""
        session = self.session
        if session.model is None or not session.audit_is_current:
            return
        message = audit_message(session.model.recommendation, session.audit)
        details = () if message is None else message.details
        if details == self._reported:
            return
        if message is not None:
            self.reporter.report(message)
        else:
            self.reporter.info("Every operation on the relevance path has a rule now")
        self._reported = details
