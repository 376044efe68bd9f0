"""Parsing and structural validation of image manifests and indexes.

Manifests are stored byte for byte: this module only *reads* the JSON to learn what a
manifest references; it never re-serialises it, because the digest is of the exact bytes.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from portside.oci import mediatypes as mt
from portside.oci.digest import InvalidDigest, parse_digest


class ManifestInvalid(ValueError):
    """The manifest is malformed or inconsistent (``MANIFEST_INVALID``)."""


class ManifestUnsupported(ValueError):
    """The manifest format is one Portside does not accept (``UNSUPPORTED``)."""


@dataclass(frozen=True)
class Descriptor:
    """A content descriptor: what a manifest says about something it references."""

    media_type: str
    digest: str
    size: int
    artifact_type: str | None = None
    annotations: dict[str, str] | None = None
    platform: dict[str, Any] | None = None
    urls: tuple[str, ...] = ()


@dataclass(frozen=True)
class ParsedManifest:
    """What Portside needs to know about a manifest's content."""

    media_type: str
    config: Descriptor | None = None
    layers: tuple[Descriptor, ...] = ()
    children: tuple[Descriptor, ...] = ()
    subject: Descriptor | None = None
    artifact_type: str | None = None
    annotations: dict[str, str] = field(default_factory=dict)

    @property
    def is_index(self) -> bool:
        """True for OCI indexes and Docker manifest lists."""
        return self.media_type in mt.INDEX_TYPES

    @property
    def effective_artifact_type(self) -> str | None:
        """``artifactType``, falling back to the config media type as the referrers API does."""
        if self.artifact_type:
            return self.artifact_type
        return self.config.media_type if self.config else None

    def blob_descriptors(self) -> tuple[Descriptor, ...]:
        """Config and layers that must be stored in the registry (foreign layers excluded)."""
        blobs = [self.config] if self.config else []
        blobs += [d for d in self.layers if d.media_type not in mt.NON_DISTRIBUTABLE_LAYER_TYPES]
        return tuple(blobs)


def _string_map(value: Any, where: str) -> dict[str, str] | None:
    if value is None:
        return None
    if not isinstance(value, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in value.items()
    ):
        raise ManifestInvalid(f"{where}: annotations must be a map of strings")
    return value


def parse_descriptor(value: Any, where: str) -> Descriptor:
    """Validate one descriptor object; ``where`` names it in error messages."""
    if not isinstance(value, dict):
        raise ManifestInvalid(f"{where}: descriptor must be an object")
    media_type = value.get("mediaType")
    if not isinstance(media_type, str) or not media_type:
        raise ManifestInvalid(f"{where}: mediaType must be a non-empty string")
    digest = value.get("digest")
    if not isinstance(digest, str):
        raise ManifestInvalid(f"{where}: digest must be a string")
    try:
        parse_digest(digest)
    except InvalidDigest as exc:
        raise ManifestInvalid(f"{where}: {exc}") from None
    size = value.get("size")
    if isinstance(size, bool) or not isinstance(size, int) or size < 0:
        raise ManifestInvalid(f"{where}: size must be a non-negative integer")
    urls = value.get("urls") or []
    if not isinstance(urls, list) or not all(isinstance(u, str) for u in urls):
        raise ManifestInvalid(f"{where}: urls must be a list of strings")
    artifact_type = value.get("artifactType")
    if artifact_type is not None and not isinstance(artifact_type, str):
        raise ManifestInvalid(f"{where}: artifactType must be a string")
    platform = value.get("platform")
    if platform is not None and not isinstance(platform, dict):
        raise ManifestInvalid(f"{where}: platform must be an object")
    return Descriptor(
        media_type=media_type,
        digest=digest,
        size=size,
        artifact_type=artifact_type,
        annotations=_string_map(value.get("annotations"), where),
        platform=platform,
        urls=tuple(urls),
    )


