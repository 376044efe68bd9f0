"""Quay's short duration strings: a whole number and one unit, e.g. ``90d`` or ``12h``.

Units: ``s`` seconds, ``m`` minutes, ``h`` hours, ``d`` days, ``w`` weeks (Quay's
``^[0-9]+(w|m|d|h|s)$``).
"""

from __future__ import annotations

import re
from datetime import timedelta

__all__ = ["DURATION_PATTERN", "parse_duration"]

DURATION_PATTERN = r"^[0-9]+(w|m|d|h|s)$"
"""The accepted syntax, as a regular expression (also used in the JSON Schema)."""

_DURATION_RE = re.compile(r"([0-9]+)([wmdhs])")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
#: Longer than this is certainly a mistake (and would overflow datetime arithmetic).
_MAX_SECONDS = 100 * 365 * 86400


def parse_duration(value: str) -> timedelta:
    """The :class:`~datetime.timedelta` of ``value``; raises ``ValueError`` with a
    one-line message for anything else."""
    match = _DURATION_RE.fullmatch(value)
    if match is None:
        raise ValueError(
            f"invalid duration {value!r}: use a whole number and a unit "
            "(s, m, h, d or w), e.g. '90d' or '12h'"
        )
    seconds = int(match.group(1)) * _UNIT_SECONDS[match.group(2)]
    if seconds > _MAX_SECONDS:
        raise ValueError(f"duration {value!r} is longer than 100 years")
    return timedelta(seconds=seconds)
