"""What "active" means for a tag row, tag expiry, and the ``quay.expires-after`` label.

A tag row is **active** when its lifetime has not ended (``lifetime_end_ms IS NULL``)
and it has not expired (``expiration_ms`` is unset or still in the future). A row whose
``expiration_ms`` has passed is served by nobody; garbage collection later ends it at
that time (``lifetime_end_ms = expiration_ms``), and until then readers show it as ended
at its expiration (:func:`shown_end_ms`). Every reader of tags (``/v2`` manifest and tag
list, the tag API, repository views, garbage collection) uses :func:`active_clause` so
they all agree.

The namespaces' time-machine windows (how long history stays restorable) are here too.
This module stays below the manifest layer, so :mod:`portside.services.manifests` (the
``/v2`` hot path) and :mod:`portside.services.organizations` can use it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sqlalchemy import ColumnElement, and_, or_, select, update
from sqlalchemy.orm import Session

from portside.auth.permissions import Subject
from portside.config.durations import parse_duration
from portside.db.models import ManifestLabel, Namespace, Tag
from portside.services.audit import record

if TYPE_CHECKING:
    from portside.config import PortsideConfig

__all__ = [
    "EXPIRES_AFTER_LABEL",
    "WindowInvalid",
    "WindowPolicy",
    "active_clause",
    "end_lapsed",
    "expires_after_seconds",
    "history_clause",
    "is_lapsed",
    "label_expiry_s",
    "set_namespace_window",
    "shown_end_ms",
    "window_of",
]

#: The image label whose duration (``2w``, ``12h``, ...) sets a pushed tag's expiry.
EXPIRES_AFTER_LABEL = "quay.expires-after"


def active_clause(now: Any) -> ColumnElement[bool]:
    """The SQL condition "this tag row is active at ``now``" (milliseconds).

    ``now`` is an ``int`` or a :func:`~sqlalchemy.bindparam` (prebuilt statements bind
    the time per execution, so the hot path needs no extra query).
    """
    return and_(
        Tag.lifetime_end_ms.is_(None), or_(Tag.expiration_ms.is_(None), Tag.expiration_ms > now)
    )


def history_clause(now: Any) -> ColumnElement[bool]:
    """The SQL condition "this tag row is history at ``now``": ended, or expired and
    waiting for garbage collection to end it (the negation of :func:`active_clause`)."""
    return or_(Tag.lifetime_end_ms.is_not(None), Tag.expiration_ms <= now)


def is_lapsed(lifetime_end_ms: int | None, expiration_ms: int | None, now: int) -> bool:
    """True for a row that was not ended but whose expiry has passed."""
    return lifetime_end_ms is None and expiration_ms is not None and expiration_ms <= now


def shown_end_ms(lifetime_end_ms: int | None, expiration_ms: int | None) -> int | None:
    """When a row's lifetime ends as readers see it: its recorded end; for an active row
    its future expiry (Quay shows an expiring tag's end in advance); for an expired row
    that garbage collection has not ended yet, its expiry. ``None``: open-ended."""
    if lifetime_end_ms is not None:
        return lifetime_end_ms
    return expiration_ms


def end_lapsed(session: Session, tag_id: int, expiration_ms: int) -> None:
    """End an expired row at its expiry, as garbage collection would.

    Needed before a new row of the same name starts: the unique index on active names
    only counts rows with ``lifetime_end_ms IS NULL``.
    """
    session.execute(
        update(Tag)
        .where(Tag.id == tag_id, Tag.lifetime_end_ms.is_(None))
        .values(lifetime_end_ms=expiration_ms)
    )


def expires_after_seconds(value: str | None) -> int | None:
    """The seconds of a ``quay.expires-after`` value (``None`` if absent or invalid:
    a bad label never fails a push, it is ignored)."""
    if not value:
        return None
    try:
        seconds = int(parse_duration(value.strip()).total_seconds())
    except ValueError:
        return None
    return seconds if seconds > 0 else None


def label_expiry_s(session: Session, manifest_id: int) -> int | None:
    """The expiry a manifest's ``quay.expires-after`` label asks for, in seconds."""
    values = session.scalars(
        select(ManifestLabel.value)
        .where(ManifestLabel.manifest_id == manifest_id, ManifestLabel.key == EXPIRES_AFTER_LABEL)
        .order_by(ManifestLabel.id.desc())
        .limit(1)
    )
    return expires_after_seconds(values.first())


# --- time-machine windows ---------------------------------------------------------------


class WindowInvalid(ValueError):
    """A time-machine window the registry does not offer (or lets nobody choose)."""


@dataclass(frozen=True)
class WindowPolicy:
    """What the registry allows for time-machine windows (from the config)."""

    #: ``DEFAULT_TAG_EXPIRATION`` in seconds: the window of namespaces that chose none.
    default_s: int
    #: ``TAG_EXPIRATION_OPTIONS`` in seconds.
    options_s: Sequence[int]
    #: ``FEATURE_CHANGE_TAG_EXPIRATION``: namespaces may choose, tags may get an expiry.
    changeable: bool

    @classmethod
    def from_config(cls, config: PortsideConfig) -> WindowPolicy:
        """The policy the config sets."""
        return cls(
            config.default_tag_expiration_s,
            tuple(config.tag_expiration_options_s),
            config.FEATURE_CHANGE_TAG_EXPIRATION,
        )

    def check(self, seconds: Any) -> int:
        """``seconds`` as a window a namespace may choose; :class:`WindowInvalid`
        (with a message for the caller) otherwise."""
        if not self.changeable:
            raise WindowInvalid(
                "Changing the tag expiration is disabled on this registry "
                "(FEATURE_CHANGE_TAG_EXPIRATION)"
            )
        if (
            isinstance(seconds, bool)
            or not isinstance(seconds, int)
            or seconds not in self.options_s
        ):
            allowed = ", ".join(str(option) for option in self.options_s)
            raise WindowInvalid(
                f"Invalid tag expiration option: tag_expiration_s must be "
                f"one of {allowed} (seconds)"
            )
        return seconds


def window_of(session: Session, namespace_id: int, default_s: int) -> int:
    """The namespace's time-machine window in seconds."""
    stored = session.scalar(select(Namespace.tag_expiration_s).where(Namespace.id == namespace_id))
    return stored if stored is not None else default_s


def set_namespace_window(
    session: Session,
    namespace: Namespace,
    seconds: int,
    performer: Subject | None,
    ip: str | None = None,
) -> None:
    """Store a namespace's window (already checked against the options) and record
    ``change_tag_expiration`` for it when it changes, in the caller's transaction."""
    if namespace.tag_expiration_s == seconds:
        return
    record(
        session,
        "change_tag_expiration",
        performer=performer,
        namespace_id=namespace.id,
        ip=ip,
        metadata={
            "namespace": namespace.name,
            "tag_expiration_s": seconds,
            "old_tag_expiration_s": namespace.tag_expiration_s,
        },
    )
    namespace.tag_expiration_s = seconds
    session.flush()
