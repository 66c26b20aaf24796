# Copyright (c) mmgem contributors. All rights reserved.
"""Auxiliary router losses of the learned-router baselines.

* ``moe``, ``balance_loss='tutel'`` (the default, what DAMEX's code runs):
  Tutel 0.2's ``load_importance_loss`` (``tutel/impls/losses.py``), called
  by DAMEX's ``MOELayer`` on the foreground tokens with the softmax of the
  clean router logits ``p = softmax(h)`` and the clean logit of each token's
  chosen expert ``h_top``::

      Imp_e  = sum_x p_e(x)
      Load_e = sum_x Phi((p_e(x) - h_top(x)) / sigma),  sigma = gate_noise / M
      L_aux  = (var(Imp) / mean(Imp)^2 + var(Load) / mean(Load)^2) / 2

  with torch's unbiased variance and ``1e-10`` added to the squared means.
  Note that Tutel compares a *probability* with a *logit* in the load term
  (and DAMEX's code passes the clean logit as the threshold): this is kept
  as published.
* ``moe``, ``balance_loss='vmoe'``: the importance + load losses of V-MoE
  (Riquelme et al., 2021) as the DAMEX paper writes them (eq. 4-8). With
  clean router logits ``h = W x``, noisy logits
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


def tutel_load_importance_loss(clean_logits: Tensor, top_experts: Tensor,
                               num_experts: int, gate_noise: float) -> Tensor:
    """Tutel 0.2's ``load_importance_loss`` as DAMEX's code calls it.

    DAMEX (``models/dino/moe.py``, ``moe_loss_fn``) passes
    ``softmax(logits[fg])`` as ``scores_wo_noise`` and
    ``logits.gather(1, topk_ids)[fg]`` as ``topk_logits``, where ``logits``
    are the clean router logits and ``topk_ids`` the experts chosen under
    gate noise.

    Args:
        clean_logits (Tensor): ``(T, M)`` router logits without noise, of the
            tokens the loss is taken over.
        top_experts (Tensor): ``(T,)`` int64 expert chosen for each token.
        num_experts (int): Number of experts ``M``.
        gate_noise (float): Gate noise scale (> 0); the normal's standard
            deviation is ``gate_noise / M``.

    Returns:
        Tensor: Scalar loss (unweighted); 0 for a single expert.
    """
    if gate_noise <= 0:
        raise ValueError('the Tutel load loss needs gate_noise > 0, got '
                         f'{gate_noise}')
    logits = clean_logits.float()
    if num_experts < 2:
        return logits.sum() * 0
    scores = logits.softmax(dim=-1)
    threshold = logits.gather(1, top_experts.long().view(-1, 1))
    normal = torch.distributions.Normal(
        torch.zeros((), device=logits.device),
        torch.full((), gate_noise / num_experts, device=logits.device))
    load = normal.cdf(scores - threshold).sum(dim=0)
    importance = scores.sum(dim=0)
    l_imp = importance.var() / (importance.mean()**2 + 1e-10)
    l_load = load.var() / (load.mean()**2 + 1e-10)
    return (l_imp + l_load) / 2.0


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
