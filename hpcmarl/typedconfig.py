"""Typed configs from plain data: dataclass schemas built from YAML mappings with type checking, dotted
``key=value`` overrides, and back to a mapping or YAML; schema-independent (the run config's schema is
:mod:`hpcmarl.config`).

Every error names the offending key and is raised as :class:`ConfigError` (the CLI turns it into a one-line message
and exit status 2). A dataclass field whose ``metadata`` holds ``"build"`` is built by that callable
``(value, key)`` instead of by its type (the run config's ``algo`` section, whose dataclass its ``name`` picks).
"""
from __future__ import annotations

import dataclasses
import difflib
import re
import reprlib
import typing
from typing import Any, Dict, List, Literal, Union

import yaml

_FLOAT_RE = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?")  # YAML 1.1 reads 3e-4 as a string


class ConfigError(ValueError):
    """A bad config value; the message names the key."""


# --------------------------------------------------------------------------------------------------
# YAML from anywhere, and values quoted in messages
# --------------------------------------------------------------------------------------------------
MAX_NODES, MAX_DEPTH = 100_000, 64  # what a config may expand to: values reached (aliases counted each time), nesting


def safe_yaml(text, where: str, error=ConfigError):
    """``yaml.safe_load(text)`` (a string or a stream) for a document from anywhere: every way it can fail is one
    ``error`` line naming ``where`` — bad YAML, nesting too deep for the parser (RecursionError), and a document that
    expands past :data:`MAX_NODES` values or :data:`MAX_DEPTH` levels (an alias bomb is small for ``safe_load``,
    not for what walks or prints the result)."""
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise error(f"{where} is not valid YAML: {str(e).splitlines()[0] if str(e) else type(e).__name__}") from None
    except RecursionError:
        raise error(f"{where} is nested too deeply to be read") from None
    seen, stack = 0, [(data, 1)]
    while stack:
        node, depth = stack.pop()
        seen += 1
        if seen > MAX_NODES or depth > MAX_DEPTH:
            raise error(f"{where} expands to more than {MAX_NODES:,} values or {MAX_DEPTH} levels of nesting "
                        f"(YAML aliases count each time they are used); refused")
        if isinstance(node, dict):
            stack.extend((v, depth + 1) for kv in node.items() for v in kv)
        elif isinstance(node, list):
            stack.extend((v, depth + 1) for v in node)
    return data


_BRIEF = reprlib.Repr()
_BRIEF.maxlevel, _BRIEF.maxdict, _BRIEF.maxlist, _BRIEF.maxstring, _BRIEF.maxother = 3, 4, 4, 60, 60


def brief(value, limit: int = 120) -> str:
    """``repr(value)`` cut to about ``limit`` characters without building the whole text (error messages)."""
    text = _BRIEF.repr(value)
    return text if len(text) <= limit else text[:limit] + "..."


# --------------------------------------------------------------------------------------------------
# dict -> dataclass with type checking
# --------------------------------------------------------------------------------------------------
def _type_name(tp) -> str:
    origin = typing.get_origin(tp)
    if origin is Literal:
        return "one of " + ", ".join(map(str, typing.get_args(tp)))
    if origin is Union:
        return " or ".join(_type_name(a) for a in typing.get_args(tp))
    if origin in (list, List):
        return "list"
    if origin in (dict, Dict):
        return "mapping"
    if tp is type(None):
        return "null"
    return getattr(tp, "__name__", str(tp))


def _coerce(value, tp, key: str):
    origin = typing.get_origin(tp)
    if tp is Any:
        return value
    if origin is Union:
        for arg in typing.get_args(tp):
            try:
                return _coerce(value, arg, key)
            except ConfigError:
                continue
        raise ConfigError(f"config key '{key}': expected {_type_name(tp)}, got {brief(value)}")
    if tp is type(None):
        if value is None:
            return None
        raise ConfigError(f"config key '{key}': expected null, got {brief(value)}")
    if origin is Literal:  # a field's allowed values, declared in its type (the reference page lists them)
        allowed = typing.get_args(tp)
        if any(value == a and type(value) is type(a) for a in allowed):
            return value
        raise ConfigError(f"config key '{key}': must be one of {', '.join(map(str, allowed))}, not {brief(value)}")
    if dataclasses.is_dataclass(tp):
        return _build(tp, value, key)
    if origin in (list, List):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"config key '{key}': expected a list, got {brief(value)}")
        (arg,) = typing.get_args(tp) or (Any,)
        return [_coerce(v, arg, f"{key}[{i}]") for i, v in enumerate(value)]
    if origin in (dict, Dict):
        if not isinstance(value, dict):
            raise ConfigError(f"config key '{key}': expected a mapping, got {brief(value)}")
        _, varg = typing.get_args(tp) or (str, Any)
        return {str(k): _coerce(v, varg, f"{key}.{k}") for k, v in value.items()}
    if tp is bool:
        if isinstance(value, bool):
            return value
    elif tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
    elif tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str) and _FLOAT_RE.fullmatch(value.strip()):
            return float(value)
    elif tp is str:
        if isinstance(value, str):
            return value
    else:  # pragma: no cover - schema uses only the types above
        return value
    raise ConfigError(f"config key '{key}': expected {_type_name(tp)}, got {brief(value)}")


