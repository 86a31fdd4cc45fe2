"""Lossless conversion between the API's camelCase JSON dicts and the typed dataclasses of climatik.api, and a
cache of typed objects decoded once per resourceVersion.

Every field of a resource dataclass is optional in the codec's eyes: a key absent from the dict becomes the
field's default (None for optional fields) and a None field is left out of the dict again, so
`to_dict(from_dict(cls, d)) == d` for any object the CRD schema admits. The JSON name of a field is its name in
camelCase unless the field's metadata says otherwise (`field(metadata={"json": "tuneCPUs"})`); a field whose
metadata has `"skip": True` is not part of the JSON form.
"""

from __future__ import annotations

import dataclasses
import functools
import threading
import types
import typing
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Generic, TypeVar, Union

T = TypeVar("T")


class DecodeError(ValueError):
    """A dict does not have the shape a dataclass expects; the message names the offending field path."""


def json_name(field: dataclasses.Field[Any]) -> str:
    """The JSON key of a dataclass field."""
    explicit = field.metadata.get("json")
    if explicit:
        return str(explicit)
    head, *rest = field.name.split("_")
    return head + "".join(part[:1].upper() + part[1:] for part in rest)


@functools.cache
def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def json_fields(cls: type) -> list[dataclasses.Field[Any]]:
    """The fields of a dataclass that appear in its JSON form."""
    return [field for field in dataclasses.fields(cls) if not field.metadata.get("skip")]


def from_dict(cls: type[T], data: Any, path: str = "") -> T:
    """Build dataclass `cls` from an API dict, raising DecodeError with the field path on a bad shape."""
    if not isinstance(data, dict):
        raise DecodeError(f"{path or '<root>'}: expected an object, got {type(data).__name__}")
    hints = _hints(cls)  # type: ignore[arg-type]
    kwargs: dict[str, Any] = {}
    for field in json_fields(cls):
        key = json_name(field)
        if key in data:
            kwargs[field.name] = _decode(hints[field.name], data[key], f"{path}.{key}" if path else key)
    return cls(**kwargs)


def to_dict(obj: Any) -> dict[str, Any]:
    """The API dict of a dataclass, leaving out fields that are None."""
    out: dict[str, Any] = {}
    for field in json_fields(type(obj)):
        value = getattr(obj, field.name)
        if value is not None:
            out[json_name(field)] = _encode(value)
    return out


def _encode(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return to_dict(value)
    if isinstance(value, list):
        return [_encode(item) for item in value]
    if isinstance(value, dict):
        return {key: _encode(item) for key, item in value.items()}
    return value


def _decode(hint: Any, value: Any, path: str) -> Any:
    origin = typing.get_origin(hint)
    if origin in (Union, types.UnionType):
        args = [arg for arg in typing.get_args(hint) if arg is not type(None)]
        if value is None:
            return None
        return _decode(args[0], value, path) if len(args) == 1 else value
    if hint is Any:
        return value
    if dataclasses.is_dataclass(hint):
        return from_dict(hint, value, path)  # type: ignore[arg-type]
    if origin is list:
        if not isinstance(value, list):
            raise DecodeError(f"{path}: expected a list, got {type(value).__name__}")
        (item,) = typing.get_args(hint)
        return [_decode(item, entry, f"{path}[{i}]") for i, entry in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise DecodeError(f"{path}: expected an object, got {type(value).__name__}")
        _, item = typing.get_args(hint)
        return {key: _decode(item, entry, f"{path}.{key}") for key, entry in value.items()}
    return _decode_scalar(hint, value, path)


def _decode_scalar(hint: Any, value: Any, path: str) -> Any:
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise DecodeError(f"{path}: expected a number, got {value!r}")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise DecodeError(f"{path}: expected an integer, got {value!r}")
        return value
    if hint in (str, bool) and not isinstance(value, hint):
        raise DecodeError(f"{path}: expected {hint.__name__}, got {value!r}")
    return value


class DecodedCache(Generic[T]):
    """Remembers the typed form of each API object by key and resourceVersion.

    Cached API objects are never mutated in place (a change arrives as a new object with a new resourceVersion),
    so a decoded object can be reused until the version moves. Entries of objects no longer present are dropped
    on every `decode_all`.
    """

    def __init__(self, decode: Callable[[dict[str, Any]], T]) -> None:
        self._decode = decode
        self._lock = threading.Lock()
        self._entries: dict[str, tuple[str, T]] = {}

    def decode_all(self, objects: Iterable[Mapping[str, Any]]) -> list[T | Exception]:
        """Each object's typed form, or the exception decoding it raised (ValueError and its kind)."""
        out: list[T | Exception] = []
        seen: set[str] = set()
        with self._lock:
            for obj in objects:
                metadata = obj.get("metadata") or {}
                key = f"{metadata.get('namespace', '')}/{metadata.get('name', '')}"
                version = str(metadata.get("resourceVersion", ""))
                seen.add(key)
                cached = self._entries.get(key)
                if cached is not None and version and cached[0] == version:
                    out.append(cached[1])
                    continue
                try:
                    typed = self._decode(dict(obj))
                except ValueError as exc:
                    out.append(exc)
                    self._entries.pop(key, None)
                    continue
                self._entries[key] = (version, typed)
                out.append(typed)
            for gone in set(self._entries) - seen:
                del self._entries[gone]
        return out
