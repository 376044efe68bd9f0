"""Loading and validating Portside's Quay-style ``config.yaml``.

* :func:`load_config` returns a :class:`~portside.config.model.PortsideConfig` and a list
  of warnings, or raises :class:`ConfigError` listing every problem found.
* :func:`validate_file` reports problems and warnings without raising (used by
  ``portside config validate FILE``).

Every problem and warning is a single line that starts with the configuration key it is
about (or with the file name for problems with the file itself), for example::

    FEATURE_ANONYMOUS_ACCESS: expected true or false, got 'yes'
    DB_URI: unsupported database scheme 'mysql' (use sqlite:/// or postgresql://)
    SERVR_HOSTNAME: unknown configuration key (did you mean SERVER_HOSTNAME?)
    BUILDLOGS_REDIS: Quay configuration key not implemented by Portside yet; ignored
"""

from __future__ import annotations

import difflib
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError
from pydantic_core import ErrorDetails

from portside.config.model import PortsideConfig
from portside.config.quay_keys import QUAY_CONFIG_KEYS, is_quay_key
from portside.config.sizes import format_size_hint

__all__ = [
    "CONFIG_ENV_VAR",
    "ConfigError",
    "config_from_mapping",
    "load_config",
    "validate_file",
]

CONFIG_ENV_VAR = "PORTSIDE_CONFIG"
"""Environment variable naming the configuration file when no path is given."""

_SIZE_FIELDS = frozenset({"MAXIMUM_LAYER_SIZE", "MAXIMUM_MANIFEST_SIZE", "BLOB_PROXY_CHUNK_SIZE"})
_QUAY_ONLY_WARNING = "Quay configuration key not implemented by Portside yet; ignored"
_MAX_SHOWN_CHARS = 60
_MERGE_TAG = "tag:yaml.org,2002:merge"


class ConfigError(Exception):
    """The configuration could not be loaded.

    :attr:`problems` holds one human-readable line per problem, each naming the key (or
    the file) concerned. ``str(error)`` is all of them, one per line.
    """

    def __init__(self, problems: Sequence[str]) -> None:
        self.problems: list[str] = list(problems)
        super().__init__("\n".join(self.problems))


# --------------------------------------------------------------------------------------
# Public API
# --------------------------------------------------------------------------------------


def load_config(
    path: str | os.PathLike[str] | None = None,
    *,
    environ: Mapping[str, str] | None = None,
) -> tuple[PortsideConfig, list[str]]:
    """Load and validate the configuration.

    ``path`` defaults to ``$PORTSIDE_CONFIG`` (looked up in ``environ``, which defaults to
    :data:`os.environ`). With neither, the built-in defaults are returned: the embedded
    all-in-one mode (SQLite database and local storage under ``./data``).

    An empty file (or one holding only comments) also yields the defaults.

    Returns ``(config, warnings)``. Raises :class:`ConfigError` listing every problem.
    """
    resolved = _resolve_path(path, environ)
    if resolved is None:
        return PortsideConfig(), []
    config, problems, warnings = _load_file(resolved)
    if config is None:
        raise ConfigError(problems)
    return config, warnings


def validate_file(path: str | os.PathLike[str]) -> tuple[list[str], list[str]]:
    """Check the configuration file at ``path`` without raising.

    Returns ``(problems, warnings)``; the file is valid when ``problems`` is empty.
    """
    _config, problems, warnings = _load_file(Path(path).expanduser())
    return problems, warnings


def config_from_mapping(data: Mapping[Any, Any]) -> tuple[PortsideConfig, list[str]]:
    """Validate already-parsed configuration ``data`` (the top-level YAML mapping).

    Applies the same rules as :func:`load_config`: Quay-only keys give warnings, any
    other unknown key is an error. Returns ``(config, warnings)`` or raises
    :class:`ConfigError`.
    """
    config, problems, warnings = _build(data)
    if config is None:
        raise ConfigError(problems)
    return config, warnings


