# Copyright (c) mmgem contributors. All rights reserved.
"""Dispatch of tokens to experts and combination of the experts' outputs.

Two granularities:

* :func:`image_dispatch` (GEM): every image has one expert, so its whole
  ``(N, C)`` token block goes to that expert. Images are grouped by expert
  (a stable sort of at most ``B`` indices), every active expert runs once on
  the contiguous block of its images, and the blocks are put back in batch
  order. There is no per-token scatter, no padding and nothing is dropped.
  When all images share one expert the input is used as it is (no copy).
* :func:`token_dispatch` (``damex`` / ``moe`` baselines): every token has its
  own expert; each expert takes at most ``capacity`` tokens and the others
  are dropped: they get a zero output, i.e. the MoE layer passes them through
  its residual connection. Which tokens an expert keeps is decided by
  :func:`capacity_keep_mask`: by default the tokens with the highest gate
  score (Tutel's *batch-prioritized routing*, which DAMEX's code switches on
  with ``use_bpr=True``), or, as an option, the first ones in the flattened
  order (Switch Transformer / GShard).
"""
import math
from typing import Callable, List, Tuple

import torch
from torch import Tensor

ExpertFn = Callable[[int, Tensor], Tensor]


#: How :func:`capacity_keep_mask` chooses the tokens an expert keeps.
CAPACITY_PRIORITIES = ('score', 'position')


def expert_capacity(num_tokens: int, num_experts: int,
                    capacity_factor: float) -> int:
    """Tokens one expert may take, as Tutel (and so DAMEX) computes it.

    Tutel 0.2's ``extract_critical`` with top-1 gating uses
    ``int(capacity_factor * ceil(T / M))``; it is kept at 1 or more here (for
    ``capacity_factor < 1`` on tiny batches Tutel's could be 0).

    Args:
        num_tokens (int): Tokens routed in the batch, ``T``.
        num_experts (int): Number of experts, ``M``.
        capacity_factor (float): Slack over a perfectly even split (> 0).

    Returns:
        int: The capacity, at least 1.
    """
    if capacity_factor <= 0:
        raise ValueError(
            f'capacity_factor must be > 0, got {capacity_factor}')
    per_expert = math.ceil(num_tokens / num_experts)
    return max(1, int(capacity_factor * per_expert))


def capacity_keep_mask(experts: Tensor, scores: Tensor, num_experts: int,
                       capacity: int, priority: str = 'score') -> Tensor:
    """Which tokens their expert keeps under a capacity limit.

    Every expert keeps at most ``capacity`` of the tokens routed to it:

    - ``'score'``: those with the highest ``scores`` (the gate probability
      of the chosen expert), ties broken by token order. This is Tutel's
      batch-prioritized routing (``compute_sorted_location`` over
      ``-scores.max(dim=1)``), which DAMEX runs (``use_bpr=True``): a token's
      queue position is its rank by descending score among the tokens of its
      expert, whichever image it comes from.
    - ``'position'``: the first ones in the flattened token order (GShard /
      Switch; Tutel with ``batch_prioritized_routing=False``).

    Args:
        experts (Tensor): ``(T,)`` int64 chosen expert of each token.
        scores (Tensor): ``(T,)`` gate score of each token's expert.
        num_experts (int): Number of experts.
        capacity (int): Most tokens one expert keeps.
        priority (str): ``'score'`` or ``'position'``. Defaults to
            ``'score'``.

    Returns:
        Tensor: ``(T,)`` bool mask of the kept tokens.
    """
    if priority not in CAPACITY_PRIORITIES:
        raise ValueError(f'capacity priority must be one of '
                         f'{CAPACITY_PRIORITIES}, got {priority!r}')
    if priority == 'score':
        order = torch.argsort(scores.detach().float(), descending=True,
                              stable=True)
    else:
        order = torch.arange(experts.numel(), device=experts.device)
    one_hot = torch.nn.functional.one_hot(experts.index_select(0, order),
                                          num_experts)
    # 0-based position of each token (in priority order) in its expert's queue
    position = (one_hot.cumsum(dim=0) * one_hot).sum(dim=1) - 1
    kept = torch.empty_like(position, dtype=torch.bool)
    kept[order] = position < capacity
    return kept


