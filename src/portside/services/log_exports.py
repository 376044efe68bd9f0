"""Quay's ``exportlogs``: audit log entries written to a JSON file in the background.

A request creates a :class:`~portside.db.models.LogExport` row and an item of the
``exportactionlogs`` work queue in one transaction. The queue handler (:meth:`run`)
streams the matching entries, newest first and a batch at a time, into an object
``exportedlogs/<export id>.json`` in the preferred storage location::

    {"export_id": "...", "details": {"start_time": ..., "end_time": ...,
     "namespace": ..., "repository": ...}, "logs": [<entry>, ...], "terminated": true}

(each entry in the logs endpoints' JSON shape), marks the export ``done`` with the
number of entries, then tells the requester: a ``POST`` to ``callback_url`` and/or an
e-mail to ``callback_email``. Problems with the notice do not fail the export; they are
kept in the export's ``error``. The file is served by ``GET /api/v1/exportedlogs/<id>``
to the requester, the namespace's administrators and superusers.
"""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import httpx
from sqlalchemy import select
from sqlalchemy.orm import Session

from portside.auth.permissions import (
    NamespaceAction,
    NamespaceRole,
    Subject,
    acts_as_superuser,
    namespace_actions,
    strongest_namespace_role,
)
from portside.db.engine import Database
from portside.db.models import LogExport, Namespace, Repository, Team, TeamMember, User, utcnow
from portside.services.audit import AuditLogService, InvalidInput, LogScope, LogView, NotFound
from portside.services.emails import email_problem
from portside.services.mailer import Mailer, MailingDisabled
from portside.services.outbound import OutboundPolicy, OutboundRefused
from portside.services.queue import QueueJob, enqueue
from portside.storage.base import ObjectNotFound
from portside.storage.placements import Placements

log = logging.getLogger(__name__)

#: The work queue of exports (Quay's ``EXPORT_ACTION_LOGS_QUEUE_NAME`` default).
EXPORT_QUEUE = "exportactionlogs"
#: Attempts per export before it is marked failed.
EXPORT_RETRIES = 3
#: Entries read from the database per batch.
BATCH_SIZE = 1000
_DATE_FORMAT = "%a, %d %b %Y %H:%M:%S -0000"

#: Renders one entry as the API shows it (the logs endpoints' view).
Renderer = Callable[[LogView], dict[str, Any]]


def export_path(export_id: str) -> str:
    """Where an export's file lives in storage."""
    return f"exportedlogs/{export_id}.json"


@dataclass(frozen=True)
class ExportInfo:
    """An export's state for the status endpoint."""

    id: str
    status: str
    entries: int
    error: str | None
    created_at: datetime
    completed_at: datetime | None
    storage_path: str | None


def _info(row: LogExport) -> ExportInfo:
    return ExportInfo(row.id, row.status, row.entries, row.error, row.created_at,
                      row.completed_at, row.storage_path)