def _build(cls, data, prefix: str, hint=None):
    """``hint(key)``: what to say of an unknown key instead of guessing a near name ("" for no hint)."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"config key '{prefix or '<root>'}': expected a mapping, got {brief(data)}")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    for k in data:
        if k not in names:
            said = hint(k) if hint else ""
            if said:
                raise ConfigError(f"unknown config key '{_join(prefix, k)}': {said}")
            near = difflib.get_close_matches(str(k), names, n=1)
            guess = f" (did you mean '{_join(prefix, near[0])}'?)" if near else ""
            raise ConfigError(f"unknown config key '{_join(prefix, k)}'{guess}")
    kwargs = {}
    for f in dataclasses.fields(cls):
        name = f.name
        if name not in data:
            continue
        key = _join(prefix, name)
        if "build" in f.metadata:  # a section whose dataclass its value picks (e.g. the run config's algo)
            kwargs[name] = f.metadata["build"](data[name], key)
        else:
            kwargs[name] = _coerce(data[name], hints[name], key)
    return cls(**kwargs)


def _join(prefix: str, name) -> str:
    return f"{prefix}.{name}" if prefix else str(name)


def to_dict(cfg) -> dict:
    return dataclasses.asdict(cfg)


def to_yaml(cfg) -> str:
    """The resolved config; a comment first lists the values hpcmarl derived (they were not set by the user)."""
    text = yaml.safe_dump(to_dict(cfg), sort_keys=False)
    derived = getattr(cfg, "derived", None)
    if derived:
        text = "".join(f"# derived: {k} = {v}\n" for k, v in derived.items()) + text
    return text


# --------------------------------------------------------------------------------------------------
# overrides
# --------------------------------------------------------------------------------------------------
def parse_override(text: str):
    if "=" not in text:
        raise ConfigError(f"override {brief(text)} is not of the form key=value")
    key, raw = text.split("=", 1)
    key = key.strip()
    if not key or any(not part for part in key.split(".")):
        raise ConfigError(f"override {brief(text)} has an empty key")
    value = safe_yaml(raw, f"config key '{key}': the value {brief(raw)}") if raw.strip() else ""
    return key, value


def apply_overrides(data: dict, overrides, schema=None) -> dict:
    """Apply ``key=value`` overrides to ``data``; ``schema``: the dataclass it will be built into (an unset list of
    sections that a key indexes, e.g. ``league.groups.0.x``, starts from the schema's default list)."""
    for text in overrides:
        key, value = parse_override(text)
        node = data
        parts = key.split(".")
        for k, part in enumerate(parts[:-1]):
            if isinstance(node, dict) and node.get(part) is None and parts[k + 1].isdigit():
                # e.g. league.groups.0.x on the default list
                node[part] = _schema_default(schema, parts[:k + 1]) if schema is not None else None
            if isinstance(node, list):  # an entry of a list of sections, e.g. league.groups.0.strategy
                if not part.isdigit() or int(part) >= len(node):
                    raise ConfigError(f"config key '{key}': no list entry {part!r} (the list has {len(node)})")
                nxt = node[int(part)]
            else:
                nxt = node.get(part)
                if nxt is None:
                    nxt = node[part] = {}
            if not isinstance(nxt, (dict, list)):
                raise ConfigError(f"config key '{key}': '{part}' is not a section")
            node = nxt
        if isinstance(node, list):
            if not parts[-1].isdigit() or int(parts[-1]) >= len(node):
                raise ConfigError(f"config key '{key}': no list entry {parts[-1]!r} (the list has {len(node)})")
            node[int(parts[-1])] = value
        else:
            node[parts[-1]] = value
    return data


def _schema_default(schema, path: List[str]):
    """A deep copy of the schema's default value at ``path`` (``None`` if there is none)."""
    node = to_dict(schema())
    for part in path:
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return yaml.safe_load(yaml.safe_dump(node))


def check(cond: bool, key: str, msg: str):
    """Raise :class:`ConfigError` naming ``key`` unless ``cond`` (for algorithm configs' ``validate`` too)."""
    if not cond:
        raise ConfigError(f"config key '{key}': {msg}")


ABSENT = "<absent>"  # a key that one of two compared configs does not have


def flatten_config(cfg, prefix: str = "") -> Dict[str, object]:
    """Nested config dict -> ``{"algo.lr": 0.0005, ...}``; empty dicts and lists are leaf values."""
    out: Dict[str, object] = {}
    if isinstance(cfg, dict) and cfg:
        for k, v in cfg.items():
            key = f"{prefix}.{k}" if prefix else str(k)
            if isinstance(v, dict) and v:
                out.update(flatten_config(v, key))
            else:
                out[key] = v
    elif prefix:
        out[prefix] = cfg
    return out
