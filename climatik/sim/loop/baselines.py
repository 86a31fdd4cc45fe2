"""What the closed loop is measured against: no capping, static settings, and the oracle.

* NoCapping: the GPUs run at their defaults.
* StaticPowerLimit: every GPU of a policy gets a board power limit of level / GPU count, enforced by the GPU's own
  firmware (with its response time), as a static power-limit tool sets it (re-set when the cap changes). The
  level is the cap, or the policy's threshold share of it; a limit outside the board's range is clamped into it
  (200 W at least on an H100), as a tool must, so under its floor the policy draws more than the level.
* StaticClock: one locked clock per policy for the whole run (the best one is found with hindsight from the
  oracle: the lowest clock the oracle ever needed).
* Oracle: before every step, the highest uniform supported clock at which the policy's GPUs, under the load they
  are about to run, draw at most the cap (or the policy's threshold share of it); applied without delay. No
  controller that measures can do better at that level; against the oracle at the threshold, a controller that
  aims at the threshold (the default 90 %) is judged on what it was asked to do.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from climatik.sim.loop.harness import RunContext
from climatik.sim.loop.scenario import PlacedGpu, PolicyPlan, World
from climatik.sim.physics import GpuProfile, Load, firmware_clock_mhz, power_w


class NoCapping:
    """Leaves every GPU at its defaults."""

    label = "no capping"
    instant = True

    def start(self, ctx: RunContext) -> None:
        return None

    def before_step(self, now_s: float) -> None:
        return None


def level_w(policy: PolicyPlan, now_s: float, *, at_threshold: bool) -> float:
    """What a baseline holds `policy` to at `now_s`: its cap, or its capping threshold's share of the cap."""
    spec = policy.spec_at(now_s)
    return spec.threshold_watts if at_threshold else float(spec.power_cap_limit)


class StaticPowerLimit:
    """A per-GPU board power limit of the policy's level (cap or threshold) divided by its GPU count, clamped into
    each board's settable range."""

    instant = True

    def __init__(self, *, at_threshold: bool = False, label: str | None = None) -> None:
        self.at_threshold = at_threshold
        self.label = label or ("static power limit at threshold" if at_threshold else "static power limit")
        self._world: World | None = None
        self._applied: dict[str, float] = {}

    def start(self, ctx: RunContext) -> None:
        self._world = ctx.world

    def before_step(self, now_s: float) -> None:
        assert self._world is not None
        for policy in self._world.policies:
            placed = self._world.gpus_of(policy.name)
            share = level_w(policy, now_s, at_threshold=self.at_threshold) / len(placed)
            if self._applied.get(policy.name) != share:
                for gpu in placed:
                    low, high = gpu.gpu.profile.power_limit_range
                    gpu.node.set_power_limit(gpu.uuid, min(max(share, low), high))
                self._applied[policy.name] = share


class StaticClock:
    """One locked SM clock per policy, set before the run starts."""

    instant = True

    def __init__(self, clocks: Mapping[str, int], label: str = "best static clock") -> None:
        self.label = label
        self.clocks = dict(clocks)

    def start(self, ctx: RunContext) -> None:
        for policy in ctx.world.policies:
            for gpu in ctx.world.gpus_of(policy.name):
                gpu.node.set_locked_clock(gpu.uuid, self.clocks[policy.name])

    def before_step(self, now_s: float) -> None:
        return None


class Oracle:
    """The highest uniform clock that keeps each policy at or under its cap (or its threshold's share of the cap)
    at every step, known in advance.

    `lowest` holds, per policy, the lowest clock it needed during the run: the best static clock in hindsight.
    """

    instant = True

    def __init__(self, *, at_threshold: bool = False, label: str | None = None) -> None:
        self.at_threshold = at_threshold
        self.label = label or ("oracle at threshold" if at_threshold else "oracle")
        self._world: World | None = None
        self._applied: dict[str, int] = {}
        self._clocks: dict[str, list[int]] = {}
        self.lowest: dict[str, int] = {}

    def start(self, ctx: RunContext) -> None:
        self._world = ctx.world
        self._clocks = {policy.name: common_clocks(ctx.world.gpus_of(policy.name)) for policy in ctx.world.policies}

    def before_step(self, now_s: float) -> None:
        assert self._world is not None
        for policy in self._world.policies:
            placed = self._world.gpus_of(policy.name)
            loads = [gpu.upcoming_load() for gpu in placed]
            level = level_w(policy, now_s, at_threshold=self.at_threshold)
            mhz = highest_clock_within(placed, loads, level, self._clocks[policy.name])
            self.lowest[policy.name] = min(mhz, self.lowest.get(policy.name, mhz))
            if self._applied.get(policy.name) != mhz:
                for gpu in placed:
                    gpu.node.set_locked_clock(gpu.uuid, mhz)
                self._applied[policy.name] = mhz


def drawn_power(gpus: Sequence[PlacedGpu], loads: Sequence[Load], mhz: int) -> float:
    """What `gpus` draw under `loads` when locked at `mhz` (each one's firmware limit applied)."""
    return _drawn(_boards(gpus, loads), mhz)


def common_clocks(gpus: Sequence[PlacedGpu]) -> list[int]:
    """The clocks every one of `gpus` supports, ascending."""
    return sorted(set.intersection(*(set(p.gpu.profile.supported_clocks()) for p in gpus)))


def highest_clock_within(gpus: Sequence[PlacedGpu], loads: Sequence[Load], cap: float, clocks: Sequence[int]) -> int:
    """The highest of `clocks` (ascending) at which `gpus` draw at most `cap` (the lowest one when none does)."""
    boards = _boards(gpus, loads)
    if _drawn(boards, clocks[-1]) <= cap:
        return clocks[-1]
    low, high = 0, len(clocks) - 1
    # Invariant: clocks[high] draws more than the cap; clocks[low] fits unless low == 0 and nothing fits.
    while high - low > 1:
        middle = (low + high) // 2
        if _drawn(boards, clocks[middle]) <= cap:
            low = middle
        else:
            high = middle
    return clocks[low]


_Boards = list[tuple[GpuProfile, Load, float, int]]


def _boards(gpus: Sequence[PlacedGpu], loads: Sequence[Load]) -> _Boards:
    """The GPUs grouped by board model, load and power limit, with how many of each: the ranks of a replica are
    one group, so a search over clocks computes each group once."""
    groups: dict[tuple[int, Load, float], tuple[GpuProfile, int]] = {}
    for placed, load in zip(gpus, loads, strict=True):
        gpu = placed.gpu
        key = (id(gpu.profile), load, gpu.power_limit_w)
        profile, count = groups.get(key, (gpu.profile, 0))
        groups[key] = (profile, count + 1)
    return [(profile, load, limit, count) for (_, load, limit), (profile, count) in groups.items()]


def _drawn(boards: _Boards, mhz: int) -> float:
    return sum(count * power_w(profile, firmware_clock_mhz(profile, mhz, load, limit), load)
               for profile, load, limit, count in boards)
