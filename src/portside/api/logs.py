"""Quay's usage logs: ``/repository/{repo}/logs``, ``/organization/{org}/logs``,
``/user/logs``, their ``aggregatelogs`` and ``exportlogs`` counterparts, and
``/exportedlogs/{export_id}`` (a Portside extension: an export's status, then its file).
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, TypeVar

import anyio.to_thread
from fastapi import APIRouter, Depends, Request
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, Field
from starlette.responses import Response

from portside.api.auth import Caller, get_caller, require_scope, services_of
from portside.api.errors import ApiError
from portside.api.repositories import split_repository
from portside.api.robots import format_date
from portside.api.user import avatar
from portside.services.audit import AuditLogService, LogAccessError, LogScope, LogView
from portside.services.log_exports import LogExportService
from portside.services.mailer import Mailer

if TYPE_CHECKING:
    from portside.app import Services

router = APIRouter()

T = TypeVar("T")

#: Quay's query-string date format (a UTC day).
DATE_FORMAT = "%m/%d/%Y"


def log_service(request: Request) -> AuditLogService:
    """The log reader for this app."""
    services = services_of(request)
    return AuditLogService(services.db, services.registry.policy)


async def run(call: Callable[[], T]) -> T:
    """Run a blocking service call, mapping its refusals to Quay's error JSON."""
    try:
        return await anyio.to_thread.run_sync(call)
    except LogAccessError as exc:
        raise ApiError(exc.status, exc.error_type, exc.message) from None


def _parse_day(value: str | None) -> datetime | None:
    """A ``%m/%d/%Y`` day at UTC midnight; like Quay, anything unparsable is ignored."""
    if not value:
        return None
    try:
        return datetime.strptime(value, DATE_FORMAT).replace(tzinfo=UTC)
    except ValueError:
        return None


def time_range(starttime: str | None, endtime: str | None) -> tuple[datetime, datetime]:
    """Quay's window: from ``starttime`` (default a day ago) to the end of ``endtime``'s
    day (default today), i.e. ``endtime`` is inclusive."""
    now = datetime.now(UTC)
    start = _parse_day(starttime) or now - timedelta(days=1)
    end = (_parse_day(endtime) or now) + timedelta(days=1)
    if end < start:
        raise ApiError(400, "invalid_request", "starttime must not be after endtime.")
    return start, end


def entry_json(view: LogView) -> dict[str, Any]:
    """Quay's ``Log.to_dict`` view of one entry."""
    body: dict[str, Any] = {
        "kind": view.kind,
        "metadata": view.metadata,
        "ip": view.ip,
        "datetime": format_date(view.created_at),
    }
    if view.performer is not None:
        kind = "robot" if view.performer_is_robot else "user"
        body["performer"] = {"kind": "user", "name": view.performer,
                             "is_robot": view.performer_is_robot,
                             "avatar": avatar(view.performer, kind)}
    if view.namespace is not None:
        kind = "org" if view.namespace_is_org else "user"
        body["namespace"] = {"kind": kind, "name": view.namespace,
                             "avatar": avatar(view.namespace, kind)}
    return body


async def _logs(request: Request, scope: LogScope, starttime: str | None,
                endtime: str | None, performer: str | None,
                next_page: str | None) -> dict[str, Any]:
    start, end = time_range(starttime, endtime)
    service = log_service(request)
    views, token = await run(functools.partial(
        service.entries, scope, start, end, performer=performer, page_token=next_page))
    body: dict[str, Any] = {"start_time": format_date(start), "end_time": format_date(end),
                            "logs": [entry_json(v) for v in views]}
    if token is not None:
        body["next_page"] = token
    return body


async def _aggregate(request: Request, scope: LogScope, starttime: str | None,
                     endtime: str | None, performer: str | None) -> dict[str, Any]:
    start, end = time_range(starttime, endtime)
    service = log_service(request)
    counts = await run(functools.partial(service.aggregate, scope, start, end,
                                         performer=performer))
    return {"aggregated": [
        {"kind": kind,
         "count": count,
         "datetime": format_date(datetime(day.year, day.month, day.day, tzinfo=UTC))}
        for kind, day, count in counts
    ]}


async def _repository_scope(request: Request, caller: Caller, repository: str) -> LogScope:
    subject = require_scope(caller, "repo:admin")
    namespace, name = split_repository(repository)
    return await run(functools.partial(log_service(request).repository_scope, subject,
                                       namespace, name))


async def _organization_scope(request: Request, caller: Caller, org: str) -> LogScope:
    subject = require_scope(caller, "org:admin")
    return await run(functools.partial(log_service(request).organization_scope, subject, org))


async def _user_scope(request: Request, caller: Caller) -> LogScope:
    subject = require_scope(caller, "user:admin")
    return await run(functools.partial(log_service(request).user_scope, subject))


@router.get("/repository/{repository:path}/logs")
async def repository_logs(request: Request, repository: str, starttime: str | None = None,
                          endtime: str | None = None, next_page: str | None = None,
                          caller: Caller = Depends(get_caller)) -> dict[str, Any]:
    """A repository's logs (needs admin on it)."""
    scope = await _repository_scope(request, caller, repository)
    return await _logs(request, scope, starttime, endtime, None, next_page)


