"""``/api/v1/organization/{org}/proxycache`` and ``.../validateproxycache``: Quay's
proxy-cache configuration of an organization (``FEATURE_PROXY_CACHE``; 404 when off).

- ``GET``: members read the configuration (Quay's view; empty strings when there is none;
  never the credentials);
- ``POST``: administrators create it (201 ``"Created"``; 400 when one exists, the host is
  refused by the outbound policy, or a value is invalid);
- ``DELETE``: administrators remove it (201 ``"Deleted"``, as Quay answers);
- ``POST .../validateproxycache``: administrators try a would-be configuration against
  the upstream (202 ``"Valid"`` or ``"Anonymous"``, 400 otherwise).

Access tokens need ``org:admin`` for the administrators' calls.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from portside.api.auth import Caller, get_caller, require_scope, services_of
from portside.api.errors import ApiError
from portside.api.organizations import call, signed_in
from portside.services.proxy_cache_config import ProxyCacheConfigService, ProxyCacheSettings
from portside.services.upstream import UpstreamClient, UpstreamError, UpstreamUnauthorized

router = APIRouter()

_CONFIG = "/organization/{org}/proxycache"
_VALIDATE = "/organization/{org}/validateproxycache"


class NewProxyCacheConfig(BaseModel):
    """Quay's ``NewProxyCacheConfig`` body."""

    model_config = ConfigDict(extra="ignore")

    upstream_registry: str = Field(min_length=1, max_length=2048, description=(
        "host[:port] of the upstream registry, with an optional repository path prefix "
        "(quay.io/projectquay)."))
    org_name: str | None = Field(default=None, max_length=255,
                                 description="Ignored (the path names the organization).")
    upstream_registry_username: str | None = Field(default=None, max_length=1024)
    upstream_registry_password: str | None = Field(default=None, max_length=4096)
    expiration_s: int | None = Field(default=None, ge=-(2**31), le=2**31, description=(
        "Seconds a cached tag lives after its last pull (default 86400)."))
    insecure: bool = Field(default=False, description=(
        "Reach the upstream without TLS verification (or over plain HTTP)."))


def feature(request: Request) -> None:
    """FastAPI dependency: 404 unless ``FEATURE_PROXY_CACHE`` is on."""
    if not services_of(request).config.FEATURE_PROXY_CACHE:
        raise ApiError(404, "not_found", "Not Found")


def configs_of(request: Request) -> ProxyCacheConfigService:
    """The configuration service (stateless: built per request)."""
    services = services_of(request)
    return ProxyCacheConfigService(services.db, services.secret_box, services.outbound)


def _invalidate(request: Request) -> None:
    """This process applies the change at once (others within ``SETTINGS_TTL_S``)."""
    cache = services_of(request).registry.proxy_cache
    if cache is not None:
        cache.invalidate()


def _ip(request: Request) -> str | None:
    return request.client.host if request.client else None


async def _checked(request: Request, caller: Caller, org: str,
                   body: NewProxyCacheConfig) -> ProxyCacheSettings:
    subject = require_scope(caller, "org:admin")
    service = configs_of(request)
    return await call(lambda: service.check(
        subject, org, body.upstream_registry, body.upstream_registry_username,
        body.upstream_registry_password, body.expiration_s, body.insecure))


@router.get(_CONFIG, dependencies=[Depends(feature)])
async def get_proxy_cache(org: str, request: Request,
                          caller: Caller = Depends(get_caller)) -> dict[str, Any]:
    """Quay's ``proxy_cache_view``."""
    subject = signed_in(caller)
    info = await call(configs_of(request).get, subject, org)
    if info is None:
        return {"upstream_registry": "", "expiration_s": "", "insecure": ""}
    return {"upstream_registry": info.upstream_registry, "expiration_s": info.expiration_s,
            "insecure": info.insecure}


@router.post(_CONFIG, dependencies=[Depends(feature)])
async def create_proxy_cache(org: str, body: NewProxyCacheConfig, request: Request,
                             caller: Caller = Depends(get_caller)) -> JSONResponse:
    """Make the organization a proxy cache of ``upstream_registry``."""
    settings = await _checked(request, caller, org, body)
    service = configs_of(request)
    await call(lambda: service.create(caller.subject, org, settings, ip=_ip(request)))
    _invalidate(request)
    return JSONResponse("Created", status_code=201)


@router.delete(_CONFIG, dependencies=[Depends(feature)])
async def delete_proxy_cache(org: str, request: Request,
                             caller: Caller = Depends(get_caller)) -> JSONResponse:
    """Stop caching; the cached repositories stay as ordinary repositories."""
    subject = require_scope(caller, "org:admin")
    service = configs_of(request)
    await call(lambda: service.delete(subject, org, ip=_ip(request)))
    _invalidate(request)
    return JSONResponse("Deleted", status_code=201)


@router.post(_VALIDATE, dependencies=[Depends(feature)])
async def validate_proxy_cache(org: str, body: NewProxyCacheConfig, request: Request,
                               caller: Caller = Depends(get_caller)) -> JSONResponse:
    """Try ``GET /v2/`` on the upstream with the given credentials."""
    settings = await _checked(request, caller, org, body)
    outbound = services_of(request).outbound
    attempts = [settings.upstream_settings()]
    if settings.insecure:
        attempts.append(settings.upstream_settings(plain_http=True))
    failure: UpstreamError | None = None
    for upstream in attempts:
        client = UpstreamClient(upstream, outbound)
        try:
            await client.ping()
            return JSONResponse("Valid" if settings.username else "Anonymous",
                                status_code=202)
        except UpstreamUnauthorized as exc:
            failure = exc
            break  # it answered: the credentials are the problem
        except UpstreamError as exc:
            failure = exc
        finally:
            await client.aclose()
    if isinstance(failure, UpstreamUnauthorized):
        raise ApiError(400, "invalid_request", "Failed login to remote registry. Please "
                       "verify entered details and try again.")
    raise ApiError(400, "invalid_request",
                   f"Failed to validate Proxy cache configuration: {failure}")
