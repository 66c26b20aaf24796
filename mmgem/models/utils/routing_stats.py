# Copyright (c) mmgem contributors. All rights reserved.
"""Routing statistics of the MoE layers: loads, drops and specialisation.

Specialisation is measured per MoE layer by the normalised mutual
information between the dataset of an image and the expert each of its
(foreground) tokens goes to, from the ``(K, M)`` count matrix ``C[d, e]``
(tokens of dataset ``d`` processed by expert ``e``)::

    p(d, e) = C[d, e] / sum(C),  I = sum p(d, e) log(p(d, e) / (p(d) p(e)))
    NMI     = 2 I / (H(D) + H(E))          (arithmetic normalisation)

NMI is 1 when the expert determines the dataset and the dataset the expert
(e.g. GEM's plan with one expert per dataset), 0 when they are independent
(a balanced learned router spreading every dataset over every expert). When
``H(D) + H(E) = 0`` (one dataset on one expert) it is defined as 0. Beside it,
:func:`top_expert_share` gives each dataset's share of tokens on its most
used expert.
"""
from typing import Dict, Optional, Sequence

import torch
from torch import Tensor


def routing_scalars(stats: Sequence[Dict[str, Tensor]]) -> Dict[str, Tensor]:
    """Expert loads and drop rate over the MoE layers of one forward.

    Args:
        stats (Sequence[dict]): ``routing_stats`` of every MoE layer
            (``expert_tokens`` and ``dropped_tokens``).

    Returns:
        dict[str, Tensor]: ``moe_load_e<k>`` (share of the kept tokens that
        expert ``k`` processed, mean over the layers) and ``moe_drop_rate``.
    """
    scalars: Dict[str, Tensor] = {}
    kept = torch.stack([s['expert_tokens'] for s in stats]).float()
    share = (kept / kept.sum(dim=1, keepdim=True).clamp(min=1)).mean(0)
    for e, value in enumerate(share):
        scalars[f'moe_load_e{e}'] = value
    dropped = sum(s['dropped_tokens'] for s in stats)
    scalars['moe_drop_rate'] = dropped.float() / (kept.sum() +
                                                  dropped).clamp(min=1)
    return scalars


def dataset_expert_counts(token_experts: Tensor, dataset_ids: Tensor,
                          num_datasets: int, num_experts: int,
                          token_mask: Optional[Tensor] = None) -> Tensor:
    """``(K, M)`` tokens of every dataset that every expert processed.

    Args:
        token_experts (Tensor): ``(B, N)`` expert of every token (-1:
            dropped, not counted).
        dataset_ids (Tensor): ``(B,)`` dataset of every image.
        num_datasets (int): ``K``.
        num_experts (int): ``M``.
        token_mask (Tensor, optional): ``(B, N)`` bool, the tokens to count
            (e.g. the foreground queries); None counts all.

    Returns:
        Tensor: ``(K, M)`` int64 counts, on the CPU.
    """
    experts = token_experts.detach().cpu().long()
    datasets = dataset_ids.detach().cpu().long()[:, None].expand_as(experts)
    keep = experts >= 0
    if token_mask is not None:
        keep = keep & token_mask.detach().cpu().bool()
    pairs = datasets[keep] * num_experts + experts[keep]
    return torch.bincount(pairs, minlength=num_datasets * num_experts).view(
        num_datasets, num_experts)


def expert_dataset_nmi(counts: Tensor) -> float:
    """Normalised mutual information of dataset and expert (see the module).

    Args:
        counts (Tensor | ndarray): ``(K, M)`` dataset x expert token counts.

    Returns:
        float: NMI in ``[0, 1]`` (0 for an empty or degenerate table).
    """
    joint = torch.as_tensor(counts, dtype=torch.float64)
    total = joint.sum()
    if total <= 0:
        return 0.0
    joint = joint / total
    p_d, p_e = joint.sum(1), joint.sum(0)
    nz = joint > 0
    mutual = (joint[nz] * (joint[nz].log() -
                           (p_d[:, None] * p_e[None, :])[nz].log())).sum()
    h_d = -(p_d[p_d > 0] * p_d[p_d > 0].log()).sum()
    h_e = -(p_e[p_e > 0] * p_e[p_e > 0].log()).sum()
    if h_d + h_e <= 0:
        return 0.0
    return float((2 * mutual / (h_d + h_e)).clamp(0, 1))


def top_expert_share(counts: Tensor) -> Tensor:
    """Share of each dataset's tokens on its most used expert.

    Args:
        counts (Tensor | ndarray): ``(K, M)`` dataset x expert token counts.

    Returns:
        Tensor: ``(K,)`` float64 shares (0 for a dataset without tokens).
    """
    counts = torch.as_tensor(counts, dtype=torch.float64)
    return counts.max(dim=1).values / counts.sum(dim=1).clamp(min=1)


def specialisation_scalars(stats: Sequence[Dict[str, Tensor]],
                           dataset_ids: Optional[Tensor], num_datasets: int,
                           num_experts: int, layer_names: Sequence[str],
                           token_mask: Optional[Tensor] = None
                           ) -> Dict[str, Tensor]:
    """``moe_nmi_<layer>`` of every MoE layer of one forward.

    Args:
        stats (Sequence[dict]): ``routing_stats`` of every MoE layer (their
            ``token_experts``; a layer without it is skipped).
        dataset_ids (Tensor, optional): ``(B,)`` dataset of every image;
            None gives no scalars.
        num_datasets (int): ``K``.
        num_experts (int): ``M``.
        layer_names (Sequence[str]): Name of every layer in the keys.
        token_mask (Tensor, optional): ``(B, N)`` tokens to count.

    Returns:
        dict[str, Tensor]: One scalar per layer.
    """
    scalars: Dict[str, Tensor] = {}
    if dataset_ids is None:
        return scalars
    for name, s in zip(layer_names, stats):
        experts = s.get('token_experts')
        if experts is None or experts.dim() != 2:
            continue
        mask = token_mask
        if mask is not None and tuple(mask.shape) != tuple(experts.shape):
            mask = None
        counts = dataset_expert_counts(experts, dataset_ids, num_datasets,
                                       num_experts, mask)
        scalars[f'moe_nmi_{name}'] = torch.tensor(expert_dataset_nmi(counts))
    return scalars
