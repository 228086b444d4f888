"""Is the machine busy while we time? Measured, not guessed: the CPU time other processes used
during the timing (the machine's busy time from /proc/stat minus our timing children's own CPU
time), hypervisor steal, and how far the fresh timing processes disagree.

Why: on a loaded 2-core machine the same-run ratio favoured the small models (a run printed
17.56x, `compress bench` minutes later 9.17x), so interleaving alone does not cancel load.
"""
from __future__ import annotations

import os
import resource
import time
from dataclasses import dataclass

import numpy as np

BUSY_OTHER_SHARE = 0.10  # other processes used over 10% of all cores while we timed
BUSY_STEAL_SHARE = 0.05  # the hypervisor took over 5% of our CPU time
SPREAD_NOTE = 0.10  # fresh processes disagree on a ratio by more than 10% of its median


def _proc_stat() -> tuple[float, float, float] | None:
    """(busy seconds, steal seconds, total seconds) of all CPUs since boot; None off Linux."""
    try:
        with open("/proc/stat") as f:
            fields = [int(v) for v in f.readline().split()[1:9]]
    except (OSError, ValueError):
        return None
    user, nice, system, idle, iowait, irq, softirq, steal = fields
    hz = os.sysconf("SC_CLK_TCK")
    return (user + nice + system + irq + softirq) / hz, steal / hz, sum(fields) / hz


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


@dataclass
class Probe:
    """Start it before timing, `finish()` after: what else ran meanwhile."""

    wall: float = 0.0
    stat: tuple | None = None
    ours: float = 0.0

    @classmethod
    def start(cls) -> Probe:
        return cls(time.perf_counter(), _proc_stat(), _children_cpu() + time.process_time())

    def finish(self, per_process_ratios: dict[str, list[float]]) -> dict:
        wall = time.perf_counter() - self.wall
        ours = _children_cpu() + time.process_time() - self.ours
        cores = os.cpu_count() or 1
        other = steal = None
        end = _proc_stat()
        if self.stat and end:
            busy, stolen, total = (e - s for e, s in zip(end, self.stat, strict=True))
            other = max(0.0, busy - ours) / (wall * cores) if wall > 0 else 0.0
            steal = stolen / total if total > 0 else 0.0
        spread = max((float((max(r) - min(r)) / np.median(r)) for r in per_process_ratios.values() if len(r) > 1),
                     default=0.0)
        reasons = []
        if other is not None and other > BUSY_OTHER_SHARE:
            reasons.append(f"other processes used {other:.0%} of the {cores} cores while timing")
        if steal is not None and steal > BUSY_STEAL_SHARE:
            reasons.append(f"the hypervisor stole {steal:.0%} of CPU time")
        load = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
        return {"busy": bool(reasons), "reasons": reasons, "other_cpu_share": other, "steal_share": steal,
                "load_average_1min": load, "cores": cores, "process_spread": spread,
                "process_spread_high": spread > SPREAD_NOTE, "seconds": round(wall, 2)}
