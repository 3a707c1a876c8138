"""Typed overrides of a frozen dataclass config from the command line: one parser for every job and tool.

Two spellings reach it:

* ``--field value`` or ``--field=value`` (``python -m ray_jobs.sevi_train``, ``python -m
  sevi.cli.train``): :func:`split_flags`;
* ``field=value`` items (``tools/coating_closed_loop.py --plant kappa=0.01``): :func:`split_assignments`.

Either gives ``{field: text}``; :func:`apply_overrides` then parses each text to the field's
annotated type (:func:`parse_value`), refuses unknown fields (naming the closest one), and builds
the new config with ``dataclasses.replace``, so the config's own ``__post_init__`` checks run.

Types: ``bool`` (true/false, 1/0, yes/no), ``int`` (``1e5`` is accepted when it is a whole
number), ``float``, ``str``, ``X | None`` (``none``), and tuples written as comma lists
(``1000,2000`` or ``(1000, 2000)``): ``tuple[int, int]`` needs exactly that many items,
``tuple[float, ...]`` any number, and a bare ``tuple`` takes the length and item type of the
field's default.
"""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from typing import Any, Mapping

__all__ = ["split_flags", "split_assignments", "parse_value", "apply_overrides"]

_TRUE, _FALSE = ("true", "1", "yes"), ("false", "0", "no")
_NO_DEFAULT = object()


def split_flags(tokens: list[str]) -> dict[str, str]:
    """``['--width', '32', '--amp=none']`` -> ``{'width': '32', 'amp': 'none'}`` ('-' in names -> '_').

    Raises ValueError on a token that is not ``--field`` or on a flag without a value."""
    out, i = {}, 0
    while i < len(tokens):
        tok = tokens[i]
        if not tok.startswith("--") or len(tok) == 2:
            raise ValueError(f"unexpected argument {tok!r}; overrides are --field value")
        key, eq, val = tok[2:].partition("=")
        if not eq:
            if i + 1 >= len(tokens):
                raise ValueError(f"override --{key} needs a value")
            val, i = tokens[i + 1], i + 1
        out[key.replace("-", "_")] = val
        i += 1
    return out


def split_assignments(items: list[str]) -> dict[str, str]:
    """``['kappa=0.01', 'packing_mean=0.98,0.9']`` -> ``{'kappa': '0.01', 'packing_mean': '0.98,0.9'}``."""
    out = {}
    for item in items:
        key, eq, val = item.partition("=")
        if not eq or not key.strip() or not val.strip():
            raise ValueError(f"{item!r}: expected FIELD=VALUE")
        out[key.strip().replace("-", "_")] = val.strip()
    return out


def _tuple_items(text: str) -> list[str]:
    return [p.strip() for p in text.strip().removeprefix("(").removesuffix(")").split(",") if p.strip()]


def parse_value(name: str, typ: Any, text: str, default: Any = _NO_DEFAULT) -> Any:
    """``text`` parsed as ``typ`` (module doc); ValueError ``override NAME='TEXT': expected TYPE``."""
    origin, args = typing.get_origin(typ), typing.get_args(typ)
    try:
        if origin in (typing.Union, types.UnionType):
            if type(None) in args and text.strip().lower() in ("none", "null"):
                return None
            for arg in (a for a in args if a is not type(None)):
                try:
                    return parse_value(name, arg, text)
                except ValueError:
                    pass
            raise ValueError(text)
        if typ is bool:
            low = text.strip().lower()
            if low not in _TRUE + _FALSE:
                raise ValueError(text)
            return low in _TRUE
        if typ is tuple or origin is tuple:
            parts = _tuple_items(text)
            if typ is tuple:  # bare annotation: the default says how many and of what type
                if default is _NO_DEFAULT or not isinstance(default, tuple) or not default:
                    item_types = [float] * len(parts)
                else:
                    item_types = [type(d) for d in default]
            elif len(args) == 2 and args[1] is Ellipsis:
                item_types = [args[0]] * max(len(parts), 1)
            else:
                item_types = list(args)
            if len(parts) != len(item_types):
                raise ValueError(text)
            return tuple(parse_value(name, t, p) for t, p in zip(item_types, parts))
        if typ is int:
            x = float(text)
            return int(x) if x.is_integer() else int(text)
        if typ in (float, str):
            return typ(text)
        raise ValueError(text)
    except ValueError:
        what = getattr(typ, "__name__", None) or str(typ)
        if typ is tuple and default is not _NO_DEFAULT and isinstance(default, tuple):
            what = f"{len(default)} comma-separated values"
        raise ValueError(f"override {name}={text!r}: expected {what}") from None


def apply_overrides(config: Any, overrides: Mapping[str, Any] | None) -> Any:
    """``config`` (a dataclass instance) with ``overrides`` applied; text values are parsed to the
    field's type, other values are taken as they are. Unknown fields raise ValueError naming the
    closest field and listing them all."""
    cls = type(config)
    hints = typing.get_type_hints(cls)
    fields = [f.name for f in dataclasses.fields(cls)]
    values = {}
    for key, value in (overrides or {}).items():
        key = key.replace("-", "_")
        if key not in fields:
            close = difflib.get_close_matches(key, fields, n=1)
            raise ValueError(f"unknown {cls.__name__} field {key!r}" + (f" (did you mean {close[0]!r}?)" if close else "")
                             + f"; fields: {', '.join(fields)}")
        values[key] = parse_value(key, hints[key], value, getattr(config, key)) if isinstance(value, str) else value
    return dataclasses.replace(config, **values)
