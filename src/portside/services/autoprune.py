"""Auto-prune policies (Quay's ``autoprunepolicy``) and the job that applies them.

A policy belongs to a namespace (it applies to each of the namespace's repositories) or
to one repository, and ends active tags automatically:

- ``number_of_tags`` (``value``: a positive integer N): keeps the N most recently pushed
  tags and prunes the rest;
- ``creation_date`` (``value``: a duration such as ``2w``): prunes tags pushed longer ago.

``tagPattern`` (a regular expression *searched* in tag names, as Quay's database regex
does) limits a policy to the tags it matches or, with ``tagPatternMatches: false``, to
those it does not; for ``number_of_tags`` the N kept are counted among those tags.
Every policy that covers a repository applies (a tag pruned by one is not saved by
another). Immutable tags are never pruned (they still count towards N).

Pruning a tag ends its active row exactly as a delete does (the tag stays in the
history and can be restored within the time-machine window) and writes Quay's
``autoprune_tag_delete`` audit entry in the same transaction. Each end is a guarded
update of one still-active row, so several processes may run passes at once and a
second pass over the same state changes nothing.
"""

from __future__ import annotations

import logging
import re
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from functools import lru_cache

from sqlalchemy import Connection, Select, false, or_, select, update
from sqlalchemy.orm import Session

from portside.auth.permissions import Policy, Subject
from portside.config.durations import parse_duration
from portside.db.engine import Database
from portside.db.models import AutoPrunePolicy, Namespace, Repository, Tag
from portside.services.audit import AuditContext, record, record_for_repository
from portside.services.immutability import (
    administered_namespace,
    administered_repository,
    check_pattern,
    immutable_tags,
    write_retrying,
)
from portside.services.manifests import now_ms
from portside.services.organizations import Invalid, NotFound
from portside.services.repositories import RepositoryRef

log = logging.getLogger(__name__)

METHODS = ("number_of_tags", "creation_date")
#: Largest ``number_of_tags`` value (keeps the stored value within a 64-bit integer).
MAX_TAG_COUNT = 2**31 - 1
#: Repositories listed per query, and tags ended per transaction, by a pass.
REPOSITORY_BATCH = 200
TAG_BATCH = 100


@dataclass(frozen=True)
class AutoPrunePolicyInfo:
    """One policy as Quay shows it (``value`` an int for ``number_of_tags``)."""

    uuid: str
    method: str
    value: int | str
    tag_pattern: str | None
    tag_pattern_matches: bool


@dataclass(frozen=True)
class PruneResult:
    """What one pass did."""

    policies: int
    repositories: int
    tags_pruned: int


def check_policy(
    method: object, value: object, tag_pattern: object, tag_pattern_matches: object
) -> tuple[str, str, str | None, bool]:
    """``(method, value, pattern, matches)`` as stored; :class:`Invalid` (400) for
    anything Quay refuses, and for patterns that are not regular expressions."""
    if method not in METHODS:
        raise Invalid("Invalid method provided: use number_of_tags or creation_date")
    if method == "number_of_tags":
        if isinstance(value, bool) or not isinstance(value, int) or not 0 < value <= MAX_TAG_COUNT:
            raise Invalid(
                "Invalid value given for method type: number_of_tags needs a positive whole number"
            )
        stored = str(value)
    else:
        if not isinstance(value, str):
            raise Invalid(
                "Invalid value given for method type: creation_date needs a "
                "duration such as '7d' or '2w'"
            )
        try:
            parse_duration(value)
        except ValueError as exc:
            raise Invalid(f"Invalid value given for method type: {exc}") from None
        stored = value
    pattern = None if tag_pattern is None else check_pattern(tag_pattern)
    if tag_pattern_matches is None:
        matches = True
    elif isinstance(tag_pattern_matches, bool):
        matches = tag_pattern_matches
    else:
        raise Invalid("tagPatternMatches must be a boolean")
    return str(method), stored, pattern, matches


def _info(row: AutoPrunePolicy) -> AutoPrunePolicyInfo:
    value: int | str = int(row.value) if row.method == "number_of_tags" else row.value
    return AutoPrunePolicyInfo(
        row.uuid, row.method, value, row.tag_pattern, bool(row.tag_pattern_matches)
    )


