"""metav1.LabelSelector and its matching semantics (matchLabels and every matchExpressions operator)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

OPERATORS = ("In", "NotIn", "Exists", "DoesNotExist")


@dataclass(frozen=True)
class SelectorRequirement:
    """One matchExpressions entry."""

    key: str
    operator: str
    values: list[str] | None = None

    def matches(self, labels: Mapping[str, str]) -> bool:
        present = self.key in labels
        if self.operator == "In":
            return present and labels[self.key] in (self.values or [])
        if self.operator == "NotIn":
            return not present or labels[self.key] not in (self.values or [])
        if self.operator == "Exists":
            return present
        if self.operator == "DoesNotExist":
            return not present
        raise ValueError(f"unknown selector operator {self.operator!r}")

    def problem(self) -> str | None:
        """Why this requirement is invalid, or None (the API server checks this too; cached objects may predate it)."""
        if self.operator not in OPERATORS:
            return f"operator {self.operator!r} is not one of {', '.join(OPERATORS)}"
        if self.operator in ("In", "NotIn") and not self.values:
            return f"operator {self.operator} on key {self.key!r} needs at least one value"
        if self.operator in ("Exists", "DoesNotExist") and self.values:
            return f"operator {self.operator} on key {self.key!r} takes no values"
        return None


@dataclass(frozen=True)
class LabelSelector:
    """Selects objects by labels. An empty selector selects everything, as in Kubernetes."""

    match_labels: dict[str, str] | None = None
    match_expressions: list[SelectorRequirement] | None = None

    def matches(self, labels: Mapping[str, str] | None) -> bool:
        labels = labels or {}
        for key, value in (self.match_labels or {}).items():
            if labels.get(key) != value:
                return False
        return all(requirement.matches(labels) for requirement in self.match_expressions or [])

    def problems(self) -> list[str]:
        return [p for r in self.match_expressions or [] if (p := r.problem()) is not None]
