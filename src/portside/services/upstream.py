"""A client of another registry's ``/v2`` API (mirroring and the proxy cache).

The upstream is an address a user chose, so every request (token requests and storage
redirects included) goes through :class:`~portside.services.outbound.OutboundPolicy`'s
checked client.

Authentication follows what ``docker`` and ``skopeo`` do: a request is first sent with
whatever is already known for its scope (nothing at first); a ``401`` with a
``WWW-Authenticate`` challenge is then answered once:

- ``Bearer realm=...,service=...,scope=...``: a token is fetched from the realm (with the
  configured credentials as Basic auth, anonymously otherwise) and cached per scope until
  it expires;
- ``Basic``: the configured credentials are sent with every later request.

Redirects (blob downloads are often redirected to object storage) are followed by hand,
at most :data:`MAX_REDIRECTS` hops, and the registry's ``Authorization`` header is only
sent to the registry's own scheme, host and port. Blob bodies are streamed in chunks.

Credentials never appear in exception messages: messages name the upstream's host and
path (never a query string, which may carry a storage signature) and the status.
"""

from __future__ import annotations

import base64
import contextlib
import json
import re
import ssl
import time
from collections.abc import AsyncGenerator, AsyncIterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode, urljoin, urlsplit

import certifi
import httpx

from portside.oci import mediatypes as mt
from portside.oci.digest import InvalidDigest, digest_of, parse_digest
from portside.oci.names import NAME_RE
from portside.services.outbound import OutboundPolicy, OutboundRefused

__all__ = [
    "BlobStream",
    "FetchedManifest",
    "UpstreamClient",
    "UpstreamError",
    "UpstreamNotFound",
    "UpstreamSettings",
    "UpstreamUnauthorized",
    "UpstreamUnavailable",
    "parse_upstream_reference",
]

#: Manifest types asked for, most specific first (what skopeo and docker send).
MANIFEST_ACCEPT = ", ".join([mt.OCI_MANIFEST, mt.OCI_INDEX, mt.DOCKER_MANIFEST,
                             mt.DOCKER_MANIFEST_LIST])
#: Redirect hops followed for one request.
MAX_REDIRECTS = 5
#: Largest manifest accepted from an upstream (bytes); Distribution's own limit is 4 MiB.
MAX_MANIFEST_BYTES = 4 * 1024 * 1024
#: Size of the chunks a blob download yields.
BLOB_CHUNK_BYTES = 1024 * 1024
#: Pages of a tag listing followed before giving up (a loop guard, not a real limit).
MAX_TAG_PAGES = 1000
#: Tokens are renewed this many seconds before they expire.
TOKEN_MARGIN_S = 10.0
#: Token lifetime assumed when the token service does not say (the spec's default).
DEFAULT_TOKEN_LIFETIME_S = 60.0