@lru_cache(maxsize=1024)
def _compiled(pattern: str) -> re.Pattern[str] | None:
    try:
        return re.compile(pattern)
    except (re.error, RecursionError, OverflowError):
        return None


@dataclass(frozen=True)
class _Rule:
    """A policy as a pass applies it."""

    uuid: str
    method: str
    value: str
    tag_pattern: str | None
    tag_pattern_matches: bool

    def covers(self, tag: str) -> bool:
        if self.tag_pattern is None:
            return True
        compiled = _compiled(self.tag_pattern)
        if compiled is None:
            return False  # never prune on a pattern that cannot be evaluated
        return (compiled.search(tag) is not None) == self.tag_pattern_matches


class AutoPruneService:
    """Policy management on behalf of a subject, and the pruning pass."""

    def __init__(self, db: Database, policy: Policy | None = None) -> None:
        self._db = db
        self._policy = policy or Policy()

    # --- policies ----------------------------------------------------------------------
    def _scope(
        self, session: Session, subject: Subject, namespace: str, repository: str | None
    ) -> tuple[RepositoryRef | None, int]:
        if repository is None:
            return None, administered_namespace(session, subject, namespace).id
        repo = administered_repository(session, subject, namespace, repository, self._policy)
        namespace_id = session.scalar(
            select(Repository.namespace_id).where(Repository.id == repo.id)
        )
        return repo, int(namespace_id or 0)

    @staticmethod
    def _query(namespace_id: int, repo: RepositoryRef | None) -> Select[AutoPrunePolicy]:
        query = select(AutoPrunePolicy).where(AutoPrunePolicy.namespace_id == namespace_id)
        return query.where(
            AutoPrunePolicy.repository_id.is_(None)
            if repo is None
            else AutoPrunePolicy.repository_id == repo.id
        )

    def _row(
        self, session: Session, namespace_id: int, repo: RepositoryRef | None, policy_uuid: str
    ) -> AutoPrunePolicy:
        row = session.scalar(
            self._query(namespace_id, repo).where(AutoPrunePolicy.uuid == policy_uuid[:36])
        )
        if row is None:
            raise NotFound(f"Auto-prune policy {policy_uuid[:100]!r} not found")
        return row

    def policies(
        self, subject: Subject, namespace: str, repository: str | None = None
    ) -> list[AutoPrunePolicyInfo]:
        """The policies of the namespace (``repository`` ``None``) or the repository."""
        with self._db.read() as connection, Session(bind=connection) as session:
            repo, namespace_id = self._scope(session, subject, namespace, repository)
            rows = session.scalars(
                self._query(namespace_id, repo).order_by(AutoPrunePolicy.id)
            ).all()
            return [_info(row) for row in rows]

    def get(
        self, subject: Subject, namespace: str, repository: str | None, policy_uuid: str
    ) -> AutoPrunePolicyInfo:
        """One policy of the scope."""
        with self._db.read() as connection, Session(bind=connection) as session:
            repo, namespace_id = self._scope(session, subject, namespace, repository)
            return _info(self._row(session, namespace_id, repo, policy_uuid))

    def _audit(
        self,
        session: Session,
        action: str,
        subject: Subject,
        namespace: str,
        namespace_id: int,
        repo: RepositoryRef | None,
        ip: str | None,
        **metadata: object,
    ) -> None:
        if repo is None:
            record(
                session,
                f"{action}_namespace_autoprune_policy",
                performer=subject,
                namespace_id=namespace_id,
                ip=ip,
                metadata={"namespace": namespace, **metadata},
            )
        else:
            record_for_repository(
                session,
                f"{action}_repository_autoprune_policy",
                repo.id,
                AuditContext(subject, ip),
                **metadata,
            )

    def _refuse_duplicate(
        self,
        session: Session,
        namespace_id: int,
        repo: RepositoryRef | None,
        config: tuple[str, str, str | None, bool],
        exclude: str | None = None,
    ) -> None:
        for row in session.scalars(self._query(namespace_id, repo)):
            if (
                row.uuid != exclude
                and (row.method, row.value, row.tag_pattern, bool(row.tag_pattern_matches))
                == config
            ):
                raise Invalid("A policy with the same configuration already exists")

    def create(
        self,
        subject: Subject,
        namespace: str,
        repository: str | None,
        *,
        method: object,
        value: object,
        tag_pattern: object = None,
        tag_pattern_matches: object = None,
        ip: str | None = None,
    ) -> AutoPrunePolicyInfo:
        """Add a policy; records ``create_namespace_autoprune_policy`` or
        ``create_repository_autoprune_policy``."""

        def work(session: Session) -> AutoPrunePolicyInfo:
            repo, namespace_id = self._scope(session, subject, namespace, repository)
            config = check_policy(method, value, tag_pattern, tag_pattern_matches)
            self._refuse_duplicate(session, namespace_id, repo, config)
            row = AutoPrunePolicy(
                uuid=str(uuid.uuid4()),
                namespace_id=namespace_id,
                repository_id=repo.id if repo else None,
                method=config[0],
                value=config[1],
                tag_pattern=config[2],
                tag_pattern_matches=config[3],
            )
            session.add(row)
            session.flush()
            info = _info(row)
            self._audit(
                session, "create", subject, namespace, namespace_id, repo, ip, **_metadata(info)
            )
            return info

        return write_retrying(self._db, work)

    def update(
        self,
        subject: Subject,
        namespace: str,
        repository: str | None,
        policy_uuid: str,
        *,
        method: object,
        value: object,
        tag_pattern: object = None,
        tag_pattern_matches: object = None,
        ip: str | None = None,
    ) -> AutoPrunePolicyInfo:
        """Replace a policy's configuration; records ``update_*_autoprune_policy``."""

        def work(session: Session) -> AutoPrunePolicyInfo:
            repo, namespace_id = self._scope(session, subject, namespace, repository)
            row = self._row(session, namespace_id, repo, policy_uuid)
            config = check_policy(method, value, tag_pattern, tag_pattern_matches)
            self._refuse_duplicate(session, namespace_id, repo, config, exclude=row.uuid)
            row.method, row.value, row.tag_pattern, row.tag_pattern_matches = config
            session.flush()
            info = _info(row)
            self._audit(
                session, "update", subject, namespace, namespace_id, repo, ip, **_metadata(info)
            )
            return info

        return write_retrying(self._db, work)

    def delete(
        self,
        subject: Subject,
        namespace: str,
        repository: str | None,
        policy_uuid: str,
        ip: str | None = None,
    ) -> None:
        """Remove a policy; records ``delete_*_autoprune_policy``."""

        def work(session: Session) -> None:
            repo, namespace_id = self._scope(session, subject, namespace, repository)
            row = self._row(session, namespace_id, repo, policy_uuid)
            session.delete(row)
            self._audit(
                session, "delete", subject, namespace, namespace_id, repo, ip, policy_uuid=row.uuid
            )

        write_retrying(self._db, work)

    # --- the pass ----------------------------------------------------------------------
    def run_pass(self, now: int | None = None) -> PruneResult:
        """Apply every policy once. ``now`` (ms since the epoch) is the time tag ages are
        measured against (default: the current time)."""
        evaluated_at = now_ms() if now is None else now
        with self._db.read() as connection:
            rows = connection.execute(
                select(
                    AutoPrunePolicy.uuid,
                    AutoPrunePolicy.namespace_id,
                    AutoPrunePolicy.repository_id,
                    AutoPrunePolicy.method,
                    AutoPrunePolicy.value,
                    AutoPrunePolicy.tag_pattern,
                    AutoPrunePolicy.tag_pattern_matches,
                )
                .join(Namespace, Namespace.id == AutoPrunePolicy.namespace_id)
                .where(Namespace.deleted_at.is_(None))
                .order_by(AutoPrunePolicy.id)
            ).all()
        by_namespace: dict[int, list[_Rule]] = {}
        by_repository: dict[int, list[_Rule]] = {}
        for row in rows:
            rule = _Rule(
                row.uuid, row.method, row.value, row.tag_pattern, bool(row.tag_pattern_matches)
            )
            if row.repository_id is None:
                by_namespace.setdefault(row.namespace_id, []).append(rule)
            else:
                by_repository.setdefault(row.repository_id, []).append(rule)
        repositories = pruned = 0
        seen: set[int] = set()
        for namespace_id, rules in by_namespace.items():
            for repository_id in self._repositories(namespace_id):
                seen.add(repository_id)
                repositories += 1
                pruned += self._prune(
                    repository_id, rules + by_repository.get(repository_id, []), evaluated_at
                )
        for repository_id, rules in by_repository.items():
            if repository_id not in seen and self._prunable(repository_id):
                repositories += 1
                pruned += self._prune(repository_id, rules, evaluated_at)
        return PruneResult(len(rows), repositories, pruned)

    def _repositories(self, namespace_id: int) -> Iterator[int]:
        """The namespace's live, writable repositories, in batches (keyset on id)."""
        after = 0
        while True:
            with self._db.read() as connection:
                ids = list(
                    connection.scalars(
                        select(Repository.id)
                        .where(
                            Repository.namespace_id == namespace_id,
                            Repository.id > after,
                            Repository.deleted_at.is_(None),
                            Repository.state == "NORMAL",
                        )
                        .order_by(Repository.id)
                        .limit(REPOSITORY_BATCH)
                    )
                )
            yield from ids
            if len(ids) < REPOSITORY_BATCH:
                return
            after = ids[-1]

    def _prunable(self, repository_id: int) -> bool:
        with self._db.read() as connection:
            return (
                connection.scalar(
                    select(Repository.id).where(
                        Repository.id == repository_id,
                        Repository.deleted_at.is_(None),
                        Repository.state == "NORMAL",
                    )
                )
                is not None
            )

    def _prune(self, repository_id: int, rules: list[_Rule], now: int) -> int:
        """End the tags ``rules`` select in one repository; returns how many were ended."""
        with self._db.read() as connection:
            chosen = _select(connection, repository_id, rules, now)
        ended = 0
        items = list(chosen.items())
        for start in range(0, len(items), TAG_BATCH):
            batch = items[start : start + TAG_BATCH]
            with self._db.session() as session:
                protected = immutable_tags(
                    session, repository_id, (name for _id, (name, _rule) in batch)
                )
                end_ms = now_ms()
                for tag_id, (name, rule) in batch:
                    if name in protected:
                        continue
                    # Guarded: a tag moved, deleted, flagged or pruned by someone else
                    # meanwhile is left alone (and not logged twice).
                    result = session.execute(
                        update(Tag)
                        .where(
                            Tag.id == tag_id,
                            Tag.lifetime_end_ms.is_(None),
                            Tag.immutable == false(),
                        )
                        .values(lifetime_end_ms=end_ms)
                    )
                    if result.rowcount != 1:  # type: ignore[attr-defined]
                        continue
                    ended += 1
                    record_for_repository(
                        session,
                        "autoprune_tag_delete",
                        repository_id,
                        None,
                        tag=name,
                        performer="autoprune worker",
                        policy_uuid=rule.uuid,
                        method=rule.method,
                        value=rule.value,
                        tag_pattern=rule.tag_pattern,
                        tag_pattern_matches=rule.tag_pattern_matches,
                    )
        if ended:
            log.info("auto-prune ended %d tags in repository %d", ended, repository_id)
        return ended


