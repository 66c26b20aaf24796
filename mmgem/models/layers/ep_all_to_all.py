# Copyright (c) mmgem contributors. All rights reserved.
"""Differentiable uneven all-to-all for the expert-parallel exchange.

The exchange moves rows of a ``(T, C)`` tensor between the ranks of a
process group: rank ``r`` sends its first ``send_splits[0]`` rows to rank 0,
the next ``send_splits[1]`` rows to rank 1, and so on, and receives
``recv_splits[s]`` rows from every rank ``s`` (concatenated in rank order).
Split sizes differ between ranks and iterations, so they are exchanged first
(:func:`gather_count_matrix`: every rank learns the full matrix of counts,
which also tells all ranks, consistently, whether anything has to move at
all). The backward pass is the reverse exchange of the gradients
(``send`` and ``recv`` swapped). It runs on ``torch.distributed``'s
``all_to_all_single`` (NCCL on GPUs, gloo on CPUs).
"""
from typing import List, Optional, Sequence

import torch
import torch.distributed as dist
from torch import Tensor

from .ep_exchange_stats import exchange_stats


def _record(x: Tensor, send: Sequence[int], recv: Sequence[int],
            group: Optional[object], forward: bool) -> None:
    """Add this exchange's off-rank traffic to :func:`exchange_stats`."""
    rank = dist.get_rank(group)
    row_bytes = x.element_size()
    for size in x.shape[1:]:
        row_bytes *= size
    sent = sum(send) - send[rank]
    received = sum(recv) - recv[rank]
    stats = exchange_stats()
    stats.sent_bytes += sent * row_bytes
    stats.received_bytes += received * row_bytes
    stats.exchanges += 1
    if forward:
        stats.sent_rows += sent


def _all_to_all(x: Tensor, send: List[int], recv: List[int],
                group: Optional[object], forward: bool) -> Tensor:
    if x.size(0) != sum(send):
        raise ValueError(f'all_to_all: {x.size(0)} rows given but the send '
                         f'splits {send} sum to {sum(send)}')
    x = x.contiguous()
    out = x.new_empty((sum(recv), ) + tuple(x.shape[1:]))
    dist.all_to_all_single(out, x, recv, send, group=group)
    _record(x, send, recv, group, forward)
    return out


class AllToAll(torch.autograd.Function):
    """Uneven ``all_to_all_single`` whose backward is the reverse exchange.

    Use :func:`all_to_all` rather than this class directly.
    """

    @staticmethod
    def forward(ctx, x: Tensor, send_splits: List[int],
                recv_splits: List[int], group: Optional[object]) -> Tensor:
        ctx.send_splits = send_splits
        ctx.recv_splits = recv_splits
        ctx.group = group
        return _all_to_all(x, send_splits, recv_splits, group, True)

    @staticmethod
    def backward(ctx, grad: Tensor):
        grad_in = _all_to_all(grad, ctx.recv_splits, ctx.send_splits,
                              ctx.group, False)
        return grad_in, None, None, None


def all_to_all(x: Tensor,
               send_splits: Sequence[int],
               recv_splits: Sequence[int],
               group: Optional[object] = None) -> Tensor:
    """Send row blocks of ``x`` to the ranks of ``group``, differentiably.

    Every rank of ``group`` must call it (it is a collective), in forward
    and, when the output takes part in a loss, in backward.

    Args:
        x (Tensor): ``(T, ...)`` rows to send, grouped by destination rank.
        send_splits (Sequence[int]): Rows for each rank of the group (in
            group-rank order); sums to ``T``.
        recv_splits (Sequence[int]): Rows this rank receives from each rank
            (the other ranks' ``send_splits`` entry for this rank).
        group (ProcessGroup, optional): The process group; None is the
            default group.

    Returns:
        Tensor: ``(sum(recv_splits), ...)`` received rows, by source rank.
    """
    return AllToAll.apply(x, [int(s) for s in send_splits],
                          [int(r) for r in recv_splits], group)


def gather_count_matrix(counts: Tensor,
                        group: Optional[object] = None) -> Tensor:
    """All-gather every rank's count vector into one matrix.

    Args:
        counts (Tensor): ``(N,)`` int64 counts of this rank (e.g. rows it
            sends to each destination).
        group (ProcessGroup, optional): The process group; None is the
            default group.

    Returns:
        Tensor: ``(group size, N)`` int64 matrix, row ``s`` from group rank
        ``s``, identical on every rank.
    """
    counts = counts.to(torch.long).contiguous()
    rows = [torch.empty_like(counts) for _ in range(dist.get_world_size(group))]
    dist.all_gather(rows, counts, group=group)
    return torch.stack(rows)