class UpstreamError(Exception):
    """The upstream registry refused or failed a request; ``status`` is its HTTP status
    (``None`` when no answer came). Messages never contain credentials."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class UpstreamUnauthorized(UpstreamError):
    """The upstream refused the credentials (or their absence): 401/403."""


class UpstreamNotFound(UpstreamError):
    """No such repository, tag, manifest or blob upstream: 404."""


class UpstreamUnavailable(UpstreamError):
    """The upstream could not be reached, timed out, or answered 5xx/429."""


@dataclass(frozen=True)
class UpstreamSettings:
    """How to reach one upstream registry."""

    #: ``host[:port]`` of the registry, e.g. ``registry.local:5000``.
    registry: str
    username: str | None = None
    password: str | None = None
    #: Verify TLS certificates (``False``: accept any certificate).
    verify_tls: bool = True
    #: A CA bundle (PEM file) to verify with instead of the system's.
    ca_bundle: str | None = None
    #: Use plain HTTP instead of HTTPS.
    plain_http: bool = False
    #: ``http://proxy:3128`` for requests through an HTTP(S) proxy.
    proxy: str | None = None

    def __repr__(self) -> str:
        # The dataclass default would print the password.
        return (f"UpstreamSettings(registry={self.registry!r}, username={self.username!r}, "
                f"password={'***' if self.password else None}, verify_tls={self.verify_tls},"
                f" ca_bundle={self.ca_bundle!r}, plain_http={self.plain_http}, "
                f"proxy={_safe_url(self.proxy) if self.proxy else None!r})")


@dataclass(frozen=True)
class FetchedManifest:
    """A manifest as the upstream served it (bytes untouched)."""

    digest: str
    media_type: str
    content: bytes


@dataclass(frozen=True)
class BlobStream:
    """An open blob download: ``size`` from the upstream, ``chunks`` to iterate once."""

    digest: str
    size: int
    chunks: AsyncIterator[bytes]


_HOST_RE = re.compile(r"^(?:\[[0-9a-fA-F:.]+\]|[A-Za-z0-9.-]+)(?::[0-9]{1,5})?$")


def parse_upstream_reference(reference: str) -> tuple[str, str]:
    """Split ``host[:port]/path/name`` into ``(registry, repository)``; a reference
    without a registry host (``library/alpine``) is refused. Raises ValueError."""
    text = reference.strip()
    for prefix in ("https://", "http://", "docker://"):
        if text.startswith(prefix):
            text = text[len(prefix):]
            break
    host, sep, path = text.partition("/")
    if not sep or not path:
        raise ValueError(f"{reference[:200]!r} has no repository after the registry host")
    # Docker's rule: the first component names a registry only if it looks like a host.
    if not ("." in host or ":" in host or host == "localhost"):
        raise ValueError(
            f"{reference[:200]!r} does not start with a registry host "
            "(host[:port], e.g. registry.example.com/library/alpine)")
    if not _HOST_RE.fullmatch(host):
        raise ValueError(f"invalid registry host {host[:200]!r}")
    if len(path) > 255 or not NAME_RE.fullmatch(path):
        raise ValueError(f"invalid repository name {path[:200]!r}")
    return host, path


def _safe_url(url: str | httpx.URL) -> str:
    """``scheme://host[:port]/path`` of ``url``: no user info, no query string."""
    parts = urlsplit(str(url))
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{host}{port}{parts.path}"


def _origin(url: httpx.URL) -> tuple[str, str, int | None]:
    return (url.scheme, url.host, url.port)


def parse_challenge(header: str) -> tuple[str, dict[str, str]]:
    """``(scheme, params)`` of a ``WWW-Authenticate`` value (scheme lower-cased).

    Only the first challenge is read; quoted values may contain commas
    (``scope="repository:a:pull,push"``).
    """
    scheme, _, rest = header.strip().partition(" ")
    params: dict[str, str] = {}
    for match in re.finditer(r'([A-Za-z0-9_-]+)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^,\s]*))', rest):
        key = match.group(1).lower()
        value = match.group(2) if match.group(2) is not None else match.group(3)
        params.setdefault(key, value.replace('\\"', '"'))
    return scheme.lower(), params


def _error_detail(response: httpx.Response) -> str:
    """The OCI error codes of a (read) error body, for messages; never raw text."""
    try:
        body = response.json()
    except (ValueError, httpx.ResponseNotRead):
        return ""
    if not isinstance(body, dict) or not isinstance(body.get("errors"), list):
        return ""
    codes = [str(e.get("code"))[:40] for e in body["errors"][:3] if isinstance(e, dict)]
    return f" ({', '.join(codes)})" if codes else ""


def _failure(response: httpx.Response, what: str) -> UpstreamError:
    """The exception for a non-success answer."""
    status = response.status_code
    message = f"{what}: upstream answered {status}{_error_detail(response)}"
    if status in (401, 403):
        return UpstreamUnauthorized(message, status)
    if status == 404:
        return UpstreamNotFound(message, status)
    if status == 429 or status >= 500:
        return UpstreamUnavailable(message, status)
    return UpstreamError(message, status)


@dataclass
class _Token:
    value: str
    expires: float


def _system_and_public_trust() -> ssl.SSLContext:
    """The host's trust store (where operators add a private CA, e.g. with Debian's
    ``update-ca-certificates``, or name one with ``SSL_CERT_FILE``) plus the public CAs
    httpx ships with, so public registries verify even where the host has none."""
    context = ssl.create_default_context()
    context.load_verify_locations(cafile=certifi.where())
    return context


