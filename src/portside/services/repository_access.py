"""One authorization step for the repository API's sub-resources (tags, manifests,
labels): look the repository up, require an action, then its existence.

The order matters, as in :mod:`portside.services.repository_admin`: a caller without the
right gets :class:`Unauthenticated` (anonymous) or :class:`Forbidden` whether or not the
repository exists, so that probing cannot reveal private names.
"""

from __future__ import annotations

from sqlalchemy import Connection
from sqlalchemy.orm import Session

from portside.auth.permissions import Action, Policy, Subject, allowed_actions
from portside.services.repositories import RepositoryRef, lookup_in_session
from portside.services.repository_admin import Forbidden, NotFound, Unauthenticated


def authorize_repository(session: Session | Connection, subject: Subject, namespace: str,
                         name: str, action: Action, policy: Policy) -> RepositoryRef:
    """The repository ``namespace/name`` once ``subject`` may perform ``action`` on it."""
    lookup = lookup_in_session(session, namespace, name, subject.user_id)
    if action not in allowed_actions(subject, lookup.facts, policy):
        if subject.anonymous:
            raise Unauthenticated("Requires authentication.")
        raise Forbidden("You do not have permission for this repository.")
    if lookup.repository is None:
        raise NotFound(f"Repository {namespace}/{name} not found.")
    return lookup.repository
