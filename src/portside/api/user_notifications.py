"""``/api/v1/user/notifications``: the signed-in user's in-app notifications (made by
``quay_notification`` repository notifications), in Quay's paths and JSON shapes.

Tokens need ``user:admin``, as in Quay.
"""

from __future__ import annotations

import functools
from typing import Any

from fastapi import APIRouter, Depends, Query, Request
from pydantic import BaseModel, ConfigDict, Field, StrictBool

from portside.api.auth import Caller, get_caller, require_scope, services_of
from portside.api.organizations import call
from portside.api.robots import format_date
from portside.services.notifications import UserNotificationInfo, UserNotificationService

router = APIRouter()


class UpdateNotification(BaseModel):
    """Quay's ``UpdateNotification`` body."""

    model_config = ConfigDict(extra="ignore")

    dismissed: StrictBool = Field(
        default=False, description="Whether the notification is dismissed by the user.")


def user_notifications_of(request: Request) -> UserNotificationService:
    """The in-app notification service (stateless: built per request)."""
    return UserNotificationService(services_of(request).db)


def user_notification_view(info: UserNotificationInfo) -> dict[str, Any]:
    """Quay's ``NotificationView``. ``organization`` is always ``null``: notifications
    for an organization are delivered to each of its members."""
    return {"id": info.uuid, "organization": None, "kind": info.kind,
            "created": format_date(info.created_at), "metadata": info.metadata,
            "dismissed": info.dismissed}


def _user_id(caller: Caller) -> int:
    subject = require_scope(caller, "user:admin")
    assert subject.user_id is not None  # require_scope refuses anonymous callers
    return subject.user_id


@router.get("/user/notifications")
async def list_user_notifications(request: Request, caller: Caller = Depends(get_caller),
                                  page: int = Query(0, ge=0, le=1_000_000),
                                  limit: int = Query(5, ge=1, le=100)) -> dict[str, Any]:
    """A page of the caller's notifications, newest first."""
    infos, more = await call(user_notifications_of(request).list, _user_id(caller), page,
                             limit)
    return {"notifications": [user_notification_view(info) for info in infos],
            "additional": more}


@router.get("/user/notifications/{uuid}")
async def get_user_notification(uuid: str, request: Request,
                                caller: Caller = Depends(get_caller)) -> dict[str, Any]:
    """One of the caller's notifications."""
    info = await call(user_notifications_of(request).get, _user_id(caller), uuid)
    return user_notification_view(info)


@router.put("/user/notifications/{uuid}")
async def update_user_notification(uuid: str, body: UpdateNotification, request: Request,
                                   caller: Caller = Depends(get_caller)) -> dict[str, Any]:
    """Dismiss (``{"dismissed": true}``) or restore one of the caller's notifications."""
    info = await call(functools.partial(user_notifications_of(request).set_dismissed,
                                        _user_id(caller), uuid, body.dismissed))
    return user_notification_view(info)
