"""Lists and watches: watch events, the decoding of a watch body (newline-delimited JSON), and the
lister-watcher an informer runs on (an interface, and its implementation over the API client).

Component tests hand informers a fake that implements `ListerWatcher` (it can drop watches, replay events
and answer 410), so the informer's list/watch/relist logic is exercised without a server.
"""

from __future__ import annotations

import contextlib
import json
import socket
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

import urllib3

from climatik.kube.errors import UnavailableError

if TYPE_CHECKING:
    from climatik.kube.client import KubeClient, Resource


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


@dataclass(frozen=True)
class ListResult:
    """A consistent snapshot: the items and the resourceVersion to watch from."""

    items: list[dict[str, Any]]
    resource_version: str


class ListerWatcher(Protocol):
    """Lists a collection and watches it from a resourceVersion.

    `list` raises `GoneError` when a continue token expired, `watch` when the version is too old (a 410 that
    comes as an ERROR event inside the stream is the informer's to handle). Other failures raise `KubeError`.
    """

    def list(self) -> ListResult: ...

    def watch(self, *, resource_version: str, timeout_seconds: int) -> WatchStream: ...


class ClientListerWatcher:
    """Lists (in pages) and watches one resource through a `KubeClient`, with optional selectors.

    A watch's read timeout is its server timeout plus `read_timeout_margin`: the server ends a healthy watch
    first, so a read that outlasts it means the connection hung.
    """

    def __init__(
        self,
        client: KubeClient,
        resource: Resource,
        *,
        namespace: str | None = None,
        label_selector: str = "",
        field_selector: str = "",
        page_size: int = 500,
        read_timeout_margin: float = 30.0,
    ) -> None:
        self._client = client
        self._resource = resource
        self._namespace = namespace
        self._label_selector = label_selector
        self._field_selector = field_selector
        self._page_size = page_size
        self._margin = read_timeout_margin

    def list(self) -> ListResult:
        items: list[dict[str, Any]] = []
        token = ""
        resource_version = ""
        while True:
            page = self._client.list(
                self._resource,
                namespace=self._namespace,
                label_selector=self._label_selector,
                field_selector=self._field_selector,
                limit=self._page_size,
                continue_token=token,
            )
            page_items = page.get("items") or []
            # List items carry no apiVersion/kind; fill them in so cached objects look like watched ones.
            for item in page_items:
                item.setdefault("apiVersion", self._resource.api_version)
                item.setdefault("kind", self._resource.kind)
            items.extend(page_items)
            metadata = page.get("metadata") or {}
            resource_version = str(metadata.get("resourceVersion", "") or resource_version)
            token = str(metadata.get("continue", "") or "")
            if not token:
                return ListResult(items, resource_version)

    def watch(self, *, resource_version: str, timeout_seconds: int) -> WatchStream:
        return self._client.watch(
            self._resource,
            namespace=self._namespace,
            label_selector=self._label_selector,
            field_selector=self._field_selector,
            resource_version=resource_version,
            timeout_seconds=timeout_seconds,
            read_timeout=timeout_seconds + self._margin,
            allow_bookmarks=True,
        )
