"""Immutable tags in Quay's paths and JSON shapes:

- ``/api/v1/organization/{org}/immutabilitypolicy/[{policy_uuid}]``: a namespace's
  policies (organization administrators, or the user of a user namespace; tokens need
  ``org:admin``, or ``user:admin`` for a user namespace);
- ``/api/v1/repository/{repository}/immutabilitypolicy/[{policy_uuid}]``: a repository's
  policies (repository administrators; tokens need ``repo:admin``);
- the per-tag flag, ``PUT /api/v1/repository/{repository}/tag/{tag}`` with
  ``{"immutable": true|false}`` (wired from :mod:`portside.api.tags`).

This router must be included before :mod:`portside.api.repositories`, whose
``/repository/{repository:path}`` would otherwise swallow these paths.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import anyio.to_thread
from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field
from starlette.responses import Response

from portside.api.auth import Caller, get_caller, services_of
from portside.api.errors import ApiError, error_json
from portside.api.organizations import signed_in
from portside.api.repositories import split_repository
from portside.registry.access import client_address
from portside.services import organizations as org_errors
from portside.services.immutability import ImmutabilityPolicyInfo, ImmutabilityService
from portside.services.repository_admin import (
    Forbidden,
    InvalidInput,
    NotFound,
    RepositoryAdminError,
    Unauthenticated,
)

T = TypeVar("T")

router = APIRouter()

_ORG = "/organization/{org}/immutabilitypolicy/"
_REPO = "/repository/{repository:path}/immutabilitypolicy/"

_REPOSITORY_ERRORS: dict[type[RepositoryAdminError], tuple[int, str]] = {
    Unauthenticated: (401, "invalid_token"),
    Forbidden: (403, "insufficient_scope"),
    NotFound: (404, "not_found"),
    InvalidInput: (400, "invalid_request"),
}


async def policy_call(operation: Callable[..., T], *args: Any) -> T:
    """Run a blocking policy operation in a thread, mapping both the namespace and the
    repository services' refusals to Quay's error responses."""
    try:
        return await anyio.to_thread.run_sync(operation, *args)
    except org_errors.NotFound as exc:
        raise ApiError(404, "not_found", exc.message) from None
    except org_errors.Forbidden as exc:
        raise ApiError(403, "insufficient_scope", exc.message) from None
    except org_errors.Invalid as exc:
        raise ApiError(400, "invalid_request", exc.message) from None
    except RepositoryAdminError as exc:
        status, error_type = _REPOSITORY_ERRORS.get(type(exc), (400, "invalid_request"))
        raise ApiError(status, error_type, exc.message) from None


class ImmutabilityPolicyConfig(BaseModel):
    """Quay's ``ImmutabilityPolicyConfig`` body. Values are checked by the service,
    after the caller's rights, so that outsiders learn nothing from the error."""

    model_config = ConfigDict(extra="ignore")

    tagPattern: Any = Field(description="Regular expression matched at the start of tag names.")
    tagPatternMatches: Any = Field(
        default=True,
        description="true: matching tags are immutable; false: the tags that do not match.",
    )


def immutability_of(request: Request) -> ImmutabilityService:
    """The immutability service (stateless: built per request)."""
    services = services_of(request)
    return ImmutabilityService(services.db, services.registry.policy)


def policy_view(info: ImmutabilityPolicyInfo) -> dict[str, Any]:
    """Quay's view of one immutability policy."""
    return {
        "uuid": info.uuid,
        "tagPattern": info.tag_pattern,
        "tagPatternMatches": info.tag_pattern_matches,
    }


# --- one implementation per operation, for namespaces (name None) and repositories ---
async def _list(request: Request, caller: Caller, namespace: str,
                name: str | None) -> dict[str, Any]:
    infos = await policy_call(immutability_of(request).policies, signed_in(caller),
                              namespace, name)
    return {"policies": [policy_view(info) for info in infos]}


async def _create(request: Request, caller: Caller, namespace: str, name: str | None,
                  body: ImmutabilityPolicyConfig) -> dict[str, Any]:
    subject = signed_in(caller)
    service = immutability_of(request)
    info = await policy_call(
        lambda: service.create(subject, namespace, name, tag_pattern=body.tagPattern,
                               tag_pattern_matches=body.tagPatternMatches,
                               ip=client_address(request)))
    return {"uuid": info.uuid}


async def _get(request: Request, caller: Caller, namespace: str, name: str | None,
               policy_uuid: str) -> dict[str, Any]:
    info = await policy_call(immutability_of(request).get, signed_in(caller), namespace,
                             name, policy_uuid)
    return policy_view(info)


