"""An Event recorder (core/v1 Events) that folds repeats into one Event by bumping its count.

Events are best effort: a failure to record one is logged and never fails a reconcile.
"""

from __future__ import annotations

import secrets
import threading
from collections import OrderedDict
from collections.abc import Mapping
from typing import Any

import structlog

from climatik.api.meta import format_time
from climatik.clock import Clock, SystemClock
from climatik.kube.client import KubeClient, ResourceClient
from climatik.kube.errors import KubeError, NotFoundError

log = structlog.get_logger(__name__)

NORMAL = "Normal"
WARNING = "Warning"

_MAX_MESSAGE = 1024


class EventRecorder:
    """Records Events about objects on behalf of `component` (e.g. "climatik-monitor").

    An Event identical to one recorded earlier (same object, type, reason and message) is not created
    again: the earlier one gets count+1 and a new lastTimestamp, as client-go's event correlator does.
    The memory of recent Events is bounded by `cache_size`.
    """

    def __init__(
        self,
        client: KubeClient,
        *,
        component: str,
        host: str = "",
        clock: Clock | None = None,
        cache_size: int = 4096,
    ) -> None:
        self._events: ResourceClient = client.events
        self._component = component
        self._host = host
        self._clock = clock or SystemClock()
        self._cache_size = cache_size
        self._lock = threading.Lock()
        self._recent: OrderedDict[tuple[str, ...], tuple[str, str, int]] = OrderedDict()  # -> (ns, name, count)

    def normal(self, obj: Mapping[str, Any], reason: str, message: str) -> None:
        self.record(obj, type=NORMAL, reason=reason, message=message)

    def warning(self, obj: Mapping[str, Any], reason: str, message: str) -> None:
        self.record(obj, type=WARNING, reason=reason, message=message)

    def record(self, obj: Mapping[str, Any], *, type: str, reason: str, message: str) -> None:
        """Record (or count again) an Event about `obj`. Never raises."""
        message = message[:_MAX_MESSAGE]
        involved = _reference(obj)
        key = (*involved.values(), type, reason, message)
        now = format_time(self._clock.wall())
        with self._lock:
            seen = self._recent.get(key)
        try:
            if seen is not None:
                namespace, name, count = seen
                self._events.patch(name, {"count": count + 1, "lastTimestamp": now}, namespace=namespace)
                self._remember(key, (namespace, name, count + 1))
                return
        except NotFoundError:
            pass  # expired (Events live about an hour): start a new one
        except KubeError as exc:
            log.warning("event_not_recorded", reason=reason, object=involved.get("name"), error=str(exc))
            return
        self._create(key, involved, type=type, reason=reason, message=message, now=now)

    def _create(
        self, key: tuple[str, ...], involved: dict[str, str], *, type: str, reason: str, message: str, now: str
    ) -> None:
        # Cluster-scoped objects get their Events in "default", as kubectl describe expects.
        namespace = involved.get("namespace") or "default"
        name = f"{involved['name']}.{secrets.token_hex(8)}"
        body = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"name": name, "namespace": namespace},
            "involvedObject": involved,
            "type": type,
            "reason": reason,
            "message": message,
            "source": {"component": self._component, **({"host": self._host} if self._host else {})},
            "reportingComponent": self._component,
            "reportingInstance": self._host or self._component,
            "firstTimestamp": now,
            "lastTimestamp": now,
            "count": 1,
        }
        try:
            self._events.create(body)
        except KubeError as exc:
            log.warning("event_not_recorded", reason=reason, object=involved.get("name"), error=str(exc))
            return
        self._remember(key, (namespace, name, 1))

    def _remember(self, key: tuple[str, ...], value: tuple[str, str, int]) -> None:
        with self._lock:
            self._recent[key] = value
            self._recent.move_to_end(key)
            while len(self._recent) > self._cache_size:
                self._recent.popitem(last=False)


def _reference(obj: Mapping[str, Any]) -> dict[str, str]:
    meta = obj.get("metadata") or {}
    ref = {
        "apiVersion": str(obj.get("apiVersion", "")),
        "kind": str(obj.get("kind", "")),
        "name": str(meta.get("name", "")),
        "namespace": str(meta.get("namespace", "") or ""),
        "uid": str(meta.get("uid", "") or ""),
    }
    return {k: v for k, v in ref.items() if v}
