# Copyright (c) mmgem contributors. All rights reserved.
"""Gradient clipping by the global norm over expert-parallel ranks.

With experts split over the ranks, the local gradient norm of a rank covers
the shared parameters and only its own experts, so ``clip_grad_norm_`` would
scale the gradients differently on every rank and the shared weights would
drift apart. These wrappers compute the norm of the whole model's gradient,
identical on every rank, with one scalar all-reduce::

    total ** p = sum over ranks of ( shared ** p / W + experts ** p / R )

where ``shared`` is the (already DDP-averaged, identical) norm of the
shared gradients, ``experts`` the norm of this rank's expert shards, ``W``
the world size and ``R`` the number of ranks holding each expert. They then
scale every gradient by ``min(1, max_norm / (total + 1e-6))`` as
``torch.nn.utils.clip_grad_norm_`` does, and log ``grad_norm``. Without
expert shards (data parallel, one process) they are MMEngine's wrappers.

For mixed precision, :class:`GlobalNormAmpOptimWrapper` also makes the
loss scaler's overflow check global: if any rank's gradients hold inf/nan,
every rank skips the step, so the ranks stay in step.
"""
import math
from typing import List

import torch
import torch.distributed as dist
from mmdet.registry import OPTIM_WRAPPERS
from mmengine.optim import AmpOptimWrapper, OptimWrapper
from torch import Tensor

from mmgem.models.layers.expert_parallel import EP_SIZE_ATTR, is_expert_shard


def _norm_pow(grads: List[Tensor], norm_type: float) -> Tensor:
    """Sum of ``|g| ** p`` (or max for inf) over ``grads``, in float64."""
    if not grads:
        return torch.zeros((), dtype=torch.float64)
    norms = torch.stack([
        torch.linalg.vector_norm(g.detach(), norm_type).double() for g in grads
    ])
    if math.isinf(norm_type):
        return norms.max()
    return norms.pow(norm_type).sum()


class GlobalNormClipMixin:
    """``_clip_grad`` with the global norm across expert-parallel ranks."""

    def _params_with_grad(self) -> List[Tensor]:
        params = [p for group in self.optimizer.param_groups
                  for p in group['params']]
        return [p for p in params if p.requires_grad and p.grad is not None]

    def _clip_grad(self) -> None:
        """Clip by the global gradient norm (see the module docstring)."""
        params = self._params_with_grad()
        shards = [p for p in params if is_expert_shard(p)]
        if (getattr(self, 'grad_name', None) != 'grad_norm' or not shards
                or not (dist.is_available() and dist.is_initialized())):
            return super()._clip_grad()
        kwargs = self.clip_grad_kwargs
        max_norm = float(kwargs['max_norm'])
        norm_type = float(kwargs.get('norm_type', 2.0))
        shared = [p.grad for p in params if not is_expert_shard(p)]
        world_size = dist.get_world_size()
        replicas = world_size // getattr(shards[0], EP_SIZE_ATTR)
        device = shards[0].grad.device
        shared_pow = _norm_pow(shared, norm_type).to(device)
        expert_pow = _norm_pow([p.grad for p in shards], norm_type).to(device)
        if math.isinf(norm_type):
            total = torch.maximum(shared_pow, expert_pow)
            dist.all_reduce(total, op=dist.ReduceOp.MAX)
        else:
            total = shared_pow / world_size + expert_pow / replicas
            dist.all_reduce(total)
            total = total.pow(1.0 / norm_type)
        if kwargs.get('error_if_nonfinite', False) and not torch.isfinite(
                total):
            raise RuntimeError(
                f'the global {norm_type}-norm of the gradients is {total}')
        coef = torch.clamp(max_norm / (total + 1e-6), max=1.0)
        for p in params:
            p.grad.mul_(coef.to(p.grad.dtype))
        self.message_hub.update_scalar(f'train/{self.grad_name}',
                                       float(total))


@OPTIM_WRAPPERS.register_module()
class GlobalNormOptimWrapper(GlobalNormClipMixin, OptimWrapper):
    """:class:`~mmengine.optim.OptimWrapper` whose ``clip_grad`` norm is the
    global one across expert-parallel ranks.

    Args:
        *args, **kwargs: Those of :class:`~mmengine.optim.OptimWrapper`.
    """


@OPTIM_WRAPPERS.register_module()
class GlobalNormAmpOptimWrapper(GlobalNormClipMixin, AmpOptimWrapper):
    """:class:`~mmengine.optim.AmpOptimWrapper` with the global clip norm
    and a global overflow check.

    Args:
        *args, **kwargs: Those of :class:`~mmengine.optim.AmpOptimWrapper`.
    """

    def step(self, **kwargs) -> None:
        """Unscale, agree on overflow across ranks, clip, step, update.

        Args:
            **kwargs: Keyword arguments of :meth:`torch.optim.Optimizer.step`.
        """
        distributed = dist.is_available() and dist.is_initialized()
        if self.clip_grad_kwargs or distributed:
            self.loss_scaler.unscale_(self.optimizer)
        if distributed:
            # GradScaler's per-optimizer record of the unscale_ above.
            state = self.loss_scaler._per_optimizer_states[id(self.optimizer)]
            for found_inf in state['found_inf_per_device'].values():
                dist.all_reduce(found_inf, op=dist.ReduceOp.MAX)
        if self.clip_grad_kwargs:
            self._clip_grad()
        self.loss_scaler.step(self.optimizer, **kwargs)
        self.loss_scaler.update(self._scale_update_param)