# --------------------------------------------------------------------------------------
# Reading the file
# --------------------------------------------------------------------------------------


def _resolve_path(
    path: str | os.PathLike[str] | None, environ: Mapping[str, str] | None
) -> Path | None:
    if path is None:
        env = os.environ if environ is None else environ
        from_env = env.get(CONFIG_ENV_VAR, "").strip()
        if not from_env:
            return None
        path = from_env
    return Path(path).expanduser()


class _DuplicateTrackingLoader(yaml.SafeLoader):
    """A safe YAML loader that records keys defined twice in the same mapping."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self.duplicates: list[str] = []

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        first_line: dict[str, int] = {}
        for key_node, _value_node in node.value:
            if not isinstance(key_node, yaml.ScalarNode) or key_node.tag == _MERGE_TAG:
                continue
            key = key_node.value
            line = key_node.start_mark.line + 1
            if key in first_line:
                self.duplicates.append(
                    f"line {line}: duplicate key {key!r} (first defined on line "
                    f"{first_line[key]}); the last value is used"
                )
            else:
                first_line[key] = line
        return super().construct_mapping(node, deep=deep)


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _read_yaml(path: Path) -> tuple[Any, list[str], list[str]]:
    """Return ``(data, problems, warnings)`` for the YAML file at ``path``."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None, [f"{path}: configuration file not found"], []
    except IsADirectoryError:
        return None, [f"{path}: is a directory, not a configuration file"], []
    except PermissionError:
        return None, [f"{path}: permission denied while reading the configuration file"], []
    except UnicodeDecodeError as exc:
        return None, [f"{path}: not a UTF-8 text file (invalid byte at offset {exc.start})"], []
    except OSError as exc:
        reason = exc.strerror or str(exc)
        return None, [f"{path}: cannot read the configuration file: {reason}"], []

    loader = _DuplicateTrackingLoader(text)
    try:
        data = loader.get_single_data()
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        what = _one_line(exc.problem or exc.context or "syntax error")
        if exc.context and exc.problem:
            what = f"{what} ({_one_line(exc.context)})"
        return None, [f"{path}: {where}invalid YAML: {what}"], []
    except yaml.YAMLError as exc:
        return None, [f"{path}: invalid YAML: {_one_line(str(exc))}"], []
    finally:
        loader.dispose()

    warnings = [f"{path}: {message}" for message in loader.duplicates]
    return data, [], warnings


def _load_file(path: Path) -> tuple[PortsideConfig | None, list[str], list[str]]:
    data, problems, warnings = _read_yaml(path)
    if problems:
        return None, problems, warnings
    if data is None:
        # Empty file, or only comments: use the defaults.
        data = {}
    if not isinstance(data, dict):
        kind = _describe_kind(data)
        return (
            None,
            [f"{path}: the top level must be a mapping of configuration keys, got {kind}"],
            warnings,
        )
    config, problems, more_warnings = _build(data)
    return config, problems, warnings + more_warnings


# --------------------------------------------------------------------------------------
# Validation and error formatting
# --------------------------------------------------------------------------------------


def _build(data: Mapping[Any, Any]) -> tuple[PortsideConfig | None, list[str], list[str]]:
    """Validate ``data``; return ``(config or None, problems, warnings)`` in file order."""
    fields = PortsideConfig.model_fields
    position = {key: index for index, key in enumerate(data)}
    problems: list[tuple[int, str]] = []
    warnings: list[str] = []
    accepted: dict[str, Any] = {}

    for key, value in data.items():
        if not isinstance(key, str):
            message = f"{_describe(key)}: configuration keys must be strings"
            problems.append((position[key], message))
        elif key in fields:
            accepted[key] = value
        elif is_quay_key(key):
            warnings.append(f"{key}: {_QUAY_ONLY_WARNING}")
        else:
            problems.append((position[key], f"{key}: unknown configuration key{_suggest(key)}"))

    config: PortsideConfig | None = None
    try:
        config = PortsideConfig.model_validate(accepted)
    except ValidationError as exc:
        for error in exc.errors(include_url=False, include_context=True):
            top = error["loc"][0] if error["loc"] else None
            problems.append((position.get(top, len(position)), _format_error(error)))

    if problems:
        problems.sort(key=lambda item: item[0])  # stable: keeps per-key order
        return None, [message for _, message in problems], warnings
    return config, [], warnings


