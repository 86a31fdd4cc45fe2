"""Typed objects decoded once per resourceVersion, for controllers that read a whole cache on every pass."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Generic, TypeVar

T = TypeVar("T")


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
