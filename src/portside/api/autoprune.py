"""Auto-prune policies in Quay's paths and JSON shapes:

- ``/api/v1/organization/{org}/autoprunepolicy/[{policy_uuid}]``: a namespace's policies
  (organization administrators; tokens need ``org:admin``);
- ``/api/v1/user/autoprunepolicy/[{policy_uuid}]``: the caller's own namespace (tokens
  need ``user:admin``);
- ``/api/v1/repository/{repository}/autoprunepolicy/[{policy_uuid}]``: one repository
  (repository administrators; tokens need ``repo:admin``).

Answers as Quay's: 201 ``{"uuid"}`` on creation, ``{"policies": [...]}`` lists, 204 on
update and 200 ``{"uuid"}`` on deletion. Without ``FEATURE_AUTO_PRUNE`` the paths do not
exist (404). This router must be included before :mod:`portside.api.repositories`.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel, ConfigDict, Field
from starlette.responses import Response

from portside.api.auth import Caller, get_caller, services_of
from portside.api.errors import ApiError
from portside.api.immutability import policy_call
from portside.api.organizations import signed_in
from portside.api.repositories import split_repository
from portside.registry.access import client_address
from portside.services.autoprune import AutoPrunePolicyInfo, AutoPruneService

router = APIRouter()

_ORG = "/organization/{org}/autoprunepolicy/"
_USER = "/user/autoprunepolicy/"
_REPO = "/repository/{repository:path}/autoprunepolicy/"


class AutoPrunePolicyConfig(BaseModel):
    """Quay's ``AutoPrunePolicyConfig`` body. Values are checked by the service, after
    the caller's rights, so that outsiders learn nothing from the error."""

    model_config = ConfigDict(extra="ignore")

    method: Any = Field(description="number_of_tags or creation_date.")
    value: Any = Field(description="A tag count (e.g. 10) or a duration (e.g. '7d').")
    tagPattern: Any = Field(default=None, description="Regular expression on tag names.")
    tagPatternMatches: Any = Field(
        default=True, description="Prune the tags that match (true) or those that don't."
    )


def autoprune_of(request: Request) -> AutoPruneService:
    """The auto-prune service; 404 when ``FEATURE_AUTO_PRUNE`` is off (as in Quay)."""
    services = services_of(request)
    if not services.config.FEATURE_AUTO_PRUNE:
        raise ApiError(404, "not_found", "Not Found")
    return AutoPruneService(services.db, services.registry.policy)


def policy_view(info: AutoPrunePolicyInfo) -> dict[str, Any]:
    """Quay's view of one auto-prune policy."""
    return {
        "uuid": info.uuid,
        "method": info.method,
        "value": info.value,
        "tagPattern": info.tag_pattern,
        "tagPatternMatches": info.tag_pattern_matches,
    }


def _user_namespace(caller: Caller) -> str:
    subject = signed_in(caller)
    return subject.username or ""


async def _list(
    request: Request, caller: Caller, namespace: str, repository: str | None
) -> dict[str, Any]:
    service = autoprune_of(request)
    infos = await policy_call(service.policies, signed_in(caller), namespace, repository)
    return {"policies": [policy_view(info) for info in infos]}


async def _create(
    request: Request,
    caller: Caller,
    namespace: str,
    repository: str | None,
    body: AutoPrunePolicyConfig,
) -> dict[str, Any]:
    service = autoprune_of(request)
    subject = signed_in(caller)
    info = await policy_call(
        lambda: service.create(
            subject,
            namespace,
            repository,
            method=body.method,
            value=body.value,
            tag_pattern=body.tagPattern,
            tag_pattern_matches=body.tagPatternMatches,
            ip=client_address(request),
        )
    )
    return {"uuid": info.uuid}


async def _get(
    request: Request, caller: Caller, namespace: str, repository: str | None, policy_uuid: str
) -> dict[str, Any]:
    service = autoprune_of(request)
    info = await policy_call(service.get, signed_in(caller), namespace, repository, policy_uuid)
    return policy_view(info)


async def _update(
    request: Request,
    caller: Caller,
    namespace: str,
    repository: str | None,
    policy_uuid: str,
    body: AutoPrunePolicyConfig,
) -> Response:
    service = autoprune_of(request)
    subject = signed_in(caller)
    await policy_call(
        lambda: service.update(
            subject,
            namespace,
            repository,
            policy_uuid,
            method=body.method,
            value=body.value,
            tag_pattern=body.tagPattern,
            tag_pattern_matches=body.tagPatternMatches,
            ip=client_address(request),
        )
    )
    return Response(status_code=204)


async def _delete(
    request: Request, caller: Caller, namespace: str, repository: str | None, policy_uuid: str
) -> dict[str, Any]:
    service = autoprune_of(request)
    await policy_call(
        service.delete,
        signed_in(caller),
        namespace,
        repository,
        policy_uuid,
        client_address(request),
    )
    return {"uuid": policy_uuid}