def _select(
    connection: Connection, repository_id: int, rules: list[_Rule], now: int
) -> dict[int, tuple[str, _Rule]]:
    """``{tag id: (name, first rule selecting it)}`` among the repository's active
    tags (newest first by push time)."""
    tags = connection.execute(
        select(Tag.id, Tag.name, Tag.lifetime_start_ms)
        .where(
            Tag.repository_id == repository_id,
            Tag.lifetime_end_ms.is_(None),
            or_(Tag.expiration_ms.is_(None), Tag.expiration_ms > now),
        )
        .order_by(Tag.lifetime_start_ms.desc(), Tag.id.desc())
    ).all()
    chosen: dict[int, tuple[str, _Rule]] = {}
    for rule in rules:
        covered = [tag for tag in tags if rule.covers(tag.name)]
        if rule.method == "number_of_tags":
            try:
                keep = int(rule.value)
            except ValueError:
                continue
            victims = covered[keep:] if keep > 0 else []
        else:
            try:
                age_ms = int(parse_duration(rule.value).total_seconds() * 1000)
            except ValueError:
                continue
            victims = [tag for tag in covered if tag.lifetime_start_ms < now - age_ms]
        for tag in victims:
            chosen.setdefault(tag.id, (tag.name, rule))
    return chosen


def _metadata(info: AutoPrunePolicyInfo) -> dict[str, object]:
    return {
        "policy_uuid": info.uuid,
        "method": info.method,
        "value": info.value,
        "tag_pattern": info.tag_pattern,
        "tag_pattern_matches": info.tag_pattern_matches,
    }
