"""Exceptions raised by the core library."""


class AirRepError(Exception):
    """Base class of the core library's errors."""


class ConfigError(AirRepError, ValueError):
    """A stage config has a bad value (the message names the field, the value and what is allowed)."""
