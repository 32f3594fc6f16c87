"""Placement: which node, and which of its GPU slots, each container instance gets.

Pure computation. A node's ``compute: {gpus: N}`` is N slots, numbered 0..N-1; an
instance asking for k takes k free slots of its node and no slot is ever given
twice. A container names its nodes (one instance on each) or asks for ``replicas``:
``per: gpu`` fills one compute node's free slots before the next (the partner
that asks for 6 GPUs over spacecraft of 3 gets two spacecraft), ``per: node``
puts one instance on each compute node in turn. Containers are placed in the
order given, each taking what the ones before left.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from netemu.model.schema import ContainerSpec


class PlacementError(ValueError):
    """A container that cannot be placed: ``key`` names the spec's key at fault."""

    def __init__(self, key: str, problem: str):
        super().__init__(problem)
        self.key = key


@dataclass(frozen=True)
class Instance:
    """One instance of a container, where it runs."""

    name: str  # <container>-<k>
    container: str
    index: int  # k, over the container's instances
    node: str
    local: int  # the how-manieth of this container on its node (its port is port + local)
    gpu_slots: tuple[int, ...]  # the node's slots it holds


def place(
    specs: Iterable[ContainerSpec],
    gpus: dict[str, int],
    taken: dict[str, set[int]] | None = None,
) -> list[Instance]:
    """Instances of ``specs`` over nodes with ``gpus[node]`` slots (every node is a
    key; compute nodes have slots), after the slots ``taken`` (updated)."""
    taken = taken if taken is not None else {}
    out: list[Instance] = []
    for spec in specs:
        nodes = _nodes_of(spec, gpus, taken)
        on_node: dict[str, int] = {}
        for k, node in enumerate(nodes):
            used = taken.setdefault(node, set())
            free = [s for s in range(gpus[node]) if s not in used]
            if len(free) < spec.gpus:
                raise PlacementError(
                    "gpus",
                    f"container {spec.name!r}: node {node!r} has {len(free)} free GPU slots of "
                    f"{gpus[node]}, instance {k} asks for {spec.gpus}",
                )
            slots = tuple(free[: spec.gpus])
            used.update(slots)
            local = on_node[node] = on_node.get(node, -1) + 1
            out.append(Instance(f"{spec.name}-{k}", spec.name, k, node, local, slots))
    return out


def _nodes_of(spec: ContainerSpec, gpus: dict[str, int], taken: dict[str, set[int]]) -> list[str]:
    """The node of each instance, in instance order."""
    if spec.nodes is not None:
        nodes = [spec.nodes] if isinstance(spec.nodes, str) else list(spec.nodes)
        for node in nodes:
            if node not in gpus:
                raise PlacementError("nodes", f"container {spec.name!r}: unknown node {node!r}")
        return nodes
    pool = list(spec.placement.nodes) or [n for n, count in gpus.items() if count > 0]
    for node in pool:
        if node not in gpus:
            raise PlacementError("placement", f"container {spec.name!r}: unknown node {node!r}")
    if not pool:
        raise PlacementError(
            "placement", f"container {spec.name!r}: no node has a compute payload to place it on"
        )
    if spec.placement.per == "node":
        return [pool[k % len(pool)] for k in range(spec.replicas)]
    if spec.gpus == 0:
        raise PlacementError("gpus", f"container {spec.name!r}: placement per gpu needs gpus >= 1")
    free = [gpus[n] - len(taken.get(n, ())) for n in pool]
    per_node = [f // spec.gpus for f in free]
    if sum(per_node) < spec.replicas:
        raise PlacementError(
            "replicas",
            f"container {spec.name!r}: {spec.replicas} replicas of {spec.gpus} GPU slots each "
            f"need {spec.replicas * spec.gpus} slots; its nodes have {sum(free)} free",
        )
    nodes = [n for n, count in zip(pool, per_node, strict=True) for _ in range(count)]
    return nodes[: spec.replicas]