def _group(experts: Tensor, num_experts: int) -> Tuple[Tensor, List[int]]:
    """Stable order of the items grouped by expert, and the group sizes."""
    order = torch.argsort(experts, stable=True)
    counts = torch.bincount(experts, minlength=num_experts).tolist()
    return order, counts


def image_dispatch(x: Tensor, experts: Tensor, num_experts: int,
                   expert_fn: ExpertFn) -> Tensor:
    """Run each image's tokens through the expert of that image.

    Args:
        x (Tensor): ``(B, N, C)`` tokens, batch first.
        experts (Tensor): ``(B,)`` int64 expert of each image (on any
            device; best on the CPU).
        num_experts (int): Number of experts.
        expert_fn (Callable[[int, Tensor], Tensor]): ``expert_fn(e, t)``
            applies expert ``e`` to tokens ``t`` of shape ``(n, N, C)`` and
            returns the same shape.

    Returns:
        Tensor: ``(B, N, C)`` outputs, in the order of ``x``.
    """
    if experts.numel() != x.size(0):
        raise ValueError(f'{experts.numel()} experts given for a batch of '
                         f'{x.size(0)} images')
    # the grouping of at most B indices is done on the host: one transfer
    # instead of a device sync per step
    order, counts = _group(experts.cpu(), num_experts)
    active = [e for e, n in enumerate(counts) if n > 0]
    if len(active) == 1:
        return expert_fn(active[0], x)
    order = order.to(x.device, non_blocking=True)
    blocks = x.index_select(0, order).split(counts, dim=0)
    out_sorted = torch.cat(
        [expert_fn(e, blocks[e]) for e in active], dim=0)
    # Inverse permutation: row i of out_sorted belongs to image order[i].
    return torch.empty_like(out_sorted).index_copy(0, order, out_sorted)


def token_dispatch(tokens: Tensor,
                   experts: Tensor,
                   gates: Tensor,
                   num_experts: int,
                   capacity: int,
                   expert_fn: ExpertFn,
                   priority: str = 'score') -> Tuple[Tensor, Tensor]:
    """Run tokens through their experts under a capacity limit.

    Args:
        tokens (Tensor): ``(T, C)`` tokens.
        experts (Tensor): ``(T,)`` int64 chosen expert of each token.
        gates (Tensor): ``(T,)`` weight of each token's expert output (its
            gate score, which also ranks the tokens with
            ``priority='score'``).
        num_experts (int): Number of experts.
        capacity (int): Most tokens one expert takes.
        expert_fn (Callable[[int, Tensor], Tensor]): ``expert_fn(e, t)``
            applies expert ``e`` to tokens ``t`` of shape ``(n, C)``.
        priority (str): Which tokens an expert keeps, see
            :func:`capacity_keep_mask`. Defaults to ``'score'``.

    Returns:
        tuple[Tensor, Tensor]: ``(T, C)`` gated outputs (zero for dropped
        tokens) and the ``(T,)`` bool mask of kept tokens.
    """
    kept = capacity_keep_mask(experts, gates, num_experts, capacity, priority)
    kept_idx = kept.nonzero().squeeze(1)
    order, counts = _group(experts.index_select(0, kept_idx), num_experts)
    token_idx = kept_idx.index_select(0, order)
    blocks = tokens.index_select(0, token_idx).split(counts, dim=0)
    outs = [expert_fn(e, blocks[e]) for e, n in enumerate(counts) if n > 0]
    out = tokens.new_zeros(tokens.shape)
    if outs:
        combined = torch.cat(outs, dim=0) * gates.index_select(
            0, token_idx).unsqueeze(1)
        out = out.index_copy(0, token_idx, combined)
    return out, kept
