"""Tags over time: expiry set through the API, restoring a tag from its history (Quay's
"time machine"), removing history for good, and each namespace's time-machine window.

A namespace keeps the history of its tags (moved, deleted and expired lifetimes) for its
window, ``Namespace.tag_expiration_s`` or the registry's ``DEFAULT_TAG_EXPIRATION``;
within it a tag can be restored to any manifest it pointed at. Garbage collection
deletes history past the window. What "active" means is in
:mod:`portside.services.tag_history`.
"""

from __future__ import annotations

from email.utils import formatdate

from sqlalchemy import delete, func, select, update
from sqlalchemy.exc import IntegrityError

from portside.auth.permissions import Action, Policy, Subject
from portside.db.engine import Database
from portside.db.models import Manifest, Namespace, Repository, Tag, User
from portside.oci.names import is_valid_tag
from portside.services.audit import AuditContext, record_for_repository
from portside.services.immutability import TagImmutable, is_immutable
from portside.services.labels import check_manifest_digest
from portside.services.manifests import lock_repository, now_ms, point_tag
from portside.services.repository_access import authorize_repository
from portside.services.repository_admin import InvalidInput, NotFound
from portside.services.tag_history import (
    WindowInvalid,
    WindowPolicy,
    active_clause,
    history_clause,
    set_namespace_window,
    window_of,
)
from portside.services.tags import TAG_NAME_ERROR

__all__ = ["TimeMachineService"]

#: Latest accepted expiry (the end of year 9999), in seconds since the epoch.
MAX_EXPIRATION_S = 253_402_300_799


def _check_tag(tag: str) -> None:
    if not is_valid_tag(tag):
        raise InvalidInput(TAG_NAME_ERROR)


def _date(ms: int | None) -> str | None:
    return formatdate(ms / 1000) if ms is not None else None


