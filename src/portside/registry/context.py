"""Everything the /v2 handlers need, built once by the app factory."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING

from portside.auth.limits import LoginFailureLimiter
from portside.auth.permissions import Policy
from portside.auth.tokens import TokenService
from portside.services.audit import LogBuffer
from portside.services.blobs import BlobService
from portside.services.catalog import CatalogService
from portside.services.login_audit import RegistryLoginAudit
from portside.services.manifests import ManifestService
from portside.services.repositories import RepositoryService
from portside.services.uploads import UploadService
from portside.services.users import UserService
from portside.storage.placements import Placements

if TYPE_CHECKING:
    from portside.services.proxy_cache import ProxyCache


@dataclass
class RegistryContext:
    """Services and settings shared by the registry's handlers."""

    users: UserService
    repositories: RepositoryService
    blobs: BlobService
    uploads: UploadService
    manifests: ManifestService
    catalog: CatalogService
    tokens: TokenService
    placements: Placements
    policy: Policy
    login_limiter: LoginFailureLimiter
    #: ``SERVER_HOSTNAME`` when set explicitly; otherwise the request's Host is used.
    server_hostname: str | None
    url_scheme: str
    #: Serve object-storage blobs through the registry instead of redirecting.
    proxy_storage: bool
    #: A few threads reserved for the short database reads of every request, apart from
    #: the general pool where storage calls and hashing may take long. Few threads mean
    #: fewer hand-offs of the interpreter lock per request.
    read_executor: ThreadPoolExecutor
    #: Buffers audit entries written off the request path: ``pull_repo`` and registry
    #: logins (``None``: pulls are not logged).
    pull_log: LogBuffer | None = None
    #: Records ``/v2/auth`` and Basic-auth logins (``None``: ``ACTION_LOG_AUDIT_LOGINS``
    #: is off).
    login_audit: RegistryLoginAudit | None = None
    #: Pull-through caching of proxy-cache organizations (``None``:
    #: ``FEATURE_PROXY_CACHE`` is off).
    proxy_cache: ProxyCache | None = None
