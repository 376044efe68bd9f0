"""``/api/v1/repository/{repository}/notification/...``: a repository's notifications in
Quay's paths and JSON shapes (repository administrators; tokens need ``repo:admin``).

- ``GET .../notification/``: ``{"notifications": [<view>, ...]}``
- ``POST .../notification/``: create (201 with the view); body ``event``, ``method``,
  ``config``, ``eventConfig``, optional ``title``
- ``GET .../notification/{uuid}``, ``DELETE .../notification/{uuid}`` (204)
- ``POST .../notification/{uuid}``: reset the failure count (204)
- ``POST .../notification/{uuid}/test``: queue a delivery of sample data (200 ``{}``)

This router must be included before :mod:`portside.api.repositories`, whose
``/repository/{repository:path}`` would otherwise swallow these paths.
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING, Any

from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel, ConfigDict, Field
from starlette.responses import Response

from portside.api.auth import Caller, get_caller, services_of
from portside.api.immutability import policy_call
from portside.api.organizations import signed_in
from portside.api.repositories import split_repository
from portside.registry.access import client_address
from portside.services.mailer import Mailer
from portside.services.notification_delivery import ImageExpiryAnnouncer, NotificationDelivery
from portside.services.notifications import NotificationInfo, NotificationService

if TYPE_CHECKING:
    from portside.app import Services

router = APIRouter()

_LIST = "/repository/{repository:path}/notification/"
_ONE = "/repository/{repository:path}/notification/{uuid}"


class NotificationCreateRequest(BaseModel):
    """Quay's ``NotificationCreateRequest``. Values are checked by the service, after
    the caller's rights, so that outsiders learn nothing from the error."""

    model_config = ConfigDict(extra="ignore")

    event: str = Field(description="The event on which the notification will respond.")
    method: str = Field(description="webhook, slack, email or quay_notification.")
    config: dict[str, Any] = Field(description="The method's settings (url, email, target).")
    eventConfig: dict[str, Any] = Field(
        default_factory=dict, description="The event's settings (days, level).")
    title: str | None = Field(default=None, description="A human-readable title.")


def notifications_of(request: Request) -> NotificationService:
    """The notification service (stateless: built per request)."""
    services = services_of(request)
    return NotificationService(services.db, services.registry.policy, services.outbound,
                               Mailer.from_config(services.config).enabled,
                               services.secret_box)


def notification_delivery_for(services: Services) -> NotificationDelivery:
    """The ``notification`` queue's handler of an app (used by the queue worker)."""
    config = services.config
    return NotificationDelivery(services.db, services.outbound, Mailer.from_config(config),
                                services.secret_box, server_hostname=config.SERVER_HOSTNAME,
                                url_scheme=config.PREFERRED_URL_SCHEME,
                                limit=config.NOTIFICATION_FAILURE_LIMIT)


def image_expiry_announcer_for(services: Services) -> ImageExpiryAnnouncer:
    """The periodic ``repo_image_expiry`` job of an app."""
    return ImageExpiryAnnouncer(services.db)


def notification_view(info: NotificationInfo) -> dict[str, Any]:
    """Quay's view of one repository notification."""
    return {"id": info.id, "uuid": info.uuid, "title": info.title, "event": info.event,
            "method": info.method, "config": info.config, "event_config": info.event_config,
            "number_of_failures": info.number_of_failures}


@router.get(_LIST)
async def list_notifications(repository: str, request: Request,
                             caller: Caller = Depends(get_caller)) -> dict[str, Any]:
    """The repository's notifications."""
    namespace, name = split_repository(repository)
    infos = await policy_call(notifications_of(request).list, signed_in(caller), namespace,
                              name)
    return {"notifications": [notification_view(info) for info in infos]}


@router.post(_LIST, status_code=201)
async def create_notification(repository: str, body: NotificationCreateRequest,
                              request: Request, caller: Caller = Depends(get_caller),
                              ) -> dict[str, Any]:
    """Add a notification (201 with its view)."""
    namespace, name = split_repository(repository)
    info = await policy_call(functools.partial(
        notifications_of(request).create, signed_in(caller), namespace, name,
        event=body.event, method=body.method, config=body.config,
        event_config=body.eventConfig, title=body.title, ip=client_address(request)))
    return notification_view(info)


@router.get(_ONE)
async def get_notification(repository: str, uuid: str, request: Request,
                           caller: Caller = Depends(get_caller)) -> dict[str, Any]:
    """One notification of the repository."""
    namespace, name = split_repository(repository)
    info = await policy_call(notifications_of(request).get, signed_in(caller), namespace,
                             name, uuid)
    return notification_view(info)


@router.delete(_ONE, status_code=204)
async def delete_notification(repository: str, uuid: str, request: Request,
                              caller: Caller = Depends(get_caller)) -> Response:
    """Remove a notification (204)."""
    namespace, name = split_repository(repository)
    await policy_call(notifications_of(request).delete, signed_in(caller), namespace, name,
                      uuid, client_address(request))
    return Response(status_code=204)


@router.post(_ONE, status_code=204)
async def reset_notification_failures(repository: str, uuid: str, request: Request,
                                      caller: Caller = Depends(get_caller)) -> Response:
    """Reset the notification's failure count to 0, re-enabling it (204)."""
    namespace, name = split_repository(repository)
    await policy_call(notifications_of(request).reset_failures, signed_in(caller),
                      namespace, name, uuid, client_address(request))
    return Response(status_code=204)


@router.post(_ONE + "/test")
async def test_notification(repository: str, uuid: str, request: Request,
                            caller: Caller = Depends(get_caller)) -> dict[str, Any]:
    """Queue a delivery of the event's sample data."""
    namespace, name = split_repository(repository)
    await policy_call(notifications_of(request).queue_test, signed_in(caller), namespace,
                      name, uuid)
    return {}
