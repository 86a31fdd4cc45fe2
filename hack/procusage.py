"""Resident memory and CPU time of a process, from /proc (for the benchmarks)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class ProcessUsage:
    rss_kib: int
    peak_rss_kib: int
    cpu_seconds: float


def process_usage(pid: int) -> ProcessUsage:
    """VmRSS, VmHWM and user + system CPU time of a live process."""
    status = {line.split(":", 1)[0]: line.split(":", 1)[1] for line in
              Path(f"/proc/{pid}/status").read_text().splitlines() if ":" in line}
    # Fields after the command name (which may hold spaces); utime and stime are fields 14 and 15.
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = int(fields[11]) + int(fields[12])
    return ProcessUsage(rss_kib=int(status["VmRSS"].split()[0]), peak_rss_kib=int(status["VmHWM"].split()[0]),
                        cpu_seconds=ticks / os.sysconf("SC_CLK_TCK"))