def _suggest(key: str) -> str:
    """Return `` (did you mean X?)`` for a near miss of a known key, else ``""``."""
    candidates = sorted(set(PortsideConfig.model_fields) | QUAY_CONFIG_KEYS)
    normalised = key.upper().replace("-", "_")
    if normalised in candidates:
        return f" (did you mean {normalised}?)"
    matches = difflib.get_close_matches(normalised, candidates, n=1, cutoff=0.8)
    return f" (did you mean {matches[0]}?)" if matches else ""


def _format_loc(loc: tuple[int | str, ...]) -> str:
    text = ""
    for part in loc:
        if isinstance(part, int):
            text += f"[{part}]"
        elif part == "[key]":
            continue
        else:
            text += f".{part}" if text else str(part)
    return text or "configuration"


def _describe_kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (list, tuple)):
        return "a list"
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, (int, float)):
        return "a number"
    return f"a {type(value).__name__}"


def _describe(value: Any) -> str:
    """A short YAML-flavoured rendering of ``value`` for error messages."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        if len(value) > _MAX_SHOWN_CHARS:
            value = value[: _MAX_SHOWN_CHARS - 3] + "..."
        return repr(value)
    if isinstance(value, (int, float)):
        return repr(value)
    return _describe_kind(value)


def _format_error(error: ErrorDetails) -> str:
    """Turn one pydantic error into ``KEY: message``."""
    loc = tuple(error["loc"])
    where = _format_loc(loc)
    kind = error["type"]
    ctx: dict[str, Any] = dict(error.get("ctx") or {})
    value = error.get("input")
    got = _describe(value)
    null_hint = " (remove the key to use the default)" if value is None and len(loc) == 1 else ""

    if len(loc) >= 2 and loc[-1] == "[key]":
        return f"{_format_loc(loc[:-2])}: keys must be strings, got {got}"

    message: str
    if kind in ("bool_type", "bool_parsing"):
        message = f"expected true or false, got {got}"
    elif kind in ("int_type", "int_parsing", "int_from_float"):
        message = f"expected an integer, got {got}"
    elif kind in ("string_type", "string_unicode"):
        if loc and loc[0] in _SIZE_FIELDS and len(loc) == 1:
            message = f"expected {format_size_hint()} (as a string), got {got}"
        else:
            message = f"expected a string, got {got}"
    elif kind in ("list_type", "tuple_type", "set_type"):
        message = f"expected a list, got {got}"
    elif kind in ("dict_type", "mapping_type", "model_type"):
        message = f"expected a mapping, got {got}"
    elif kind == "literal_error":
        message = f"expected {ctx.get('expected', 'one of the allowed values')}, got {got}"
    elif kind == "greater_than_equal":
        message = f"must be at least {ctx.get('ge')}, got {got}"
    elif kind == "greater_than":
        message = f"must be greater than {ctx.get('gt')}, got {got}"
    elif kind == "less_than_equal":
        message = f"must be at most {ctx.get('le')}, got {got}"
    elif kind == "less_than":
        message = f"must be less than {ctx.get('lt')}, got {got}"
    elif kind in ("value_error", "assertion_error"):
        cause = ctx.get("error")
        message = str(cause) if cause is not None else error["msg"]
    elif kind == "extra_forbidden":
        message = f"unknown configuration key{_suggest(str(loc[-1]))}" if loc else "unknown key"
    elif kind == "missing":
        message = "is required"
    else:
        text = error["msg"]
        message = text[:1].lower() + text[1:]
    return f"{where}: {_one_line(message)}{null_hint}"