@router.get("/repository/{repository:path}/aggregatelogs")
async def repository_aggregate_logs(request: Request, repository: str,
                                    starttime: str | None = None, endtime: str | None = None,
                                    caller: Caller = Depends(get_caller)) -> dict[str, Any]:
    """Entry counts per day and kind for a repository."""
    scope = await _repository_scope(request, caller, repository)
    return await _aggregate(request, scope, starttime, endtime, None)


@router.get("/organization/{org}/logs")
async def organization_logs(request: Request, org: str, starttime: str | None = None,
                            endtime: str | None = None, performer: str | None = None,
                            next_page: str | None = None,
                            caller: Caller = Depends(get_caller)) -> dict[str, Any]:
    """An organization's logs (needs to administer it)."""
    scope = await _organization_scope(request, caller, org)
    return await _logs(request, scope, starttime, endtime, performer, next_page)


@router.get("/organization/{org}/aggregatelogs")
async def organization_aggregate_logs(request: Request, org: str, starttime: str | None = None,
                                      endtime: str | None = None, performer: str | None = None,
                                      caller: Caller = Depends(get_caller)) -> dict[str, Any]:
    """Entry counts per day and kind for an organization."""
    scope = await _organization_scope(request, caller, org)
    return await _aggregate(request, scope, starttime, endtime, performer)


@router.get("/user/logs")
async def user_logs(request: Request, starttime: str | None = None, endtime: str | None = None,
                    performer: str | None = None, next_page: str | None = None,
                    caller: Caller = Depends(get_caller)) -> dict[str, Any]:
    """The caller's own namespace's logs."""
    scope = await _user_scope(request, caller)
    return await _logs(request, scope, starttime, endtime, performer, next_page)


@router.get("/user/aggregatelogs")
async def user_aggregate_logs(request: Request, starttime: str | None = None,
                              endtime: str | None = None, performer: str | None = None,
                              caller: Caller = Depends(get_caller)) -> dict[str, Any]:
    """Entry counts per day and kind for the caller's namespace."""
    scope = await _user_scope(request, caller)
    return await _aggregate(request, scope, starttime, endtime, performer)


# --- exports ---------------------------------------------------------------------------


class ExportRequest(BaseModel):
    """Quay's ``exportlogs`` body: where to say that the export is ready."""

    callback_url: str | None = Field(default=None, max_length=2048,
                                     description="URL that gets a POST when done.")
    callback_email: str | None = Field(default=None, max_length=255,
                                       description="Address that gets an e-mail when done.")


def export_service_for(services: Services) -> LogExportService:
    """The log export service of an app (used by the API and the queue worker)."""
    return LogExportService(
        services.db, services.registry.placements,
        AuditLogService(services.db, services.registry.policy), entry_json,
        Mailer.from_config(services.config), services.config.server_url, services.outbound,
    )


async def _export(request: Request, caller: Caller, scope: LogScope, starttime: str | None,
                  endtime: str | None, body: ExportRequest | None) -> dict[str, Any]:
    start, end = time_range(starttime, endtime)
    body = body or ExportRequest()
    service = export_service_for(services_of(request))
    export_id = await run(functools.partial(
        service.request, caller.subject, scope, start, end, body.callback_url,
        body.callback_email))
    return {"export_id": export_id}


@router.post("/repository/{repository:path}/exportlogs")
async def repository_export_logs(request: Request, repository: str,
                                 body: ExportRequest | None = None,
                                 starttime: str | None = None, endtime: str | None = None,
                                 caller: Caller = Depends(get_caller)) -> dict[str, Any]:
    """Export a repository's logs to a file in the background (needs admin on it)."""
    scope = await _repository_scope(request, caller, repository)
    return await _export(request, caller, scope, starttime, endtime, body)


@router.post("/organization/{org}/exportlogs")
async def organization_export_logs(request: Request, org: str,
                                   body: ExportRequest | None = None,
                                   starttime: str | None = None, endtime: str | None = None,
                                   caller: Caller = Depends(get_caller)) -> dict[str, Any]:
    """Export an organization's logs to a file in the background."""
    scope = await _organization_scope(request, caller, org)
    return await _export(request, caller, scope, starttime, endtime, body)


@router.post("/user/exportlogs")
async def user_export_logs(request: Request, body: ExportRequest | None = None,
                           starttime: str | None = None, endtime: str | None = None,
                           caller: Caller = Depends(get_caller)) -> dict[str, Any]:
    """Export the caller's own namespace's logs to a file in the background."""
    scope = await _user_scope(request, caller)
    return await _export(request, caller, scope, starttime, endtime, body)


@router.get("/exportedlogs/{export_id}")
async def exported_logs(request: Request, export_id: str,
                        caller: Caller = Depends(get_caller)) -> Response:
    """An export's status while it is queued, running or failed; its JSON file once
    done. For the requester, the namespace's administrators and superusers (404 for
    everyone else)."""
    if caller.subject.anonymous:
        raise ApiError(401, "invalid_token", "Requires authentication.")
    service = export_service_for(services_of(request))
    info = await run(functools.partial(service.status_for, caller.subject, export_id))
    if info.status == "done":
        chunks = await run(functools.partial(service.open, info))
        return StreamingResponse(chunks, media_type="application/json", headers={
            "Content-Disposition": f'attachment; filename="{info.id}.json"'})
    body: dict[str, Any] = {"export_id": info.id, "status": info.status,
                            "entries": info.entries, "error": info.error,
                            "created": format_date(info.created_at)}
    if info.completed_at is not None:
        body["completed"] = format_date(info.completed_at)
    return Response(json.dumps(body), media_type="application/json")
