"""Object metadata and the API's time formats, shared by every Climatik resource."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

from climatik.api.codec import from_dict, json_fields, json_name, to_dict


@dataclass(frozen=True)
class ObjectMeta:
    """The parts of metav1.ObjectMeta the controllers read; everything else is carried in `extra` untouched."""

    name: str = ""
    namespace: str | None = None
    uid: str | None = None
    resource_version: str | None = None
    generation: int | None = None
    creation_timestamp: str | None = None
    deletion_timestamp: str | None = None
    labels: dict[str, str] | None = None
    annotations: dict[str, str] | None = None
    finalizers: list[str] | None = None
    extra: dict[str, Any] = field(default_factory=dict, compare=False, metadata={"skip": True})

    @classmethod
    def from_api(cls, data: dict[str, Any]) -> ObjectMeta:
        known = {json_name(f) for f in json_fields(cls)}
        extra = {key: value for key, value in data.items() if key not in known}
        return replace(from_dict(cls, data, "metadata"), extra=extra)

    def to_api(self) -> dict[str, Any]:
        return {**self.extra, **to_dict(self)}

    @property
    def key(self) -> str:
        """The work-queue key: namespace/name, or just name for cluster-scoped objects."""
        return f"{self.namespace}/{self.name}" if self.namespace else self.name


def format_time(moment: datetime) -> str:
    """RFC 3339 in UTC with second precision, as the API server writes metav1.Time."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def format_precise_time(moment: datetime) -> str:
    """RFC 3339 in UTC with milliseconds, for observation times that may be less than a second apart."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def parse_time(text: str) -> datetime:
    """Parse an RFC 3339 timestamp written by the API server or by format_time."""
    return datetime.fromisoformat(text.replace("Z", "+00:00"))
