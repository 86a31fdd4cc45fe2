"""The lister-watcher an informer runs on: an interface, and its implementation over the API client.

Component tests hand informers a fake that implements `ListerWatcher` (it can drop watches, replay events
and answer 410), so the informer's list/watch/relist logic is exercised without a server.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

from climatik.kube.client import KubeClient
from climatik.kube.resources import Resource
from climatik.kube.watch import WatchStream


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
