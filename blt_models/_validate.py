"""Checks for values where they enter the library (arguments, ``config.json``, checkpoint args).

Each checker returns the value in its canonical Python type (``numpy.int64(5)`` and
``torch.tensor(5)`` become ``5``) or raises [`ConfigValueError`][blt_models.errors.ConfigValueError] naming the field and its
origin, e.g. ``"timesteps = -1 (argument): must be a positive integer"``. A leaf module: it
imports nothing of the package but the errors.
"""

from __future__ import annotations

import math
import numbers
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .errors import ConfigValueError

__all__ = [
    "MAX_TIMESTEPS",
    "as_int",
    "check_int",
    "check_timesteps",
    "check_int_sequence",
    "check_float_sequence",
    "check_str",
    "check_common_args",
    "check_output_location",
    "refuse",
    "with_origin",
]

#: Upper bound on clock lengths: far above any published schedule (<= 15 steps), far below a
#: schedule whose bookkeeping alone exhausts memory.
MAX_TIMESTEPS = 10_000
MAX_CLASSES = 1_000_000
MAX_CHANNELS = 4096


def refuse(field: str, value: Any, origin: str | None, problem: str) -> ConfigValueError:
    """A [`ConfigValueError`][blt_models.errors.ConfigValueError] ``"field = value (origin): problem"``.

    The error keeps ``field``, ``value`` and ``problem`` as attributes, so that a caller that knows
    where a value came from (the factory) can name the origin of a value refused deeper down (a
    family constructor, which passes ``origin=None``): see ``with_origin``.
    """
    shown = repr(value)
    if len(shown) > 80:
        shown = shown[:77] + "..."
    where = f" ({origin})" if origin else ""
    err = ConfigValueError(f"{field} = {shown}{where}: {problem}")
    err.field, err.value, err.problem = field, value, problem  # type: ignore[attr-defined]
    err.origin = origin  # type: ignore[attr-defined]
    return err


def with_origin(err: ConfigValueError, origins: dict[str, str]) -> ConfigValueError:
    """``err`` again with the origin of its field filled in, if it had none."""
    field = getattr(err, "field", None)
    if field is None or getattr(err, "origin", None):
        return err
    base = field.split("[", 1)[0].split(".", 1)[0]
    return refuse(field, err.value, origins.get(base, "argument"), err.problem)  # type: ignore[attr-defined]


def as_int(value: Any) -> int | None:
    """``value`` as a Python int if it is an integer (numpy ints and 0-d integer tensors too)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, numbers.Integral):
        return int(value)
    if type(value).__module__.startswith("torch") and hasattr(value, "ndim"):
        if value.ndim == 0 and not value.is_floating_point() and not value.is_complex():
            if str(value.dtype) != "torch.bool":
                return int(value.item())
    return None


def check_int(
    value: Any, field: str, origin: str | None, minimum: int = 0, maximum: int | None = None
) -> int:
    """An integer in ``[minimum, maximum]``; floats (even ``4.0``), bools and strings refused."""
    out = as_int(value)
    if out is None:
        raise refuse(field, value, origin, f"must be an integer, not {type(value).__name__}.")
    if out < minimum or (maximum is not None and out > maximum):
        bound = f"between {minimum} and {maximum:,}" if maximum is not None else f">= {minimum}"
        raise refuse(field, value, origin, f"must be {bound}.")
    return out


def check_timesteps(value: Any, field: str = "timesteps", origin: str = "argument") -> int:
    """A positive number of clock steps, at most ``MAX_TIMESTEPS``."""
    return check_int(value, field, origin, 1, MAX_TIMESTEPS)


def check_int_sequence(
    value: Any, field: str, origin: str | None, minimum: int = 1, maximum: int | None = None
) -> list[int]:
    """A non-empty list / tuple of integers in ``[minimum, maximum]``."""
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence) or not value:
        raise refuse(field, value, origin, "must be a non-empty list of integers.")
    return [check_int(v, f"{field}[{i}]", origin, minimum, maximum) for i, v in enumerate(value)]


def check_widths(
    value: Any, default: Sequence[int], field: str = "channels", origin: str | None = None
) -> list[int]:
    """Per-layer widths: ``default`` when ``value`` is None, else as many positive integers as
    ``default`` has (a family constructor's ``channels=``)."""
    if value is None:
        return list(default)
    problem = f"takes {len(default)} positive integers, one per layer (published: {list(default)})."
    if (
        isinstance(value, (str, bytes))
        or not isinstance(value, Sequence)
        or len(value) != len(default)
    ):
        raise refuse(field, value, origin, problem)
    if not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in value):
        raise refuse(field, value, origin, problem)
    return list(value)


def check_float_sequence(
    value: Any, field: str, origin: str, length: int | None = None, positive: bool = False
) -> tuple[float, ...]:
    """A non-empty list of finite numbers (optionally all > 0, optionally of ``length``)."""
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence) or not value:
        raise refuse(field, value, origin, "must be a list of numbers.")
    out = []
    for i, v in enumerate(value):
        if isinstance(v, bool) or not isinstance(v, numbers.Real) or not math.isfinite(v):
            raise refuse(f"{field}[{i}]", v, origin, "must be a finite number.")
        if positive and v <= 0:
            raise refuse(f"{field}[{i}]", v, origin, "must be > 0.")
        out.append(float(v))
    if length is not None and len(out) not in (1, length):
        raise refuse(field, value, origin, f"needs 1 or {length} entries (one per input channel).")
    return tuple(out)


def check_str(
    value: Any, field: str, origin: str | None, choices: Sequence[str] | None = None
) -> str:
    if not isinstance(value, str) or (choices is not None and value not in choices):
        want = f"one of {', '.join(map(repr, choices))}" if choices is not None else "a string"
        raise refuse(field, value, origin, f"must be {want}.")
    return value


def check_common_args(args: dict[str, Any], origins: dict[str, str]) -> dict[str, Any]:
    """Check (and canonicalise) the constructor arguments every family shares.

    ``timesteps`` (1 .. 10,000; None allowed for feed-forward models), ``num_classes``
    (0 .. 1,000,000; 0 is timm's "no classifier"), ``in_chans`` (1 .. 4096). ``origins`` maps a
    key to where its value came from; unknown keys are ``"argument"``.
    """
    out = dict(args)
    for key, check in (
        ("timesteps", lambda v, o: check_timesteps(v, "timesteps", o)),
        ("num_classes", lambda v, o: check_int(v, "num_classes", o, 0, MAX_CLASSES)),
        ("in_chans", lambda v, o: check_int(v, "in_chans", o, 1, MAX_CHANNELS)),
    ):
        if key in out and not (key == "timesteps" and out[key] is None):
            out[key] = check(out[key], origins.get(key, "argument"))
    return out


def check_output_location(path: str | os.PathLike[str], what: str, error: type[Exception]) -> Path:
    """``path`` resolved, or ``error`` naming ``what`` (e.g. ``"out='x.h5'"``) for a path behind
    a symbolic link loop or inside a file (raw ``RuntimeError`` / ``NotADirectoryError`` else)."""
    try:
        resolved = Path(path).expanduser().resolve()
    except (RuntimeError, OSError) as err:  # RuntimeError: a symlink loop (Python < 3.13)
        raise error(
            f"{what} cannot be resolved ({err}): a symbolic link that points at itself? Name "
            "another location."
        ) from None
    for parent in resolved.parents:
        if parent.exists() and not parent.is_dir():
            raise error(
                f"{what} lies inside {str(parent)!r}, which is a file, not a folder; name a "
                "location in a folder."
            )
    return resolved
