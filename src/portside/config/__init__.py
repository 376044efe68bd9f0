"""Portside configuration: a typed model of Quay-style ``config.yaml`` and its loader.

Typical use::

    from portside.config import load_config

    config, warnings = load_config()          # $PORTSIDE_CONFIG, or built-in defaults
    config.SERVER_HOSTNAME, config.sqlalchemy_url, config.preferred_location
"""

from __future__ import annotations

from portside.config.loader import (
    CONFIG_ENV_VAR,
    ConfigError,
    config_from_mapping,
    load_config,
    validate_file,
)
from portside.config.model import PortsideConfig
from portside.config.quay_keys import QUAY_CONFIG_KEYS, is_quay_key
from portside.config.sizes import parse_size

__all__ = [
    "CONFIG_ENV_VAR",
    "QUAY_CONFIG_KEYS",
    "ConfigError",
    "PortsideConfig",
    "config_from_mapping",
    "is_quay_key",
    "load_config",
    "parse_size",
    "validate_file",
]
