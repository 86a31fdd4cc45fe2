"""The actuation half of the data path: NodeFrequencies objects (as the API types) and each node's tuner."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import replace

from climatik.algorithms.base import Targets
from climatik.api import (
    GpuFrequency,
    GpuInventory,
    NodeFrequencies,
    NodeFrequenciesSpec,
    NodeFrequenciesStatus,
    NodeInventory,
    ObjectMeta,
)
from climatik.sim.loop.world import World


class NodeFrequenciesStore:
    """One NodeFrequencies object per node, with the inventory its tuner reports (the simulated GPUs)."""

    def __init__(self, world: World) -> None:
        self._objects: dict[str, NodeFrequencies] = {}
        for node in world.nodes:
            gpus = [_inventory(world, uuid) for uuid in node.uuids()]
            self._objects[node.name] = NodeFrequencies(
                metadata=ObjectMeta(name=node.name),
                spec=NodeFrequenciesSpec(node_name=node.name, gpu_frequencies=[]),
                status=NodeFrequenciesStatus(inventory=NodeInventory(backend="sim", gpus=gpus)))

    def objects(self) -> list[NodeFrequencies]:
        """Every object, as the recommender's informer lists them."""
        return list(self._objects.values())

    def write(self, policy_key: str, targets: Targets, node_of: Mapping[str, str]) -> set[str]:
        """Replace `policy_key`'s GPU entries with `targets`; returns the nodes whose specs changed."""
        wanted = targets.gpu_entries()
        changed: set[str] = set()
        for name, obj in self._objects.items():
            entries = obj.spec.gpu_frequencies or []
            kept = [e for e in entries if e.policy != policy_key]
            mine = [GpuFrequency(gpu_id=uuid, target_frequency=mhz, policy=policy_key)
                    for uuid, mhz in sorted(wanted.items()) if node_of.get(uuid) == name]
            updated = sorted(kept + mine, key=lambda e: e.gpu_id)
            if updated != entries:
                self._objects[name] = replace(obj, spec=replace(obj.spec, gpu_frequencies=updated))
                changed.add(name)
        return changed

    def wanted(self, node: str) -> dict[str, int]:
        """The bound of every GPU of `node` that has an entry."""
        return {e.gpu_id: e.target_frequency for e in self._objects[node].spec.gpu_frequencies or []}


class SimTuner:
    """Applies a node's NodeFrequencies to its GPUs: locks bounded GPUs, unlocks the others it had locked."""

    def __init__(self, world: World, store: NodeFrequenciesStore) -> None:
        self._world = world
        self._store = store
        self._applied: dict[str, int] = {}
        self.applies = 0

    def apply(self, nodes: Iterable[str]) -> None:
        """Bring the GPUs of `nodes` in line with their objects' current specs."""
        for name in sorted(nodes):
            wanted = self._store.wanted(name)
            node = self._world.node(name)
            for uuid in node.uuids():
                mhz = wanted.get(uuid)
                if mhz == self._applied.get(uuid):
                    continue
                if mhz is None:
                    node.reset_locked_clock(uuid)
                    del self._applied[uuid]
                else:
                    node.set_locked_clock(uuid, mhz)
                    self._applied[uuid] = mhz
                self.applies += 1


def _inventory(world: World, uuid: str) -> GpuInventory:
    gpu = world.gpu(uuid).gpu
    profile = gpu.profile
    return GpuInventory(uuid=uuid, index=gpu.index, model=profile.model_name, min_frequency=profile.min_sm_mhz,
                        max_frequency=profile.max_sm_mhz, default_frequency=profile.default_sm_mhz,
                        supported_frequencies=list(profile.supported_clocks()), power_limit=round(gpu.power_limit_w))
