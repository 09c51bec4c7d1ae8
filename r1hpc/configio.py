"""Typed dataclass configs from YAML plus `key=value` overrides (the lingua pattern).

Three layers, applied in order: dataclass defaults -> a YAML file -> command-line overrides.
Every error names where the bad value came from (`file:line` or `override 'a.b=c'`), the dotted
key path, what was expected, and for an unknown key the closest valid one.

This module is the mechanism only; the schema lives in `r1hpc.config`.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import re
import types
import typing
from pathlib import Path
from typing import Any, Literal, get_args, get_origin

import yaml

__all__ = ["ConfigError", "Origin", "load", "to_dict", "to_yaml", "apply_overrides", "from_dict"]


_EXPONENT_FLOAT = re.compile(r"^[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+$")


class ConfigError(ValueError):
    """A config problem, with the source location and dotted key in its message."""


@dataclasses.dataclass(frozen=True)
class Origin:
    """Where a value came from: a YAML file and line, or a command-line override."""

    source: str
    line: int | None = None

    def __str__(self) -> str:
        return f"{self.source}:{self.line}" if self.line is not None else self.source


# Maps a dotted key path ("grpo.group_size") to where its value was set. Kept beside the config
# (not inside it) so that validation errors raised later can still name file and line.
Origins = dict[str, Origin]


def _located(node: yaml.Node, source: str) -> Any:
    """Convert a composed YAML node into python values, keeping (value, Origin) per mapping key.

    Mappings become dict[str, tuple[Any, Origin]]; sequences become lists of plain values.
    Duplicate keys are errors (PyYAML would silently keep the last one).
    """
    if isinstance(node, yaml.MappingNode):
        out: dict[str, tuple[Any, Origin]] = {}
        for key_node, value_node in node.value:
            key = key_node.value
            origin = Origin(source, key_node.start_mark.line + 1)
            if not isinstance(key_node, yaml.ScalarNode):
                raise ConfigError(f"{origin}: mapping keys must be plain names")
            if key in out:
                raise ConfigError(f"{origin}: duplicate key '{key}' (first set at line {out[key][1].line})")
            out[key] = (_located(value_node, source), origin)
        return out
    if isinstance(node, yaml.SequenceNode):
        return [_plain(_located(item, source)) for item in node.value]
    return yaml.safe_load(yaml.serialize(node))


def _plain(value: Any) -> Any:
    """Strip the Origin annotations from a _located() value."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, (v, _) in value.items()}
    return value  # sequences are plain already (_located)


def _type_name(tp: Any) -> str:
    if get_origin(tp) is Literal:
        return "one of " + ", ".join(repr(a) for a in get_args(tp))
    if dataclasses.is_dataclass(tp):
        return f"a mapping ({tp.__name__})"
    return getattr(tp, "__name__", str(tp)).replace("typing.", "")


def _coerce(value: Any, tp: Any, key: str, origin: Origin) -> Any:
    """Check `value` against the annotation `tp` and convert where lossless (int -> float)."""
    origin_tp = get_origin(tp)
    if origin_tp in (typing.Union, types.UnionType):
        errors = []
        for option in get_args(tp):
            if option is type(None):
                if value is None:
                    return None
                continue
            try:
                return _coerce(value, option, key, origin)
            except ConfigError as e:
                errors.append(str(e))
        raise ConfigError(
            f"{origin}: {key}: expected {' or '.join(_type_name(a) for a in get_args(tp))}, got {value!r}"
        )
    if origin_tp is Literal:
        if value not in get_args(tp):
            close = difflib.get_close_matches(str(value), [str(a) for a in get_args(tp)], n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ConfigError(f"{origin}: {key}: expected {_type_name(tp)}, got {value!r}{hint}")
        return value
    if dataclasses.is_dataclass(tp):  # an item of a list of sections (e.g. data.train sources)
        if not isinstance(value, dict):
            raise ConfigError(f"{origin}: {key}: expected {_type_name(tp)}, got {value!r}")
        return _merge(tp(), {str(k): (v, origin) for k, v in value.items()}, key + ".", {})
    if origin_tp is list:
        if not isinstance(value, list):
            raise ConfigError(f"{origin}: {key}: expected a list, got {value!r}")
        (item_tp,) = get_args(tp)
        return [_coerce(v, item_tp, f"{key}[{i}]", origin) for i, v in enumerate(value)]
    if origin_tp is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{origin}: {key}: expected a mapping, got {value!r}")
        key_tp, value_tp = get_args(tp)
        return {str(k): _coerce(v, value_tp, f"{key}.{k}", origin) for k, v in value.items()}
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{origin}: {key}: expected true or false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{origin}: {key}: expected an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, str) and _EXPONENT_FLOAT.match(value.strip()):
            value = float(value)  # YAML 1.1 reads 3e-6 (no dot) as a string; users mean a number
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{origin}: {key}: expected a number, got {value!r}")
        if not math.isfinite(value):
            raise ConfigError(f"{origin}: {key}: expected a finite number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{origin}: {key}: expected a string, got {value!r} (quote it in YAML)")
        return value
    raise TypeError(f"config field {key}: unsupported annotation {tp!r}")


