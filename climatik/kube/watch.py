"""Watch events and the decoding of a watch response body (newline-delimited JSON) into them."""

from __future__ import annotations

import contextlib
import json
import socket
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any, Protocol

import urllib3

from climatik.kube.errors import UnavailableError

ADDED = "ADDED"
MODIFIED = "MODIFIED"
DELETED = "DELETED"
BOOKMARK = "BOOKMARK"
ERROR = "ERROR"


@dataclass(frozen=True)
class WatchEvent:
    """One watch event. For ERROR events `object` is a `Status` (with `code`, e.g. 410)."""

    type: str
    object: dict[str, Any]


class WatchStream(Protocol):
    """An open watch: iterate for events; `close()` ends it, also from another thread."""

    def __iter__(self) -> Iterator[WatchEvent]: ...

    def close(self) -> None: ...


def decode_lines(chunks: Iterable[bytes]) -> Iterator[WatchEvent]:
    """Watch events from a chunked body, whatever the chunk boundaries.

    Blank lines (keep-alives some proxies send) are skipped; a line that is not a watch event means the
    stream is corrupt, and ends it with `UnavailableError` so that the caller watches again.
    """
    buffer = b""
    for chunk in chunks:
        buffer += chunk
        if b"\n" not in chunk:
            continue
        *lines, buffer = buffer.split(b"\n")
        for line in lines:
            event = _decode(line)
            if event is not None:
                yield event
    event = _decode(buffer)
    if event is not None:
        yield event


def _decode(line: bytes) -> WatchEvent | None:
    if not line.strip():
        return None
    try:
        raw = json.loads(line)
    except ValueError as exc:
        raise UnavailableError(f"undecodable watch event: {line[:200]!r}") from exc
    if not isinstance(raw, dict) or not isinstance(raw.get("type"), str) or not isinstance(
        raw.get("object"), dict
    ):
        raise UnavailableError(f"malformed watch event: {line[:200]!r}")
    return WatchEvent(raw["type"], raw["object"])


class HttpWatchStream:
    """An open watch response. Iterate for events; `close()` (from any thread) unblocks a pending read."""

    def __init__(self, resp: Any) -> None:
        self._resp = resp
        self._closed = False

    def __iter__(self) -> Iterator[WatchEvent]:
        return decode_lines(self._chunks())

    def _chunks(self) -> Iterator[bytes]:
        try:
            yield from self._resp.stream(amt=65536, decode_content=True)
        except (urllib3.exceptions.HTTPError, OSError, ValueError) as exc:
            if self._closed:
                return
            raise UnavailableError(f"watch stream broke: {exc}") from exc
        finally:
            self._release()

    def close(self) -> None:
        self._closed = True
        # Closing the file object alone does not wake a thread blocked in recv(); shutting the socket does.
        sock = getattr(getattr(self._resp, "connection", None), "sock", None)
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
        self._release()

    def _release(self) -> None:
        try:
            self._resp.close()
            self._resp.release_conn()
        except (urllib3.exceptions.HTTPError, OSError):
            pass
