"""sync.yaml version 1: models (`models`), field parsers (`fields`), loading (`loader`)."""

from regsync.config.fields import DEFAULT_INTERVAL, parse_duration
from regsync.config.loader import load_config, parse_config
from regsync.config.models import (
    Config,
    Credentials,
    Defaults,
    Notifications,
    Prune,
    RateLimit,
    RegistryConfig,
    Rule,
    TagFilter,
)

__all__ = [
    "DEFAULT_INTERVAL",
    "Config",
    "Credentials",
    "Defaults",
    "Notifications",
    "Prune",
    "RateLimit",
    "RegistryConfig",
    "Rule",
    "TagFilter",
    "load_config",
    "parse_config",
    "parse_duration",
]