def _effective_media_type(document: dict[str, Any], content_type: str | None) -> str:
    """Decide the manifest's media type from its body and the request's Content-Type."""
    body_type = document.get("mediaType")
    if body_type is not None and not isinstance(body_type, str):
        raise ManifestInvalid("mediaType must be a string")
    header_type = (content_type or "").split(";", 1)[0].strip().lower() or None
    if body_type and header_type and header_type in mt.SUPPORTED_MANIFEST_TYPES | (
        mt.LEGACY_MANIFEST_TYPES
    ) and header_type != body_type:
        raise ManifestInvalid(
            f"Content-Type {header_type!r} does not match the manifest's mediaType {body_type!r}"
        )
    chosen = body_type or header_type
    if chosen in mt.SUPPORTED_MANIFEST_TYPES or chosen in mt.LEGACY_MANIFEST_TYPES:
        return chosen
    # OCI manifests may omit mediaType; fall back on their shape.
    if body_type is None:
        if "manifests" in document:
            return mt.OCI_INDEX
        if "config" in document:
            return mt.OCI_MANIFEST
    raise ManifestUnsupported(f"unsupported manifest media type {chosen!r}")


def parse_manifest(raw: bytes, content_type: str | None) -> ParsedManifest:
    """Parse and validate manifest bytes as received in a ``PUT``.

    Raises :class:`ManifestInvalid` or :class:`ManifestUnsupported`.
    """
    try:
        document = json.loads(raw)
    except (UnicodeDecodeError, ValueError) as exc:
        raise ManifestInvalid(f"manifest is not valid JSON: {exc}") from None
    except RecursionError:
        # A few kilobytes of "[[[[..." exhaust the parser's stack; no manifest nests so deep.
        raise ManifestInvalid("manifest JSON is nested too deeply") from None
    if not isinstance(document, dict):
        raise ManifestInvalid("manifest must be a JSON object")
    schema_version = document.get("schemaVersion")
    if schema_version == 1:
        raise ManifestUnsupported("Docker schema 1 manifests are not supported; push schema 2")
    media_type = _effective_media_type(document, content_type)
    if media_type in mt.LEGACY_MANIFEST_TYPES:
        raise ManifestUnsupported("Docker schema 1 manifests are not supported; push schema 2")
    if schema_version != 2 or isinstance(schema_version, bool):
        raise ManifestInvalid("schemaVersion must be 2")
    artifact_type = document.get("artifactType")
    if artifact_type is not None and (not isinstance(artifact_type, str) or not artifact_type):
        raise ManifestInvalid("artifactType must be a non-empty string")
    subject = None
    if document.get("subject") is not None:
        subject = parse_descriptor(document["subject"], "subject")
    annotations = _string_map(document.get("annotations"), "manifest") or {}

    if media_type in mt.INDEX_TYPES:
        children = document.get("manifests")
        if not isinstance(children, list):
            raise ManifestInvalid("index must have a 'manifests' list")
        return ParsedManifest(
            media_type=media_type,
            children=tuple(
                parse_descriptor(c, f"manifests[{i}]") for i, c in enumerate(children)
            ),
            subject=subject,
            artifact_type=artifact_type,
            annotations=annotations,
        )

    if "config" not in document:
        raise ManifestInvalid("image manifest must have a 'config' descriptor")
    config = parse_descriptor(document["config"], "config")
    layers = document.get("layers", [])
    if not isinstance(layers, list):
        raise ManifestInvalid("'layers' must be a list")
    if media_type == mt.DOCKER_MANIFEST and artifact_type is not None:
        raise ManifestInvalid("artifactType is not allowed in a Docker manifest")
    return ParsedManifest(
        media_type=media_type,
        config=config,
        layers=tuple(parse_descriptor(layer, f"layers[{i}]") for i, layer in enumerate(layers)),
        subject=subject,
        artifact_type=artifact_type,
        annotations=annotations,
    )
