"""The NodeFrequencies status a tuner writes from one apply: entries, counts, inventory and conditions."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from typing import Any

from climatik.api import NodeFrequenciesStatus, format_time, to_dict
from climatik.api.conditions import set_condition
from climatik.api.nodefrequencies import FAILED, UNSUPPORTED
from climatik.tune.applier import ApplyReport

READY = "Ready"
DEGRADED = "Degraded"


def desired_status(current: Mapping[str, Any] | None, report: ApplyReport, *, generation: int | None,
                   now: dt.datetime) -> dict[str, Any] | None:
    """The status to write, or None when it would say nothing new (lastUpdated only moves with content)."""
    current = dict(current or {})
    body = to_dict(NodeFrequenciesStatus(
        observed_generation=generation,
        gpu_count=report.gpu_count,
        applied_count=report.applied_count,
        pending_count=report.pending_count + report.failed_count + report.unsupported_count,
        gpu_frequencies=report.gpus,
        cpu_frequencies=report.cpus,
        inventory=report.inventory,
    ))
    body["conditions"] = _conditions(current.get("conditions"), report, generation, now)
    unchanged = {k: v for k, v in current.items() if k != "lastUpdated"} == body
    if unchanged:
        return None
    body["lastUpdated"] = format_time(now)
    return body


def _conditions(existing: Any, report: ApplyReport, generation: int | None, now: dt.datetime) -> list[dict[str, Any]]:
    total = len(report.gpus) + len(report.cpus)
    troubled = report.failed_count + report.unsupported_count
    if report.dry_run:
        ready = (False, "DryRun", f"dry run: {total} entries computed, nothing applied")
    elif report.pending_count or troubled:
        ready = (False, "NotAllApplied", f"{report.applied_count} of {total} entries applied")
    else:
        ready = (True, "Applied", f"all {total} entries applied")
    conditions = set_condition(existing, type=READY, status=ready[0], reason=ready[1], message=ready[2],
                               observed_generation=generation, now=now)
    if troubled:
        problems = [f"{device}: {status}: {message}" for device, status, message in troubled_entries(report)]
        degraded = (True, "EntriesFailed", "; ".join(problems)[:1000])
    else:
        degraded = (False, "AsExpected", "no entry failed")
    return set_condition(conditions, type=DEGRADED, status=degraded[0], reason=degraded[1], message=degraded[2],
                         observed_generation=generation, now=now)


def troubled_entries(report: ApplyReport) -> list[tuple[str, str, str]]:
    """(device, status, message) of every entry that failed or is unsupported."""
    entries = [(g.gpu_id, g.status, g.message or "") for g in report.gpus]
    entries += [(f"cpu{c.cpu_id}", c.status, c.message or "") for c in report.cpus]
    return [entry for entry in entries if entry[1] in (FAILED, UNSUPPORTED)]
