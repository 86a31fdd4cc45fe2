"""Label- and field-selector strings as the API server parses them, for the fake cluster."""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any

Predicate = Callable[[Mapping[str, Any]], bool]

_SET_RE = re.compile(r"^\s*([\w./-]+)\s+(in|notin)\s+\(([^)]*)\)\s*$")
_EQ_RE = re.compile(r"^\s*([\w./-]+)\s*(==|=|!=)\s*([\w./-]*)\s*$")
_EXISTS_RE = re.compile(r"^\s*(!?)\s*([\w./-]+)\s*$")


def parse_label_selector(text: str) -> Predicate:
    """A predicate over objects for a label selector such as `app=x,tier in (a,b),!canary`."""
    checks = [_label_requirement(part) for part in _split(text)]

    def matches(obj: Mapping[str, Any]) -> bool:
        labels = (obj.get("metadata") or {}).get("labels") or {}
        return all(check(labels) for check in checks)

    return matches


def parse_field_selector(text: str) -> Predicate:
    """A predicate for a field selector such as `metadata.name=x,spec.nodeName!=y`."""
    checks: list[Predicate] = []
    for part in _split(text):
        match = _EQ_RE.match(part)
        if match is None:
            raise ValueError(f"unparsable field selector {part!r}")
        path, op, value = match.groups()
        checks.append(_field_check(path, op, value))
    return lambda obj: all(check(obj) for check in checks)


def _split(text: str) -> list[str]:
    # Commas inside "in (a,b)" do not separate requirements.
    parts, depth, current = [], 0, ""
    for char in text:
        depth += char == "("
        depth -= char == ")"
        if char == "," and depth == 0:
            parts.append(current)
            current = ""
        else:
            current += char
    parts.append(current)
    return [p for p in parts if p.strip()]


def _label_requirement(part: str) -> Callable[[Mapping[str, str]], bool]:
    if match := _SET_RE.match(part):
        key, op, raw = match.groups()
        values = {v.strip() for v in raw.split(",") if v.strip()}
        if op == "in":
            return lambda labels: labels.get(key) in values
        return lambda labels: labels.get(key) not in values
    if match := _EQ_RE.match(part):
        key, op, value = match.groups()
        if op == "!=":
            return lambda labels: labels.get(key) != value
        return lambda labels: labels.get(key) == value
    if match := _EXISTS_RE.match(part):
        negate, key = match.groups()
        if negate:
            return lambda labels: key not in labels
        return lambda labels: key in labels
    raise ValueError(f"unparsable label selector {part!r}")


def _field_check(path: str, op: str, value: str) -> Predicate:
    def check(obj: Mapping[str, Any]) -> bool:
        current: Any = obj
        for step in path.split("."):
            current = current.get(step) if isinstance(current, Mapping) else None
        text = "" if current is None else str(current)
        return text != value if op == "!=" else text == value

    return check
