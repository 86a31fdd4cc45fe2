"""PowerDomain: a physical power budget (a rack's PDU, a row's busway, a hall's feed) over the nodes its selector
chooses, shared by every workload running there; domains form a tree through `parent` (hall > row > rack).

The budget in force at a moment (`effective_budget`) is the spec's budget, or that of the schedule window the
moment falls in (time-of-day windows, optionally on some weekdays, in the domain's time zone), moved towards it
at no more than `rampWattsPerSecond`: a rise is spread out, and a scheduled fall starts early enough to be in
place when its window opens, so neither a release nor a window produces a synchronised surge. A fall that is not
scheduled (the spec lowered) takes effect at once: a lower budget is a promise.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from climatik.api.codec import from_dict, to_dict
from climatik.api.conditions import Condition
from climatik.api.constants import API_VERSION, DOMAIN_KIND
from climatik.api.meta import ObjectMeta
from climatik.api.policy import LabelSelector

WEEKDAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
#: How far ahead a scheduled fall is looked for, so that the ramp can start early.
LOOKAHEAD = dt.timedelta(days=8)


@dataclass(frozen=True)
class BudgetWindow:
    """A budget in force from `start` to `end` (HH:MM, local to the domain's time zone; an end before the start
    runs past midnight), on `days` (weekdays the window starts on; all when absent)."""

    start: str
    end: str
    budget: int
    days: list[str] | None = None


@dataclass(frozen=True)
class PowerDomainSpec:
    budget: int
    node_selector: LabelSelector
    parent: str | None = None
    schedule: list[BudgetWindow] | None = None
    time_zone: str | None = None
    ramp_watts_per_second: int | None = None
    default_priority: int | None = None


@dataclass(frozen=True)
class ChildShare:
    """What a child domain was granted: the node budgets handed out within it (W), the part of them lent from
    unused headroom, and what its nodes asked for."""

    name: str
    watts: float
    borrowed: float | None = None
    demand: float | None = None


@dataclass(frozen=True)
class PolicyShare:
    """What a policy was given within the domain: its node budgets on the domain's nodes (W), the part of them lent
    from others' unused headroom, its guarantee, and what its GPUs there asked for."""

    name: str
    watts: float
    borrowed: float | None = None
    guaranteed: float | None = None
    demand: float | None = None


@dataclass(frozen=True)
class PowerDomainStatus:
    observed_generation: int | None = None
    last_updated: str | None = None
    budget: float | None = None
    target_budget: float | None = None
    budget_since: str | None = None
    power: float | None = None
    node_count: int | None = None
    allocated: float | None = None
    borrowed: float | None = None
    children: list[ChildShare] | None = None
    policies: list[PolicyShare] | None = None
    conditions: list[Condition] | None = None


@dataclass(frozen=True)
class PowerDomain:
    """Cluster-scoped."""

    metadata: ObjectMeta
    spec: PowerDomainSpec
    status: PowerDomainStatus | None = None

    @classmethod
    def from_api(cls, data: dict[str, Any]) -> PowerDomain:
        return cls(
            metadata=ObjectMeta.from_api(data.get("metadata") or {}),
            spec=from_dict(PowerDomainSpec, data.get("spec"), "spec"),
            status=from_dict(PowerDomainStatus, data["status"], "status") if data.get("status") is not None else None,
        )

    def to_api(self) -> dict[str, Any]:
        out: dict[str, Any] = {"apiVersion": API_VERSION, "kind": DOMAIN_KIND, "metadata": self.metadata.to_api(),
                               "spec": to_dict(self.spec)}
        if self.status is not None:
            out["status"] = to_dict(self.status)
        return out

    @property
    def name(self) -> str:
        return self.metadata.name


def schedule_problems(spec: PowerDomainSpec) -> list[str]:
    """What is wrong with the schedule and time zone that the CRD cannot judge (the API server checks formats)."""
    problems = []
    try:
        _zone(spec.time_zone)
    except ValueError as error:
        problems.append(str(error))
    for window in spec.schedule or []:
        try:
            if _minutes(window.start) == _minutes(window.end):
                problems.append(f"schedule window {window.start}-{window.end} is empty")
        except ValueError as error:
            problems.append(str(error))
        problems += [f"schedule window {window.start}-{window.end}: {day!r} is not one of {', '.join(WEEKDAYS)}"
                     for day in window.days or [] if day not in WEEKDAYS]
    return problems


def scheduled_budget(spec: PowerDomainSpec, at: dt.datetime) -> int:
    """The budget the spec asks for at `at`: the lowest window open then, else the spec's budget. Windows are never
    above the spec's budget (the lower wins), so a window can only tighten."""
    zone = _zone(spec.time_zone)
    local = at.astimezone(zone)
    budgets = [window.budget for window in spec.schedule or [] if _open(window, local)]
    return min([spec.budget, *budgets])


def effective_budget(spec: PowerDomainSpec, previous: tuple[float, dt.datetime] | None, at: dt.datetime) -> float:
    """The budget in force at `at`, given the one in force at an earlier moment (`previous`: watts and when; None
    for a new domain). See the module docstring."""
    target = float(scheduled_budget(spec, at))
    ramp = spec.ramp_watts_per_second
    if ramp is None or previous is None:
        return target
    watts, since = previous
    elapsed = max((at - since).total_seconds(), 0.0)
    budget = min(target, watts + ramp * elapsed) if target > watts else target
    # A scheduled fall is met when its window opens: come down early, at the ramp, towards it.
    for moment, value in _upcoming(spec, at):
        budget = min(budget, value + ramp * (moment - at).total_seconds())
    return max(budget, 0.0)


def _upcoming(spec: PowerDomainSpec, at: dt.datetime) -> list[tuple[dt.datetime, int]]:
    """Every moment within LOOKAHEAD at which a window opens, with the budget from then."""
    if not spec.schedule:
        return []
    zone = _zone(spec.time_zone)
    local = at.astimezone(zone)
    moments = []
    for offset in range(LOOKAHEAD.days + 1):
        day = (local + dt.timedelta(days=offset)).date()
        for window in spec.schedule:
            hours, minutes = divmod(_minutes(window.start), 60)
            opens = dt.datetime.combine(day, dt.time(hours, minutes), tzinfo=zone)
            if local < opens <= local + LOOKAHEAD and (not window.days or WEEKDAYS[opens.weekday()] in window.days):
                moments.append((opens, scheduled_budget(spec, opens)))
    return moments


def _open(window: BudgetWindow, local: dt.datetime) -> bool:
    start, end = _minutes(window.start), _minutes(window.end)
    now = local.hour * 60 + local.minute
    if start < end:
        return start <= now < end and _on(window, local.weekday())
    # Past midnight: the part before midnight belongs to today's start, the part after to yesterday's.
    if now >= start:
        return _on(window, local.weekday())
    return now < end and _on(window, (local.weekday() - 1) % 7)


def _on(window: BudgetWindow, weekday: int) -> bool:
    return not window.days or WEEKDAYS[weekday] in window.days


def _minutes(text: str) -> int:
    try:
        hours, minutes = (int(part) for part in text.split(":"))
    except ValueError:
        raise ValueError(f"schedule time {text!r} is not HH:MM") from None
    if not (0 <= hours < 24 and 0 <= minutes < 60):
        raise ValueError(f"schedule time {text!r} is not HH:MM")
    return hours * 60 + minutes


def _zone(name: str | None) -> dt.tzinfo:
    if not name:
        return dt.UTC
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"time zone {name!r} is not known (an IANA name such as Europe/Paris)") from None