class LogExportService:
    """Requests, runs and serves log exports (see the module docstring)."""

    def __init__(self, db: Database, placements: Placements, audit: AuditLogService,
                 render: Renderer, mailer: Mailer, server_url: str,
                 outbound: OutboundPolicy) -> None:
        self._db = db
        #: Callback URLs are user-set: the SSRF policy applies at request and at call.
        self._outbound = outbound
        self._placements = placements
        self._audit = audit
        self._render = render
        self._mailer = mailer
        self._server_url = server_url.rstrip("/")

    # --- requesting ------------------------------------------------------------------
    def request(self, subject: Subject, scope: LogScope, start: datetime, end: datetime,
                callback_url: str | None, callback_email: str | None) -> str:
        """Queue an export of ``scope``'s entries in ``[start, end)``; returns its id.

        ``scope`` comes from :class:`AuditLogService`'s permission checks.
        """
        if callback_url:
            try:
                self._outbound.check_url(callback_url)
            except OutboundRefused as exc:
                raise InvalidInput(f"Invalid callback URL: {exc.message}") from None
        if callback_email:
            problem = email_problem(callback_email)
            if problem is not None:
                raise InvalidInput(problem)
        export_id = str(uuid.uuid4())
        with self._db.session() as session:
            namespace_id = scope.namespace_id
            if scope.repository_id is not None:
                namespace_id = session.scalar(select(Repository.namespace_id)
                                              .where(Repository.id == scope.repository_id))
            session.add(LogExport(
                id=export_id, namespace_id=namespace_id, repository_id=scope.repository_id,
                requested_by_id=subject.user_id, start_time=start, end_time=end,
                callback_url=callback_url or None, callback_email=callback_email or None,
                status="queued", entries=0, created_at=utcnow(),
            ))
            enqueue(session, EXPORT_QUEUE, {"export_id": export_id}, retries=EXPORT_RETRIES)
        return export_id

    # --- reading ---------------------------------------------------------------------
    def status_for(self, subject: Subject, export_id: str) -> ExportInfo:
        """The export, if ``subject`` requested it, administers its namespace or is a
        superuser; :class:`NotFound` otherwise (its existence is not revealed)."""
        with self._db.session() as session:
            row = session.get(LogExport, export_id[:36])
            if row is None or not self._may_read(session, subject, row):
                raise NotFound("Log export not found.")
            return _info(row)

    @staticmethod
    def _may_read(session: Session, subject: Subject, row: LogExport) -> bool:
        if subject.anonymous:
            return False
        if acts_as_superuser(subject) or row.requested_by_id == subject.user_id:
            return True
        if row.namespace_id is None:
            return False
        namespace = session.get(Namespace, row.namespace_id)
        if namespace is None:
            return False
        is_org = namespace.kind == "organization"
        role: NamespaceRole | None
        if is_org:
            role = strongest_namespace_role(session.scalars(
                select(Team.role).join(TeamMember, TeamMember.team_id == Team.id)
                .where(Team.namespace_id == namespace.id,
                       TeamMember.user_id == subject.user_id)))
        else:
            owner = session.scalar(select(User.id).where(User.namespace_id == namespace.id))
            role = NamespaceRole.ADMIN if owner == subject.user_id else None
        return NamespaceAction.ADMINISTER in namespace_actions(subject, role, is_org)

    def open(self, info: ExportInfo) -> Iterator[bytes]:
        """Stream a finished export's file; raises :class:`NotFound` if it is gone."""
        if info.storage_path is None:
            raise NotFound("Log export not found.")
        for location in self._placements.preference:
            driver = self._placements.driver(location)
            if driver.stat(info.storage_path) is not None:
                try:
                    return driver.read(info.storage_path)
                except ObjectNotFound:
                    break
        raise NotFound("The exported file is no longer available.")

    # --- running (the queue handler) -------------------------------------------------
    def run(self, job: QueueJob) -> None:
        """Export one queued request; raising lets the queue retry it."""
        export_id = str(job.body.get("export_id", ""))
        with self._db.session() as session:
            row = session.get(LogExport, export_id)
            if row is None or row.status in ("done", "failed"):
                return
            row.status = "running"
            session.flush()
            export = _info(row)
            scope = (LogScope(repository_id=row.repository_id) if row.repository_id is not None
                     else LogScope(namespace_id=row.namespace_id if row.namespace_id is not None
                                   else -1))
            details = self._details(session, row)
            start, end = row.start_time, row.end_time
            callback_url, callback_email = row.callback_url, row.callback_email
        try:
            count = self._write(export.id, scope, start, end, details)
        except Exception as exc:
            if job.retries_remaining <= 0:
                self._finish(export.id, "failed", 0, None, f"export failed: {exc}")
                self._notify(export.id, False, callback_url, callback_email)
            else:
                with self._db.session() as session:
                    row = session.get(LogExport, export.id)
                    if row is not None:
                        row.status = "queued"
                        row.error = f"attempt failed, will retry: {exc}"
            raise
        self._finish(export.id, "done", count, export_path(export.id), None)
        self._notify(export.id, True, callback_url, callback_email)

    @staticmethod
    def _details(session: Session, row: LogExport) -> dict[str, Any]:
        details: dict[str, Any] = {"start_time": row.start_time.strftime(_DATE_FORMAT),
                                   "end_time": row.end_time.strftime(_DATE_FORMAT)}
        if row.namespace_id is not None:
            details["namespace"] = session.scalar(select(Namespace.name)
                                                  .where(Namespace.id == row.namespace_id))
        if row.repository_id is not None:
            details["repository"] = session.scalar(select(Repository.name)
                                                   .where(Repository.id == row.repository_id))
        return details

    def _write(self, export_id: str, scope: LogScope, start: datetime, end: datetime,
               details: dict[str, Any]) -> int:
        """Stream the entries into storage through the driver's resumable-upload API
        (a batch in memory at a time); returns how many were written."""
        location = self._placements.write_location
        driver = self._placements.driver(location)
        upload_id = f"logexport-{export_id}"
        state = driver.start_upload(upload_id)
        appender = driver.append_upload(upload_id, state, 0)
        count = 0
        try:
            head = {"export_id": export_id, "details": details}
            appender.write(json.dumps(head)[:-1].encode() + b', "logs": [')
            token: str | None = None
            while True:
                views, token = self._audit.entries(scope, start, end, page_token=token,
                                                   page_size=BATCH_SIZE)
                if views:
                    chunk = ", ".join(json.dumps(self._render(v)) for v in views)
                    appender.write(((", " if count else "") + chunk).encode())
                    count += len(views)
                if token is None:
                    break
            appender.write(b'], "terminated": true}')
            state = appender.close()
        except BaseException:
            appender.abort()
            driver.cancel_upload(upload_id, state)
            raise
        path = export_path(export_id)
        driver.delete(path)  # a leftover of an earlier attempt would be kept otherwise
        driver.commit_upload(upload_id, state, path)
        return count

    def _finish(self, export_id: str, status: str, count: int, path: str | None,
                error: str | None) -> None:
        with self._db.session() as session:
            row = session.get(LogExport, export_id)
            if row is None:
                return
            row.status, row.entries, row.storage_path = status, count, path
            row.error = error[:2000] if error else None
            row.completed_at = utcnow()

    # --- telling the requester -------------------------------------------------------
    def download_url(self, export_id: str) -> str:
        """Where the requester fetches the file."""
        return f"{self._server_url}/api/v1/exportedlogs/{export_id}"

    def _notify(self, export_id: str, success: bool, callback_url: str | None,
                callback_email: str | None) -> None:
        problems: list[str] = []
        if callback_url:
            payload = {"export_id": export_id, "status": "success" if success else "failed",
                       "exported_data_url": self.download_url(export_id) if success else None}
            try:
                with self._outbound.client(follow_redirects=False) as client:
                    client.post(callback_url, json=payload).raise_for_status()
            except (OutboundRefused, httpx.HTTPError) as exc:
                problems.append(f"callback to {callback_url[:200]} failed: {exc}")
        if callback_email:
            subject = "Log export " + ("ready" if success else "failed")
            body = (f"The audit log export {export_id} is ready: "
                    f"{self.download_url(export_id)}\n" if success else
                    f"The audit log export {export_id} failed.\n")
            try:
                self._mailer.send(callback_email, subject, body)
            except MailingDisabled:
                problems.append(f"mailing is disabled: no e-mail was sent to {callback_email}")
            except OSError as exc:  # smtplib errors are OSErrors
                problems.append(f"e-mail to {callback_email} failed: {exc}")
        if problems:
            log.warning("log export %s: %s", export_id, "; ".join(problems))
            with self._db.session() as session:
                row = session.get(LogExport, export_id)
                if row is not None:
                    row.error = "; ".join(filter(None, [row.error, *problems]))[:2000]