# --- organizations (and any namespace the caller administers) ------------------------
@router.get(_ORG)
async def list_namespace_policies(
    org: str, request: Request, caller: Caller = Depends(get_caller)
) -> dict[str, Any]:
    """The namespace's auto-prune policies."""
    return await _list(request, caller, org, None)


@router.post(_ORG, status_code=201)
async def create_namespace_policy(
    org: str, body: AutoPrunePolicyConfig, request: Request, caller: Caller = Depends(get_caller)
) -> dict[str, Any]:
    """Add a policy applied to every repository of the namespace."""
    return await _create(request, caller, org, None, body)


@router.get(_ORG + "{policy_uuid}")
async def get_namespace_policy(
    org: str, policy_uuid: str, request: Request, caller: Caller = Depends(get_caller)
) -> dict[str, Any]:
    """One of the namespace's policies."""
    return await _get(request, caller, org, None, policy_uuid)


@router.put(_ORG + "{policy_uuid}", status_code=204)
async def update_namespace_policy(
    org: str,
    policy_uuid: str,
    body: AutoPrunePolicyConfig,
    request: Request,
    caller: Caller = Depends(get_caller),
) -> Response:
    """Replace a policy's configuration."""
    return await _update(request, caller, org, None, policy_uuid, body)


@router.delete(_ORG + "{policy_uuid}")
async def delete_namespace_policy(
    org: str, policy_uuid: str, request: Request, caller: Caller = Depends(get_caller)
) -> dict[str, Any]:
    """Remove a policy."""
    return await _delete(request, caller, org, None, policy_uuid)


# --- the caller's own namespace -----------------------------------------------------------
@router.get(_USER)
async def list_user_policies(
    request: Request, caller: Caller = Depends(get_caller)
) -> dict[str, Any]:
    """The caller's namespace's auto-prune policies."""
    return await _list(request, caller, _user_namespace(caller), None)


@router.post(_USER, status_code=201)
async def create_user_policy(
    body: AutoPrunePolicyConfig, request: Request, caller: Caller = Depends(get_caller)
) -> dict[str, Any]:
    """Add a policy to the caller's namespace."""
    return await _create(request, caller, _user_namespace(caller), None, body)


@router.get(_USER + "{policy_uuid}")
async def get_user_policy(
    policy_uuid: str, request: Request, caller: Caller = Depends(get_caller)
) -> dict[str, Any]:
    """One of the caller's namespace's policies."""
    return await _get(request, caller, _user_namespace(caller), None, policy_uuid)


@router.put(_USER + "{policy_uuid}", status_code=204)
async def update_user_policy(
    policy_uuid: str,
    body: AutoPrunePolicyConfig,
    request: Request,
    caller: Caller = Depends(get_caller),
) -> Response:
    """Replace one of the caller's namespace's policies."""
    return await _update(request, caller, _user_namespace(caller), None, policy_uuid, body)


@router.delete(_USER + "{policy_uuid}")
async def delete_user_policy(
    policy_uuid: str, request: Request, caller: Caller = Depends(get_caller)
) -> dict[str, Any]:
    """Remove one of the caller's namespace's policies."""
    return await _delete(request, caller, _user_namespace(caller), None, policy_uuid)


# --- repositories -------------------------------------------------------------------------
@router.get(_REPO)
async def list_repository_policies(
    repository: str, request: Request, caller: Caller = Depends(get_caller)
) -> dict[str, Any]:
    """The repository's own auto-prune policies (not its namespace's)."""
    namespace, name = split_repository(repository)
    return await _list(request, caller, namespace, name)


@router.post(_REPO, status_code=201)
async def create_repository_policy(
    repository: str,
    body: AutoPrunePolicyConfig,
    request: Request,
    caller: Caller = Depends(get_caller),
) -> dict[str, Any]:
    """Add a policy to the repository."""
    namespace, name = split_repository(repository)
    return await _create(request, caller, namespace, name, body)


@router.get(_REPO + "{policy_uuid}")
async def get_repository_policy(
    repository: str, policy_uuid: str, request: Request, caller: Caller = Depends(get_caller)
) -> dict[str, Any]:
    """One of the repository's policies."""
    namespace, name = split_repository(repository)
    return await _get(request, caller, namespace, name, policy_uuid)


@router.put(_REPO + "{policy_uuid}", status_code=204)
async def update_repository_policy(
    repository: str,
    policy_uuid: str,
    body: AutoPrunePolicyConfig,
    request: Request,
    caller: Caller = Depends(get_caller),
) -> Response:
    """Replace one of the repository's policies."""
    namespace, name = split_repository(repository)
    return await _update(request, caller, namespace, name, policy_uuid, body)


@router.delete(_REPO + "{policy_uuid}")
async def delete_repository_policy(
    repository: str, policy_uuid: str, request: Request, caller: Caller = Depends(get_caller)
) -> dict[str, Any]:
    """Remove one of the repository's policies."""
    namespace, name = split_repository(repository)
    return await _delete(request, caller, namespace, name, policy_uuid)