async def _update(request: Request, caller: Caller, namespace: str, name: str | None,
                  policy_uuid: str, body: ImmutabilityPolicyConfig) -> Response:
    subject = signed_in(caller)
    service = immutability_of(request)
    await policy_call(
        lambda: service.update(subject, namespace, name, policy_uuid,
                               tag_pattern=body.tagPattern,
                               tag_pattern_matches=body.tagPatternMatches,
                               ip=client_address(request)))
    return Response(status_code=204)


async def _delete(request: Request, caller: Caller, namespace: str, name: str | None,
                  policy_uuid: str) -> dict[str, Any]:
    await policy_call(immutability_of(request).delete, signed_in(caller), namespace, name,
                      policy_uuid, client_address(request))
    return {"uuid": policy_uuid}


# --- namespace policies -----------------------------------------------------------------
@router.get(_ORG)
async def list_namespace_policies(
    org: str, request: Request, caller: Caller = Depends(get_caller)
) -> dict[str, Any]:
    """The namespace's immutability policies."""
    return await _list(request, caller, org, None)


@router.post(_ORG, status_code=201)
async def create_namespace_policy(
    org: str, body: ImmutabilityPolicyConfig, request: Request,
    caller: Caller = Depends(get_caller),
) -> dict[str, Any]:
    """Add a policy: from now on, tags it covers in every repository of the namespace
    cannot be moved or deleted."""
    return await _create(request, caller, org, None, body)


@router.get(_ORG + "{policy_uuid}")
async def get_namespace_policy(
    org: str, policy_uuid: str, request: Request, caller: Caller = Depends(get_caller)
) -> dict[str, Any]:
    """One of the namespace's policies."""
    return await _get(request, caller, org, None, policy_uuid)


@router.put(_ORG + "{policy_uuid}", status_code=204)
async def update_namespace_policy(
    org: str, policy_uuid: str, body: ImmutabilityPolicyConfig, request: Request,
    caller: Caller = Depends(get_caller),
) -> Response:
    """Change a policy (204, as Quay answers)."""
    return await _update(request, caller, org, None, policy_uuid, body)


@router.delete(_ORG + "{policy_uuid}")
async def delete_namespace_policy(
    org: str, policy_uuid: str, request: Request, caller: Caller = Depends(get_caller)
) -> dict[str, Any]:
    """Remove a policy (200 with its uuid, as Quay answers)."""
    return await _delete(request, caller, org, None, policy_uuid)


# --- repository policies ----------------------------------------------------------------
@router.get(_REPO)
async def list_repository_policies(
    repository: str, request: Request, caller: Caller = Depends(get_caller)
) -> dict[str, Any]:
    """The repository's own immutability policies (not its namespace's)."""
    return await _list(request, caller, *split_repository(repository))


@router.post(_REPO, status_code=201)
async def create_repository_policy(
    repository: str, body: ImmutabilityPolicyConfig, request: Request,
    caller: Caller = Depends(get_caller),
) -> dict[str, Any]:
    """Add a policy to the repository."""
    return await _create(request, caller, *split_repository(repository), body)


@router.get(_REPO + "{policy_uuid}")
async def get_repository_policy(
    repository: str, policy_uuid: str, request: Request, caller: Caller = Depends(get_caller)
) -> dict[str, Any]:
    """One of the repository's policies."""
    return await _get(request, caller, *split_repository(repository), policy_uuid)


@router.put(_REPO + "{policy_uuid}", status_code=204)
async def update_repository_policy(
    repository: str, policy_uuid: str, body: ImmutabilityPolicyConfig, request: Request,
    caller: Caller = Depends(get_caller),
) -> Response:
    """Change one of the repository's policies (204)."""
    return await _update(request, caller, *split_repository(repository), policy_uuid, body)


@router.delete(_REPO + "{policy_uuid}")
async def delete_repository_policy(
    repository: str, policy_uuid: str, request: Request, caller: Caller = Depends(get_caller)
) -> dict[str, Any]:
    """Remove one of the repository's policies."""
    return await _delete(request, caller, *split_repository(repository), policy_uuid)


# --- the per-tag flag -------------------------------------------------------------------
async def change_tag_immutability(
    request: Request, caller: Caller, namespace: str, name: str, tag: str, immutable: object
) -> None:
    """Set (writers) or clear (administrators) a tag's immutable flag, for Quay's
    ``PUT .../tag/{tag}`` body ``{"immutable": ...}``."""
    if not isinstance(immutable, bool):
        raise ApiError(400, "invalid_request", "immutable must be true or false.")
    subject = signed_in(caller)
    await policy_call(
        immutability_of(request).set_flag,
        subject,
        namespace,
        name,
        tag,
        immutable,
        client_address(request),
    )


def tag_immutable_response(message: str) -> JSONResponse:
    """Quay's answer to a change of an immutable tag: 409 ``tag_immutable``."""
    return error_json(409, "tag_immutable", message)
