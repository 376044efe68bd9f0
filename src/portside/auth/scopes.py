"""Docker token scopes: ``repository:<name>:<action>[,<action>...]``."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Scope:
    """One requested or granted resource scope."""

    type: str
    name: str
    actions: tuple[str, ...]

    def to_claim(self) -> dict[str, object]:
        """The scope as an entry of a JWT ``access`` claim."""
        return {"type": self.type, "name": self.name, "actions": list(self.actions)}


def parse_scope(value: str) -> Scope | None:
    """Parse one scope string; ``None`` if it is malformed (such scopes are ignored).

    The name may contain ``:`` only before the last separator (a registry host with a
    port is not part of a repository name), so split on the last colon.
    """
    head, sep, actions = value.rpartition(":")
    if not sep:
        return None
    resource_type, sep, name = head.partition(":")
    if not sep or not resource_type or not name:
        return None
    # "repository(plugin)" resource classes are treated as plain repositories.
    resource_type = resource_type.split("(", 1)[0]
    parsed = tuple(dict.fromkeys(a for a in actions.split(",") if a))
    return Scope(type=resource_type, name=name, actions=parsed)


def parse_scopes(values: list[str]) -> list[Scope]:
    """Parse every ``scope`` query parameter (each may hold several, space-separated)."""
    scopes = []
    for value in values:
        for item in value.split():
            scope = parse_scope(item)
            if scope is not None:
                scopes.append(scope)
    return scopes
