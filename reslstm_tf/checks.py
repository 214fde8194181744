"""Argument checks shared by every module: errors that say what was received and what is allowed."""

import numbers


def check_choice(name, value, allowed, error=ValueError):
    """Raises `error` unless `value` is one of `allowed`; returns `value`.

    Args:
        name: the argument's name, as the caller knows it.
        value: the value received.
        allowed: the allowed values.
        error: the exception class to raise (a `ValueError` subclass of the caller's).
    """
    if value not in allowed:
        raise error(
            f"{name} must be one of {', '.join(repr(a) for a in allowed)}. "
            f"Received: {name}={value!r}"
        )
    return value


def check_positive_int(name, value, allow_zero=False, error=ValueError):
    """Raises `error` unless `value` is a positive (or, with allow_zero, non-negative) int.

    Args:
        name: the argument's name.
        value: the value received; bools are refused, numpy integers accepted.
        allow_zero: accept 0 too.
        error: the exception class to raise.

    Returns:
        `value` as a Python int.
    """
    low = 0 if allow_zero else 1
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < low:
        kind = "a non-negative" if allow_zero else "a positive"
        raise error(f"{name} must be {kind} integer. Received: {name}={value!r}")
    return int(value)