def _fields(cls: type) -> dict[str, dataclasses.Field]:
    return {f.name: f for f in dataclasses.fields(cls)}


def _unknown_key(cls: type, name: str, prefix: str, origin: Origin) -> ConfigError:
    valid = list(_fields(cls))
    close = difflib.get_close_matches(name, valid, n=1, cutoff=0.5)
    hint = f"; did you mean '{prefix}{close[0]}'?" if close else f"; valid keys: {', '.join(valid)}"
    return ConfigError(f"{origin}: unknown key '{prefix}{name}'{hint}")


def _merge(obj: Any, located: dict[str, tuple[Any, Origin]], prefix: str, origins: Origins) -> Any:
    """Return a copy of dataclass `obj` with the located mapping applied, recording origins."""
    cls = type(obj)
    hints = typing.get_type_hints(cls)
    fields = _fields(cls)
    changes = {}
    for name, (value, origin) in located.items():
        if name not in fields:
            raise _unknown_key(cls, name, prefix, origin)
        key = prefix + name
        tp = hints[name]
        if dataclasses.is_dataclass(tp):
            if value is None:
                continue
            if not isinstance(value, dict):
                raise ConfigError(f"{origin}: {key}: expected a mapping ({tp.__name__}), got {_plain(value)!r}")
            changes[name] = _merge(getattr(obj, name), value, key + ".", origins)
        else:
            changes[name] = _coerce(_plain(value), tp, key, origin)
        origins[key] = origin
    return dataclasses.replace(obj, **changes)


def _read_yaml(path: Path) -> dict[str, tuple[Any, Origin]]:
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise ConfigError(f"{path}: config file not found") from None
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"{path}: cannot read config file: {e}") from None
    try:
        node = yaml.compose(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark else str(path)
        raise ConfigError(f"{where}: invalid YAML: {getattr(e, 'problem', e)}") from None
    if node is None:
        return {}
    if not isinstance(node, yaml.MappingNode):
        raise ConfigError(f"{path}:1: expected a mapping of config keys at the top level")
    return _located(node, str(path))


def _parse_override(text: str) -> tuple[list[str], Any, Origin]:
    origin = Origin(f"override '{text}'")
    if "=" not in text:
        raise ConfigError(f"{origin}: expected key=value (e.g. grpo.group_size=16)")
    key, _, raw = text.partition("=")
    key = key.strip()
    if not key or any(not part for part in key.split(".")):
        raise ConfigError(f"{origin}: expected a dotted key before '=', got {key!r}")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw  # not YAML: keep it as a string; the type check decides
    return key.split("."), value, origin


def apply_overrides(cfg: Any, overrides: list[str], origins: Origins) -> Any:
    """Apply `a.b.c=value` strings (values parsed as YAML scalars/flow collections)."""
    for text in overrides:
        path, value, origin = _parse_override(text)
        located: dict[str, tuple[Any, Origin]] = {}
        cursor = located
        for part in path[:-1]:
            inner: dict[str, tuple[Any, Origin]] = {}
            cursor[part] = (inner, origin)
            cursor = inner
        cursor[path[-1]] = (_relocate(value, origin), origin)
        cfg = _merge(cfg, located, "", origins)
    return cfg


def _relocate(value: Any, origin: Origin) -> Any:
    if isinstance(value, dict):
        return {str(k): (_relocate(v, origin), origin) for k, v in value.items()}
    return value


def from_dict(cls: type, data: dict[str, Any], source: str = "<dict>") -> Any:
    """Build a config of type `cls` from a plain dict (used to re-read a run's config)."""
    return _merge(cls(), _relocate(data, Origin(source)), "", {})


def load(cls: type, path: str | Path | None, overrides: list[str] = ()) -> tuple[Any, Origins]:
    """Defaults of `cls`, then the YAML file (if any), then overrides. Returns (config, origins)."""
    origins: Origins = {}
    cfg = cls()
    if path is not None:
        cfg = _merge(cfg, _read_yaml(Path(path)), "", origins)
    cfg = apply_overrides(cfg, list(overrides), origins)
    return cfg, origins


def to_dict(cfg: Any) -> dict[str, Any]:
    return dataclasses.asdict(cfg)


def to_yaml(cfg: Any) -> str:
    return yaml.safe_dump(to_dict(cfg), sort_keys=False, default_flow_style=False)
