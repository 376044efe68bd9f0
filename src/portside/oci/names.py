"""Repository name and tag grammar from the OCI Distribution Specification."""

from __future__ import annotations

import re

#: ``<name>`` grammar: path components of lower-case alphanumerics with separators.
NAME_RE = re.compile(
    r"^[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*(?:/[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*)*$"
)
#: ``<reference>`` as a tag: up to 128 characters.
TAG_RE = re.compile(r"^[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}$")

#: Docker clients put the hostname in front; the whole name must stay reasonably short.
MAX_NAME_LENGTH = 255


class InvalidName(ValueError):
    """A repository name that breaks the grammar."""


def validate_repository_name(name: str) -> tuple[str, str]:
    """Validate a full repository name and split it into ``(namespace, repository)``.

    Portside names are ``<namespace>/<repository>`` where the repository part may itself
    contain slashes (``org/team/app``); a single component has no namespace and is refused.
    """
    if len(name) > MAX_NAME_LENGTH:
        raise InvalidName(f"repository name longer than {MAX_NAME_LENGTH} characters")
    # fullmatch: with match, "$" would also accept a trailing newline ("app\n").
    if not NAME_RE.fullmatch(name):
        raise InvalidName(f"invalid repository name {name[:100]!r}")
    if "/" not in name:
        raise InvalidName(
            f"repository name {name!r} has no namespace; use <namespace>/<repository>"
        )
    namespace, repository = name.split("/", 1)
    return namespace, repository


def is_valid_tag(tag: str) -> bool:
    """True if ``tag`` matches the spec's tag grammar."""
    return bool(TAG_RE.fullmatch(tag))


NAMESPACE_RE = re.compile(r"^[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*$")
USERNAME_MIN, USERNAME_MAX = 2, 255


def is_valid_namespace(name: str) -> bool:
    """True if ``name`` can be a user or organization namespace."""
    return USERNAME_MIN <= len(name) <= USERNAME_MAX and bool(NAMESPACE_RE.fullmatch(name))