class UpstreamClient:
    """Talks to one upstream registry: anonymous, Basic or Bearer-token auth (the
    ``WWW-Authenticate`` challenge is answered once per repository and scope, tokens are
    reused until they expire), every request through ``policy``'s checked client."""

    def __init__(self, settings: UpstreamSettings, policy: OutboundPolicy, *,
                 timeout: httpx.Timeout | None = None) -> None:
        self.settings = settings
        self._policy = policy
        scheme = "http" if settings.plain_http else "https"
        self.base_url = f"{scheme}://{settings.registry}"
        # Fails early (OutboundRefused) for a malformed host; addresses are checked
        # on every request by the client's hook.
        policy.split(self.base_url)
        self._origin = _origin(httpx.URL(self.base_url))
        verify: ssl.SSLContext | bool
        if not settings.verify_tls:
            verify = False
        elif settings.ca_bundle:
            verify = ssl.create_default_context(cafile=settings.ca_bundle)
        else:
            verify = _system_and_public_trust()
        kwargs: dict[str, Any] = {"verify": verify, "follow_redirects": False,
                                  # Only the configured proxy; no proxies or netrc
                                  # credentials picked up from the environment.
                                  "trust_env": False}
        if settings.proxy:
            kwargs["proxy"] = settings.proxy
        if timeout is not None:
            kwargs["timeout"] = timeout
        self._http = policy.async_client(**kwargs)
        self._tokens: dict[str, _Token] = {}
        #: Set once the upstream answered with a Basic challenge.
        self._basic = False

    # --- lifecycle ----------------------------------------------------------------------
    async def aclose(self) -> None:
        """Close connections."""
        await self._http.aclose()

    async def __aenter__(self) -> UpstreamClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    # --- auth -------------------------------------------------------------------------
    def _basic_header(self) -> str | None:
        if self.settings.username is None:
            return None
        raw = f"{self.settings.username}:{self.settings.password or ''}".encode()
        return "Basic " + base64.b64encode(raw).decode()

    def _auth_header(self, scope: str) -> str | None:
        if self._basic:
            return self._basic_header()
        token = self._tokens.get(scope)
        if token is not None and token.expires > time.monotonic():
            return f"Bearer {token.value}"
        return None

    async def _answer_challenge(self, header: str, scope: str, what: str) -> None:
        """Get what the challenge asks for (a token for ``scope`` or Basic mode)."""
        scheme, params = parse_challenge(header)
        if scheme == "basic":
            if self.settings.username is None:
                raise UpstreamUnauthorized(f"{what}: the upstream requires credentials", 401)
            self._basic = True
            return
        if scheme != "bearer" or not params.get("realm"):
            raise UpstreamUnauthorized(f"{what}: unsupported authentication challenge "
                                       f"{scheme[:20]!r}", 401)
        realm = params["realm"]
        try:
            self._policy.split(realm)
        except OutboundRefused as exc:
            raise UpstreamUnavailable(f"{what}: token realm refused: {exc}") from None
        # The challenge's scope is what the upstream wants; ask for ours when absent.
        query = [("service", params["service"])] if params.get("service") else []
        wanted = params.get("scope") or scope
        query += [("scope", s) for s in wanted.split(" ") if s]
        headers = {"Accept": "application/json"}
        basic = self._basic_header()
        if basic is not None:
            headers["Authorization"] = basic
        separator = "&" if "?" in realm else "?"
        url = realm + (separator + urlencode(query) if query else "")
        response = await self._send("GET", url, headers, f"{what} (token request)")
        try:
            await response.aread()
        except httpx.TransportError as exc:
            raise UpstreamUnavailable(f"{what}: token request failed: "
                                      f"{type(exc).__name__}") from None
        finally:
            await response.aclose()
        if response.status_code != 200:
            if response.status_code in (400, 401, 403):
                raise UpstreamUnauthorized(
                    f"{what}: the upstream's token service refused "
                    f"{'the credentials' if basic else 'anonymous access'} "
                    f"({response.status_code})", response.status_code)
            raise _failure(response, f"{what} (token request)")
        try:
            body = response.json()
            value = body.get("token") or body.get("access_token")
            lifetime = float(body.get("expires_in") or DEFAULT_TOKEN_LIFETIME_S)
        except (ValueError, AttributeError, TypeError):
            value, lifetime = None, 0.0
        if not isinstance(value, str) or not value:
            raise UpstreamError(f"{what}: the upstream's token service gave no token")
        lifetime = max(lifetime - TOKEN_MARGIN_S, 1.0)
        self._tokens[scope] = _Token(value, time.monotonic() + lifetime)

    # --- requests ---------------------------------------------------------------------
    async def _send(self, method: str, url: str, headers: dict[str, str],
                    what: str) -> httpx.Response:
        """One request, streamed; transport failures become UpstreamUnavailable."""
        try:
            request = self._http.build_request(method, url, headers=headers)
            return await self._http.send(request, stream=True)
        except OutboundRefused as exc:
            raise UpstreamUnavailable(f"{what}: {exc}") from None
        except httpx.TimeoutException:
            raise UpstreamUnavailable(f"{what}: timed out talking to "
                                      f"{_safe_url(url)}") from None
        except (httpx.TransportError, ssl.SSLError) as exc:
            raise UpstreamUnavailable(
                f"{what}: cannot reach {_safe_url(url)}: {type(exc).__name__}: "
                f"{_scrub(str(exc))}") from None
        except httpx.InvalidURL as exc:
            raise UpstreamError(f"{what}: invalid URL: {_scrub(str(exc))}") from None

    async def _request(self, method: str, path: str, scope: str, *,
                       headers: dict[str, str] | None = None,
                       what: str) -> httpx.Response:
        """Send a request to the registry, answering one auth challenge and following
        redirects. Returns a *streamed* success response (the caller closes it);
        failures are read, closed and raised."""
        url = self.base_url + path
        for attempt in range(2):
            response = await self._follow(method, url, scope, headers or {}, what)
            if response.status_code != 401 or attempt == 1:
                break
            challenge = response.headers.get("WWW-Authenticate")
            await self._discard(response)
            if not challenge:
                raise UpstreamUnauthorized(f"{what}: upstream answered 401", 401)
            if self._auth_header(scope) is not None and not self._basic:
                # The token we sent was refused (expired or revoked): get a new one.
                self._tokens.pop(scope, None)
            elif self._basic:
                raise UpstreamUnauthorized(f"{what}: the upstream refused the credentials",
                                           401)
            await self._answer_challenge(challenge, scope, what)
        if response.is_success:
            return response
        await self._discard(response, read=True)
        raise _failure(response, what)

    async def _follow(self, method: str, url: str, scope: str, headers: dict[str, str],
                      what: str) -> httpx.Response:
        """Send, following redirects; Authorization only goes to the registry itself."""
        current = httpx.URL(url)
        for _ in range(MAX_REDIRECTS + 1):
            hop_headers = dict(headers)
            if _origin(current) == self._origin:
                auth = self._auth_header(scope)
                if auth is not None:
                    hop_headers["Authorization"] = auth
            response = await self._send(method, str(current), hop_headers, what)
            if response.status_code not in (301, 302, 303, 307, 308):
                return response
            location = response.headers.get("Location")
            await self._discard(response)
            if not location:
                raise UpstreamError(f"{what}: redirect without a Location",
                                    response.status_code)
            current = httpx.URL(urljoin(str(current), location))
            if current.scheme not in ("http", "https"):
                raise UpstreamError(f"{what}: redirect to a non-HTTP URL")
            if response.status_code == 303 and method != "HEAD":
                method = "GET"
        raise UpstreamUnavailable(f"{what}: more than {MAX_REDIRECTS} redirects")

    @staticmethod
    async def _discard(response: httpx.Response, read: bool = False) -> None:
        """Close a response (reading a small error body first when ``read``)."""
        try:
            if read:
                length = int(response.headers.get("Content-Length") or 0)
                if length <= 64 * 1024:
                    await response.aread()
        except (httpx.HTTPError, ValueError):
            pass
        finally:
            await response.aclose()

    # --- API ----------------------------------------------------------------------------
    async def ping(self) -> None:
        """``GET /v2/`` (with auth); raises an :class:`UpstreamError` subclass."""
        response = await self._request("GET", "/v2/", "", what="checking the upstream")
        await self._discard(response)

    async def list_tags(self, repository: str, *, page_size: int | None = None) -> list[str]:
        """Every tag of ``repository`` (follows ``Link`` pagination; ``page_size`` asks
        for pages of that many tags with ``?n=``)."""
        scope = _pull_scope(repository)
        what = f"listing tags of {repository}"
        query = f"?n={int(page_size)}" if page_size is not None else ""
        path: str | None = f"/v2/{repository}/tags/list{query}"
        tags: list[str] = []
        pages = 0
        while path is not None and pages < MAX_TAG_PAGES:
            pages += 1
            response = await self._request("GET", path, scope,
                                           headers={"Accept": "application/json"}, what=what)
            try:
                body = await self._read_limited(response, MAX_MANIFEST_BYTES, what)
            finally:
                await response.aclose()
            try:
                document = json.loads(body)
                page = document.get("tags") or []
            except (ValueError, AttributeError):
                raise UpstreamError(f"{what}: the upstream's answer is not a tag list"
                                    ) from None
            tags.extend(str(tag) for tag in page if isinstance(tag, str))
            path = _next_link(response.headers.get("Link"), self.base_url)
        return tags

    async def get_manifest(self, repository: str, reference: str) -> FetchedManifest:
        """The manifest for a tag or digest, asking for every OCI and Docker schema 2
        type. The digest is computed from the bytes; when ``reference`` is a digest, a
        mismatch raises :class:`UpstreamError`."""
        what = f"fetching manifest {repository}:{reference[:80]}"
        algorithm = _reference_algorithm(reference, what)
        response = await self._request(
            "GET", f"/v2/{repository}/manifests/{reference}", _pull_scope(repository),
            headers={"Accept": MANIFEST_ACCEPT}, what=what)
        try:
            content = await self._read_limited(response, MAX_MANIFEST_BYTES, what)
        finally:
            await response.aclose()
        digest = digest_of(content, algorithm or "sha256")
        if algorithm is not None and digest != reference:
            raise UpstreamError(f"{what}: the upstream's manifest has digest {digest}")
        return FetchedManifest(digest, _media_type(response, content), content)

    async def head_manifest(self, repository: str, reference: str) -> tuple[str, str] | None:
        """``(digest, media_type)`` of a tag or digest via ``HEAD``, ``None`` when the
        upstream has no such manifest."""
        what = f"checking manifest {repository}:{reference[:80]}"
        algorithm = _reference_algorithm(reference, what)
        try:
            response = await self._request(
                "HEAD", f"/v2/{repository}/manifests/{reference}", _pull_scope(repository),
                headers={"Accept": MANIFEST_ACCEPT}, what=what)
        except UpstreamNotFound:
            return None
        await response.aclose()
        digest = response.headers.get("Docker-Content-Digest", "").strip()
        content_type = response.headers.get("Content-Type", "").split(";", 1)[0].strip()
        valid = True
        try:
            parse_digest(digest)
        except InvalidDigest:
            valid = False
        if (not valid or content_type not in mt.SUPPORTED_MANIFEST_TYPES
                or (algorithm is not None and digest != reference)):
            # Some registries answer HEAD without the digest (or a generic type): ask
            # for the bytes instead.
            try:
                fetched = await self.get_manifest(repository, reference)
            except UpstreamNotFound:
                return None
            return fetched.digest, fetched.media_type
        return digest, content_type

    async def head_blob(self, repository: str, digest: str) -> int | None:
        """The blob's size via ``HEAD`` (``-1``: not given), ``None`` when the upstream
        has no such blob in ``repository``."""
        what = f"checking blob {digest[:80]} of {repository}"
        try:
            parse_digest(digest)
        except InvalidDigest as exc:
            raise UpstreamError(f"{what}: {exc}") from None
        try:
            response = await self._request(
                "HEAD", f"/v2/{repository}/blobs/{digest}", _pull_scope(repository),
                headers={"Accept-Encoding": "identity"}, what=what)
        except UpstreamNotFound:
            return None
        await response.aclose()
        try:
            return int(response.headers.get("Content-Length", "-1"))
        except ValueError:
            return -1

    async def open_blob(self, repository: str, digest: str) -> BlobStream:
        """Start a blob download (redirects to storage followed, each hop checked by the
        policy). The caller must consume or close ``chunks``; the bytes are not verified
        here (the registry verifies the digest when it stores them).

        ``chunks`` is an async generator: ``await stream.chunks.aclose()`` releases the
        connection when the caller stops early. ``size`` is ``-1`` when the upstream
        did not send a length.
        """
        what = f"fetching blob {digest[:80]} of {repository}"
        try:
            parse_digest(digest)
        except InvalidDigest as exc:
            raise UpstreamError(f"{what}: {exc}") from None
        # identity: the bytes must be the blob's, not a transfer-compressed form.
        response = await self._request(
            "GET", f"/v2/{repository}/blobs/{digest}", _pull_scope(repository),
            headers={"Accept-Encoding": "identity"}, what=what)
        try:
            size = int(response.headers.get("Content-Length", "-1"))
        except ValueError:
            size = -1
        return BlobStream(digest, size, _chunks(response, what))

    # --- helpers ----------------------------------------------------------------------
    @staticmethod
    async def _read_limited(response: httpx.Response, limit: int, what: str) -> bytes:
        parts: list[bytes] = []
        total = 0
        try:
            async for chunk in response.aiter_bytes():
                total += len(chunk)
                if total > limit:
                    raise UpstreamError(f"{what}: the upstream's answer exceeds {limit} bytes")
                parts.append(chunk)
        except httpx.TransportError as exc:
            raise UpstreamUnavailable(f"{what}: connection lost: {type(exc).__name__}"
                                      ) from None
        return b"".join(parts)