class TimeMachineService:
    """Tag expiry, restore and permanent deletion on behalf of a subject, and the
    namespace windows."""

    def __init__(self, db: Database, policy: Policy, windows: WindowPolicy) -> None:
        self._db = db
        self._policy = policy
        self._windows = windows

    # --- tag expiry --------------------------------------------------------------------
    def check_expiration(self, expiration: float | None) -> int | None:
        """The expiry in ms for ``PUT .../tag/{tag}`` ``{"expiration": seconds}``:
        ``None`` clears it; a time that is not in the future is refused."""
        if not self._windows.changeable:
            raise InvalidInput(
                "Changing the tag expiration is disabled on this registry "
                "(FEATURE_CHANGE_TAG_EXPIRATION)"
            )
        if expiration is None:
            return None
        if expiration != expiration or expiration > MAX_EXPIRATION_S:  # NaN or too far
            raise InvalidInput("Invalid expiration: use a time in seconds since the epoch")
        expiration_ms = int(expiration * 1000)
        if expiration_ms <= now_ms():
            raise InvalidInput("Invalid expiration: the time must be in the future")
        return expiration_ms

    def change_expiration(
        self,
        subject: Subject,
        namespace: str,
        name: str,
        tag: str,
        expiration_ms: int | None,
        ip: str | None = None,
    ) -> None:
        """Set (or with ``None`` clear) the expiry of the active tag ``tag`` (writers).

        Records Quay's ``change_tag_expiration`` unless nothing was set before or after.
        """
        _check_tag(tag)
        with self._db.session() as session:
            repository = authorize_repository(
                session, subject, namespace, name, Action.PUSH, self._policy
            )
            lock_repository(session, repository.id)
            now = now_ms()
            current = session.execute(
                select(Tag.id, Tag.expiration_ms).where(
                    Tag.repository_id == repository.id,
                    Tag.name == tag,
                    active_clause(now),
                )
            ).first()
            if current is None:
                raise NotFound(f"Tag {tag} not found.")
            if is_immutable(session, repository.id, tag):
                raise TagImmutable(tag)
            session.execute(
                update(Tag).where(Tag.id == current.id).values(expiration_ms=expiration_ms)
            )
            if current.expiration_ms is None and expiration_ms is None:
                return
            record_for_repository(
                session,
                "change_tag_expiration",
                repository.id,
                AuditContext(subject, ip),
                tag=tag,
                expiration_date=_date(expiration_ms),
                old_expiration_date=_date(current.expiration_ms),
            )

    # --- restore -----------------------------------------------------------------------
    def restore(
        self,
        subject: Subject,
        namespace: str,
        name: str,
        tag: str,
        manifest_digest: str,
        ip: str | None = None,
    ) -> None:
        """Point ``tag`` back at a manifest it pointed at within the namespace's window
        (writers). The new lifetime is marked ``reversion``; records ``revert_tag``."""
        _check_tag(tag)
        check_manifest_digest(manifest_digest)
        for _attempt in range(3):
            try:
                self._restore(subject, namespace, name, tag, manifest_digest, ip)
                return
            except IntegrityError:
                continue  # a concurrent push of the same tag; try again
        raise RuntimeError("could not restore the tag after concurrent updates")

    def _restore(
        self,
        subject: Subject,
        namespace: str,
        name: str,
        tag: str,
        manifest_digest: str,
        ip: str | None,
    ) -> None:
        with self._db.session() as session:
            repository = authorize_repository(
                session, subject, namespace, name, Action.PUSH, self._policy
            )
            lock_repository(session, repository.id)
            manifest_id = session.scalar(
                select(Manifest.id).where(
                    Manifest.repository_id == repository.id, Manifest.digest == manifest_digest
                )
            )
            if manifest_id is None:
                raise NotFound(f"Manifest {manifest_digest} not found.")
            now = now_ms()
            namespace_id = session.scalar(
                select(Repository.namespace_id).where(Repository.id == repository.id)
            )
            assert namespace_id is not None
            cutoff = now - window_of(session, namespace_id, self._windows.default_s) * 1000
            # The lifetime's end as readers see it: recorded, or its expiry if it lapsed.
            ended_at = func.coalesce(Tag.lifetime_end_ms, Tag.expiration_ms)
            in_window = session.scalar(
                select(func.count())
                .select_from(Tag)
                .where(
                    Tag.repository_id == repository.id,
                    Tag.name == tag,
                    Tag.manifest_id == manifest_id,
                    history_clause(now),
                    ended_at > cutoff,
                )
            )
            current = session.scalar(
                select(Tag.manifest_id).where(
                    Tag.repository_id == repository.id, Tag.name == tag, active_clause(now)
                )
            )
            if current is not None and is_immutable(session, repository.id, tag):
                raise TagImmutable(tag)
            if current == manifest_id:
                return  # already there
            if not in_window:
                raise InvalidInput(
                    f"Tag {tag} did not point at {manifest_digest} within the "
                    "time-machine window of its namespace"
                )
            point_tag(session, repository.id, tag, manifest_id, reversion=True)
            record_for_repository(
                session,
                "revert_tag",
                repository.id,
                AuditContext(subject, ip),
                tag=tag,
                manifest_digest=manifest_digest,
            )

    # --- permanent deletion --------------------------------------------------------------
    def remove_from_time_machine(
        self,
        subject: Subject,
        namespace: str,
        name: str,
        tag: str,
        manifest_digest: str | None,
        is_alive: bool,
        ip: str | None = None,
    ) -> str:
        """Quay's "permanently delete": remove lifetimes of ``tag`` so that they can no
        longer be restored and garbage collection may collect their manifest.

        ``is_alive``: the active tag (whatever ``manifest_digest`` says) together with
        its earlier lifetimes on the same manifest; otherwise the history lifetimes of
        ``tag`` on ``manifest_digest``. Records ``permanently_delete_tag``; returns the
        manifest's digest.
        """
        _check_tag(tag)
        if not is_alive:
            if not manifest_digest:
                raise InvalidInput("manifest_digest required when is_alive set to false")
            check_manifest_digest(manifest_digest)
        with self._db.session() as session:
            repository = authorize_repository(
                session, subject, namespace, name, Action.PUSH, self._policy
            )
            lock_repository(session, repository.id)
            now = now_ms()
            if is_alive:
                active = session.execute(
                    select(Tag.manifest_id, Manifest.digest)
                    .join(Manifest, Manifest.id == Tag.manifest_id)
                    .where(Tag.repository_id == repository.id, Tag.name == tag, active_clause(now))
                ).first()
                if active is None:
                    raise NotFound(f"Tag {tag} not found.")
                if is_immutable(session, repository.id, tag):
                    raise TagImmutable(tag)
                manifest_id, digest = active.manifest_id, active.digest
                # The active lifetime and the history on the same manifest.
                condition = Tag.manifest_id == manifest_id
            else:
                assert manifest_digest is not None
                found = session.scalar(
                    select(Manifest.id).where(
                        Manifest.repository_id == repository.id, Manifest.digest == manifest_digest
                    )
                )
                if found is None:
                    raise NotFound(f"Manifest {manifest_digest} not found.")
                manifest_id, digest = found, manifest_digest
                condition = (Tag.manifest_id == manifest_id) & history_clause(now)
            removed = session.execute(
                delete(Tag).where(Tag.repository_id == repository.id, Tag.name == tag, condition)
            )
            if not removed.rowcount:  # type: ignore[attr-defined]
                raise NotFound(f"Tag {tag} has no history on {digest}.")
            record_for_repository(
                session,
                "permanently_delete_tag",
                repository.id,
                AuditContext(subject, ip),
                tag=tag,
                manifest_digest=digest,
            )
            return digest

    # --- namespace windows ---------------------------------------------------------------
    def user_window(self, user_id: int) -> int:
        """The window of the user's own namespace in seconds."""
        with self._db.read() as connection:
            stored = connection.scalar(
                select(Namespace.tag_expiration_s)
                .join(User, User.namespace_id == Namespace.id)
                .where(User.id == user_id)
            )
        return stored if stored is not None else self._windows.default_s

    def set_user_window(self, subject: Subject, seconds: int, ip: str | None = None) -> None:
        """Choose the window of the caller's own namespace (one of the options).

        Records ``change_tag_expiration`` with the namespace and the window.
        """
        try:
            seconds = self._windows.check(seconds)
        except WindowInvalid as exc:
            raise InvalidInput(str(exc)) from None
        if subject.user_id is None:
            raise InvalidInput("Requires a signed-in user")
        with self._db.session() as session:
            namespace = session.scalar(
                select(Namespace)
                .join(User, User.namespace_id == Namespace.id)
                .where(User.id == subject.user_id)
            )
            if namespace is None:
                raise NotFound("User not found.")
            set_namespace_window(session, namespace, seconds, subject, ip)
