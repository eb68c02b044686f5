"""Typed, frozen experiment configs with ``key=value`` overrides, and their JSON form.

An override names a field of the config dataclass and gives a value parsed by that field's type:
``seed=7``, ``lr=5e-4``, ``methods=GA,NPO``, ``betas=0.1,1``, ``betas=none`` (an empty list),
``progress=false``, ``clip=none`` (optional fields). Unknown keys and unparsable values fail before any work,
naming the key; range checks live in each config's ``__post_init__`` and fail the same way.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from collections.abc import Iterable, Mapping
from typing import Any

TRUE, FALSE = {"1", "true", "yes", "on"}, {"0", "false", "no", "off"}


def _parse_scalar(kind: type, raw: str, key: str) -> Any:
    raw = raw.strip()
    if kind is bool:
        if raw.lower() in TRUE | FALSE:
            return raw.lower() in TRUE
        raise ValueError(f"--set {key}={raw!r}: expected true or false")
    if kind in (int, float):
        try:
            return kind(raw)
        except ValueError:
            raise ValueError(f"--set {key}={raw!r}: expected {'an integer' if kind is int else 'a number'}") from None
    if kind is str:
        if not raw:
            raise ValueError(f"--set {key}: empty value")
        return raw
    raise TypeError(f"config field {key!r} has unsupported type {kind!r}")


def parse_value(annotation: Any, raw: str, key: str) -> Any:
    """Parse ``raw`` as a value of the type ``annotation`` (int, float, str, bool, tuple[X, ...], X | None)."""
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin in (typing.Union, types.UnionType):
        if raw.strip().lower() == "none" and type(None) in args:
            return None
        (inner,) = [a for a in args if a is not type(None)]
        return parse_value(inner, raw, key)
    if origin is tuple:
        inner = args[0]
        if raw.strip().lower() == "none":
            return ()
        parts = [part for part in raw.split(",") if part.strip()]
        if not parts:
            raise ValueError(f"--set {key}: empty list")
        return tuple(_parse_scalar(inner, part, key) for part in parts)
    return _parse_scalar(annotation, raw, key)


def parse_overrides(cls: type, overrides: Iterable[str]) -> dict[str, Any]:
    """{key: value} of ``key=value`` overrides, each parsed by the type of that field of the dataclass ``cls``;
    unknown keys and unparsable values fail naming the key."""
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    changes = {}
    for item in overrides:
        key, sep, raw = item.partition("=")
        key = key.strip()
        if not sep:
            raise ValueError(f"--set {item!r}: expected key=value")
        if key not in names:
            raise ValueError(f"--set {key}: unknown config key; valid keys: {', '.join(names)}")
        changes[key] = parse_value(hints[key], raw, key)
    return changes


def resolve(base: Any, flags: Mapping[str, tuple[str, Any]], overrides: Iterable[str]) -> Any:
    """A command's config: ``base`` (a dataclass type: its defaults; or an instance: a preset), then its named
    flags (``{key: (flag, value)}``, the flags given only), then ``key=value`` overrides, built in one
    construction, so that what a config derives from other fields (a learning rate by model) follows the final
    values. A flag and an override of the same key that disagree are refused, naming both."""
    cls = base if isinstance(base, type) else type(base)
    changes = {key: value for key, (_, value) in flags.items()}
    for key, value in parse_overrides(cls, overrides).items():
        if key in flags and flags[key][1] != value:
            flag, given = flags[key]
            raise ValueError(f"{flag} {format_value(given)} and --set {key}={format_value(value)} disagree; "
                             "give one of them")
        changes[key] = value
    try:
        return cls(**changes) if isinstance(base, type) else dataclasses.replace(base, **changes)
    except ValueError as err:
        raise ValueError(f"invalid config: {err}") from None


def format_value(value: Any) -> str:
    """A config value as ``--set`` spells it (``parse_value`` reads it back): none, true/false, a,b,c."""
    if value is None:
        return "none"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, tuple | list):
        return ",".join(map(format_value, value)) if value else "none"
    return str(value)


def config_dict(cfg: Any) -> dict[str, Any]:
    """The resolved config as JSON-ready data (tuples become lists)."""
    return {f.name: _jsonable(getattr(cfg, f.name)) for f in dataclasses.fields(cfg)}


def _jsonable(value: Any) -> Any:
    if isinstance(value, tuple | list):
        return [_jsonable(v) for v in value]
    return value


def require_at_least_one(cfg: Any, *keys: str) -> None:
    """Each named integer field of ``cfg`` must be >= 1 (of a mapping, such as a function's arguments: each
    entry when none is named); the error names the first that is not."""
    for key in keys or (cfg if isinstance(cfg, Mapping) else ()):
        value = cfg[key] if isinstance(cfg, Mapping) else getattr(cfg, key)
        if value < 1:
            raise ValueError(f"{key} must be >= 1, got {value}")


def require_positive(cfg: Any, *keys: str) -> None:
    """Each named number field of ``cfg`` must be finite and > 0 (a beta, a learning rate); the error names it."""
    for key in keys:
        value = getattr(cfg, key)
        if not (math.isfinite(value) and value > 0):
            raise ValueError(f"{key} must be a finite number > 0, got {value!r}")