async def _chunks(response: httpx.Response, what: str) -> AsyncGenerator[bytes, None]:
    """The body of ``response`` in chunks; the response is closed however this ends."""
    try:
        async for chunk in response.aiter_bytes(BLOB_CHUNK_BYTES):
            yield chunk
    except httpx.TransportError as exc:
        raise UpstreamUnavailable(f"{what}: connection lost: {type(exc).__name__}") from None
    finally:
        with contextlib.suppress(Exception):
            await response.aclose()


def _pull_scope(repository: str) -> str:
    return f"repository:{repository}:pull"


def _reference_algorithm(reference: str, what: str) -> str | None:
    """The digest algorithm when ``reference`` is a digest, ``None`` for a tag."""
    if ":" not in reference:
        return None
    try:
        return parse_digest(reference)[0]
    except InvalidDigest as exc:
        raise UpstreamError(f"{what}: {exc}") from None


def _media_type(response: httpx.Response, content: bytes) -> str:
    """The manifest's type: the Content-Type if it names a manifest, else the body's."""
    header = response.headers.get("Content-Type", "").split(";", 1)[0].strip().lower()
    if header in mt.SUPPORTED_MANIFEST_TYPES or header in mt.LEGACY_MANIFEST_TYPES:
        return header
    try:
        document = json.loads(content)
    except ValueError:
        return header or "application/octet-stream"
    if isinstance(document, dict):
        body_type = document.get("mediaType")
        if isinstance(body_type, str) and body_type:
            return body_type
        if "manifests" in document:
            return mt.OCI_INDEX
        if "config" in document:
            return mt.OCI_MANIFEST
    return header or "application/octet-stream"


def _next_link(header: str | None, base_url: str) -> str | None:
    """The path (with query) of a ``Link: <...>; rel="next"`` header, same host only."""
    if not header:
        return None
    match = re.search(r'<([^>]*)>\s*;\s*rel="?next"?', header)
    if match is None:
        return None
    target = httpx.URL(urljoin(base_url + "/", match.group(1)))
    if _origin(target) != _origin(httpx.URL(base_url)):
        return None
    query = target.query.decode()
    return target.path + (f"?{query}" if query else "")


def _scrub(text: str) -> str:
    """Drop anything that looks like user info or a query string from a message."""
    text = re.sub(r"//[^/@\s]*@", "//", text)
    return re.sub(r"\?\S*", "", text)[:300]
