# Copyright (c) mmgem contributors. All rights reserved.
"""Auxiliary router losses of the learned-router baselines.

* ``moe``: the importance + load losses of V-MoE (Riquelme et al., 2021),
  which the DAMEX paper (Jain et al., 2023, eq. 4-8) uses for its DINO-MoE
  baseline. With clean router logits ``h = W x``, noisy logits
  ``h~ = h + eps``, ``eps ~ N(0, sigma^2)``, ``sigma = gate_noise / M``::

      Imp_e  = sum_x softmax(h(x))_e
      p_e(x) = P(h_e(x) + eps' >= threshold(x))
             = Phi((h_e(x) - threshold(x)) / sigma)
      Load_e = sum_x p_e(x)
      L_aux  = (CV(Imp)^2 + CV(Load)^2) / 2

  where ``threshold(x)`` is the k-th largest noisy logit of ``x`` (k = 1:
  the largest) and ``CV = std / mean`` with the population standard
  deviation (so one expert gives 0).
* ``damex``: the cross-entropy of the clean router logits of every token to
  the expert its image is mapped to (DAMEX's dataset-aware loss; here the
  mapped expert comes from the GEM plan).
"""
import torch
import torch.nn.functional as F
from torch import Tensor


def squared_cv(values: Tensor, eps: float = 1e-10) -> Tensor:
    """Squared coefficient of variation, ``var / mean^2`` (population var).

    Args:
        values (Tensor): ``(M,)`` per-expert values.
        eps (float): Added to ``mean^2`` against division by zero.

    Returns:
        Tensor: Scalar ``CV(values)^2``.
    """
    values = values.float()
    return values.var(correction=0) / (values.mean()**2 + eps)


def importance_loss(clean_logits: Tensor) -> Tensor:
    """V-MoE importance loss ``CV(Imp)^2``.

    Args:
        clean_logits (Tensor): ``(T, M)`` router logits without noise.

    Returns:
        Tensor: Scalar loss.
    """
    importance = clean_logits.float().softmax(dim=-1).sum(dim=0)
    return squared_cv(importance)


def load_loss(clean_logits: Tensor, noisy_logits: Tensor, noise_std: float,
              k: int = 1) -> Tensor:
    """V-MoE load loss ``CV(Load)^2`` from the noisy-gate probability.

    Args:
        clean_logits (Tensor): ``(T, M)`` router logits without noise.
        noisy_logits (Tensor): ``(T, M)`` the same logits with the gate noise
            that chose the experts.
        noise_std (float): Standard deviation of the gate noise (> 0).
        k (int): Experts per token; the threshold is the k-th largest noisy
            logit. Defaults to 1.

    Returns:
        Tensor: Scalar loss.
    """
    if noise_std <= 0:
        raise ValueError(
            f'the load loss needs gate noise > 0, got noise std {noise_std}')
    threshold = noisy_logits.float().topk(k, dim=-1).values[:, -1:]
    normal = torch.distributions.Normal(
        torch.zeros((), device=clean_logits.device),
        torch.full((), float(noise_std), device=clean_logits.device))
    prob = normal.cdf(clean_logits.float() - threshold)
    return squared_cv(prob.sum(dim=0))


def importance_load_loss(clean_logits: Tensor, noisy_logits: Tensor,
                         noise_std: float, k: int = 1) -> Tensor:
    """The DAMEX / V-MoE auxiliary loss ``(L_imp + L_load) / 2``.

    Args:
        clean_logits (Tensor): ``(T, M)`` router logits without noise.
        noisy_logits (Tensor): ``(T, M)`` router logits with gate noise.
        noise_std (float): Standard deviation of the gate noise (> 0).
        k (int): Experts per token. Defaults to 1.

    Returns:
        Tensor: Scalar loss (unweighted).
    """
    return 0.5 * (importance_loss(clean_logits) +
                  load_loss(clean_logits, noisy_logits, noise_std, k))


def router_ce_loss(clean_logits: Tensor, target_experts: Tensor) -> Tensor:
    """DAMEX loss: cross-entropy of router logits to the mapped expert.

    Args:
        clean_logits (Tensor): ``(T, M)`` router logits without noise.
        target_experts (Tensor): ``(T,)`` int64 expert each token's image is
            mapped to.

    Returns:
        Tensor: Scalar mean cross-entropy over tokens (unweighted).
    """
    return F.cross_entropy(clean_logits.float(), target_experts.long())
