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


def check_finite_weights(model, what="the model", error=ValueError):
    """Raises `error` naming the first variable of `model` that holds NaN or infinite values.

    A model trained to a NaN loss predicts one class for every input; it must never be
    evaluated, published or exported as if it were trained.

    Args:
        model: a `keras.Model` (or any object with `.weights`, each with `.path` or `.name`
            and `.numpy()`).
        what: how the message names the model, e.g. "the weights runs/res3/model.keras".
        error: the exception class to raise.

    Returns:
        `model`.
    """
    import numpy as np

    for variable in model.weights:
        values = np.asarray(variable.numpy())
        if values.size and not np.all(np.isfinite(values)):
            bad = int(values.size - np.count_nonzero(np.isfinite(values)))
            name = getattr(variable, "path", None) or variable.name
            raise error(
                f"{what} hold {bad} NaN or infinite values (in {name}); the training that "
                "wrote them diverged. Train again with a lower learning rate"
            )
    return model
