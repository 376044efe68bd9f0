"""Pure rules of repository mirroring: tag globs, dates, the schedule, field checks.

No I/O here: the API service (:mod:`portside.services.mirror_config`), the scheduler
and the sync share these, and unit tests cover them without a database.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta

__all__ = [
    "MAX_PATTERNS",
    "MirrorRuleError",
    "format_date",
    "matching_tags",
    "next_start_date",
    "parse_architectures",
    "parse_date",
    "parse_globs",
    "tag_matches",
]

#: Most glob patterns one ``root_rule`` may hold.
MAX_PATTERNS = 100
#: Longest accepted glob pattern (a tag is at most 128 characters).
MAX_PATTERN_LENGTH = 256
#: Characters of a tag, plus fnmatch's ``* ? [ ] !``.
_GLOB_CHARS = re.compile(r"^[A-Za-z0-9_.\-*?\[\]!]+$")
_ARCHITECTURE = re.compile(r"^[a-z0-9_]{1,32}$")
#: Quay's date format in the mirror API (``2024-01-31T12:00:00Z``).
DATE_FORMAT = "%Y-%m-%dT%H:%M:%SZ"


class MirrorRuleError(ValueError):
    """A mirror setting that cannot be accepted; the message is shown to API clients."""


def parse_globs(rule_value: object) -> list[str]:
    """The glob patterns of Quay's ``tag_glob_csv`` rule value: a list of strings, each
    of which may itself hold comma-separated patterns. Raises :class:`MirrorRuleError`."""
    if not isinstance(rule_value, list):
        raise MirrorRuleError("root_rule.rule_value must be a list of tag patterns.")
    patterns: list[str] = []
    for item in rule_value:
        if not isinstance(item, str):
            raise MirrorRuleError("root_rule.rule_value must hold strings only.")
        for part in item.split(","):
            pattern = part.strip()
            if not pattern:
                continue
            _check_glob(pattern)
            if pattern not in patterns:
                patterns.append(pattern)
    if not patterns:
        raise MirrorRuleError("root_rule.rule_value must hold at least one tag pattern.")
    if len(patterns) > MAX_PATTERNS:
        raise MirrorRuleError(f"root_rule.rule_value holds more than {MAX_PATTERNS} patterns.")
    return patterns


def _check_glob(pattern: str) -> None:
    shown = pattern[:80]
    if len(pattern) > MAX_PATTERN_LENGTH:
        raise MirrorRuleError(f"Tag pattern {shown!r}... is longer than {MAX_PATTERN_LENGTH}.")
    if not _GLOB_CHARS.match(pattern):
        raise MirrorRuleError(
            f"Invalid tag pattern {shown!r}: use tag characters (letters, digits, '_', '.', "
            "'-') and the wildcards '*', '?' and '[...]'."
        )
    # fnmatch reads an unclosed "[" as a literal; a user meant a set: refuse it.
    depth = 0
    for char in pattern:
        if char == "[":
            if depth:
                raise MirrorRuleError(f"Invalid tag pattern {shown!r}: nested '['.")
            depth = 1
        elif char == "]" and depth:
            depth = 0
        elif char == "]":
            raise MirrorRuleError(f"Invalid tag pattern {shown!r}: ']' without '['.")
    if depth:
        raise MirrorRuleError(f"Invalid tag pattern {shown!r}: '[' without ']'.")
    if "[]" in pattern or "[!]" in pattern:
        raise MirrorRuleError(f"Invalid tag pattern {shown!r}: empty character set.")


def tag_matches(tag: str, patterns: Iterable[str]) -> bool:
    """True if ``tag`` matches any pattern (case-sensitive, like tags)."""
    return any(fnmatch.fnmatchcase(tag, pattern) for pattern in patterns)


def matching_tags(tags: Iterable[str], patterns: list[str]) -> list[str]:
    """The tags matching any pattern, sorted, without duplicates."""
    return sorted({tag for tag in tags if tag_matches(tag, patterns)})


def parse_date(value: object, field: str = "sync_start_date") -> datetime:
    """An ISO 8601 date with a time zone (``Z`` or an offset), as an aware UTC datetime.
    Raises :class:`MirrorRuleError`."""
    if not isinstance(value, str) or len(value) > 64:
        raise MirrorRuleError(f"{field} must be a date such as 2024-01-31T12:00:00Z.")
    text = value.strip()
    if text.endswith(("Z", "z")):
        text = text[:-1] + "+00:00"
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        raise MirrorRuleError(
            f"{field} {value[:64]!r} is not an ISO 8601 date such as 2024-01-31T12:00:00Z."
        ) from None
    if parsed.tzinfo is None:
        raise MirrorRuleError(f"{field} needs a time zone, e.g. 2024-01-31T12:00:00Z.")
    if not 1970 <= parsed.year <= 9000:
        raise MirrorRuleError(f"{field} must lie between the years 1970 and 9000.")
    return parsed.astimezone(UTC)


def format_date(value: datetime | None) -> str | None:
    """Quay's rendering of a date (UTC, seconds, ``Z``); naive values are taken as UTC
    (SQLite returns them without a zone)."""
    if value is None:
        return None
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.astimezone(UTC).strftime(DATE_FORMAT)


def as_utc(value: datetime) -> datetime:
    """``value`` as an aware UTC datetime (SQLite hands back naive ones)."""
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def next_start_date(previous: datetime | None, interval_s: int, now: datetime) -> datetime:
    """When the sync after one due at ``previous`` is due: ``previous`` plus whole
    intervals, the first such slot after ``now`` (missed slots are skipped, not caught
    up on). A ``previous`` still in the future stays (a sync-now ran before its slot)."""
    if previous is None:
        return now + timedelta(seconds=interval_s)
    previous = as_utc(previous)
    if previous > now:
        return previous
    interval = max(1, interval_s)
    missed = int((now - previous).total_seconds() // interval) + 1
    return previous + timedelta(seconds=missed * interval)


def parse_architectures(value: object) -> list[str]:
    """``architecture_filter``: a list of architecture names (``amd64``, ``arm64``...);
    empty keeps every architecture. Raises :class:`MirrorRuleError`."""
    if value is None:
        return []
    if not isinstance(value, list) or len(value) > 32:
        raise MirrorRuleError("architecture_filter must be a list of architecture names.")
    result: list[str] = []
    for item in value:
        if not isinstance(item, str) or not _ARCHITECTURE.match(item):
            raise MirrorRuleError(
                f"Invalid architecture {str(item)[:40]!r} in architecture_filter "
                "(e.g. amd64, arm64, ppc64le, s390x)."
            )
        if item not in result:
            result.append(item)
    return result
