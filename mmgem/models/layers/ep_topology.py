# Copyright (c) mmgem contributors. All rights reserved.
"""Which rank holds which experts: the process groups of expert parallelism.

With ``W`` ranks and an expert-parallel size ``E`` (``E`` divides ``W``), the
ranks form ``W / E`` *expert-parallel groups* of ``E`` consecutive ranks::

    EP group g = ranks [g * E, (g + 1) * E)

Inside an EP group the ``M`` experts of an MoE layer are split in ``E``
contiguous blocks of ``L = M / E`` experts: EP rank ``i`` (the rank's index
in its group) holds experts ``[i * L, (i + 1) * L)``. Images travel only
inside their EP group. The ``W / E`` ranks with the same EP rank hold the
same experts; they form a *replica group*::

    replica group i = ranks {g * E + i for every g}

and the gradients of those experts are averaged over it (and only over it).
``E = W`` (the default) gives one EP group and no replicas; ``E = 1`` is data
parallel (every rank holds every expert).

The EP group is always a process group of its own (also when ``E = W``), so
the exchange's collectives never share a queue with DDP's gradient
all-reduce. Each EP group also has a gloo twin (the EP group itself when the
default backend is gloo) for the small host-side exchange of split sizes in
``'gem'`` mode, which then never waits for the device. Process groups are
created once per ``(world, E)`` and cached, because
``torch.distributed.new_group`` is a collective that every rank must call in
the same order; building the model on every rank in the same order (as
MMEngine does) guarantees that.
"""
from dataclasses import dataclass
from typing import Dict, Optional, Tuple

import torch.distributed as dist

_TOPOLOGIES: Dict[Tuple[int, int, int], 'ExpertParallelTopology'] = {}


@dataclass(frozen=True)
class ExpertParallelTopology:
    """Layout of the ranks for expert parallelism.

    Args:
        world_size (int): Number of ranks ``W``.
        rank (int): This rank's global rank.
        ep_size (int): Ranks per expert-parallel group ``E``.
            ep_group (ProcessGroup, optional): This rank's EP group, a group of
            its own even when it spans the world, so that the exchange never
            queues behind DDP's all-reduce; None without a distributed run.
        replica_group (ProcessGroup, optional): The ranks holding the same
            experts as this one; None when there is no other (``E = W``).
        ep_host_group (ProcessGroup, optional): The EP group's ranks on the
            gloo backend, for collectives on host tensors (``ep_group`` when
            the default backend is gloo).
    """

    world_size: int
    rank: int
    ep_size: int
    ep_group: Optional[object] = None
    replica_group: Optional[object] = None
    ep_host_group: Optional[object] = None

    @property
    def ep_rank(self) -> int:
        """int: This rank's index inside its EP group."""
        return self.rank % self.ep_size

    @property
    def num_replicas(self) -> int:
        """int: How many ranks hold each expert (``W / E``)."""
        return self.world_size // self.ep_size

    @property
    def ep_group_ranks(self) -> Tuple[int, ...]:
        """tuple[int]: Global ranks of this rank's EP group, in order."""
        start = self.rank - self.ep_rank
        return tuple(range(start, start + self.ep_size))

    @property
    def replica_group_ranks(self) -> Tuple[int, ...]:
        """tuple[int]: Global ranks holding the same experts, in order."""
        return tuple(g * self.ep_size + self.ep_rank
                     for g in range(self.num_replicas))

    def local_experts(self, num_experts: int) -> range:
        """Experts this rank holds.

        Args:
            num_experts (int): Experts of the MoE layer ``M``.

        Returns:
            range: ``[ep_rank * L, (ep_rank + 1) * L)`` with ``L = M / E``.
        """
        check_divisible(num_experts, self.ep_size)
        per_rank = num_experts // self.ep_size
        return range(self.ep_rank * per_rank, (self.ep_rank + 1) * per_rank)


def check_divisible(num_experts: int, ep_size: int) -> None:
    """Raise a clear error unless ``ep_size`` ranks can share the experts.

    Args:
        num_experts (int): Experts of an MoE layer.
        ep_size (int): Expert-parallel size.

    Raises:
        ValueError: If ``num_experts`` is not a multiple of ``ep_size``.
    """
    if ep_size < 1 or num_experts % ep_size != 0:
        raise ValueError(
            f'expert parallelism needs num_experts divisible by the '
            f'expert-parallel size, got num_experts={num_experts} and '
            f'expert_parallel_size={ep_size} (by default the world size); '
            f'use a world size or expert_parallel_size that divides '
            f'{num_experts}')


def get_ep_topology(ep_size: Optional[int] = None) -> ExpertParallelTopology:
    """Return the (cached) expert-parallel topology of this process.

    Without an initialised process group this is the trivial topology of
    one rank. Must be called by every rank (it may create process groups).

    Args:
        ep_size (int, optional): Ranks per expert-parallel group; None uses
            the world size.

    Returns:
        ExpertParallelTopology: The layout and the process groups.

    Raises:
        ValueError: If ``ep_size`` does not divide the world size.
    """
    distributed = dist.is_available() and dist.is_initialized()
    world_size = dist.get_world_size() if distributed else 1
    rank = dist.get_rank() if distributed else 0
    if ep_size is None:
        ep_size = world_size
    if ep_size < 1 or world_size % ep_size != 0:
        raise ValueError(
            f'expert_parallel_size={ep_size} must divide the world size '
            f'{world_size}')
    key = (id(dist.group.WORLD) if distributed else 0, world_size, ep_size)
    cached = _TOPOLOGIES.get(key)
    if cached is not None:
        return cached
    ep_group = replica_group = ep_host_group = None
    if distributed and world_size > 1:
        num_replicas = world_size // ep_size
        on_gloo = dist.get_backend() == 'gloo'
        for g in range(num_replicas):
            ranks = list(range(g * ep_size, (g + 1) * ep_size))
            group = dist.new_group(ranks)
            host_group = group if on_gloo else dist.new_group(ranks,
                                                              backend='gloo')
            if g == rank // ep_size:
                ep_group, ep_host_group = group, host_group
        if num_replicas > 1:
            for i in range(ep_size):
                group = dist.new_group(
                    [g * ep_size + i for g in range(num_replicas)])
                if i == rank % ep_size:
                    replica_group = group
    topology = ExpertParallelTopology(world_size, rank, ep_size, ep_group,
                                      replica_group, ep_host_group)
    _TOPOLOGIES[key] = topology
    return topology
