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
every rank skips the step, so the ranks stay in step. On a machine without
an accelerator it runs CPU autocast with ``dtype='bfloat16'`` (bf16 needs no
loss scaling), which MMEngine's ``AmpOptimWrapper`` refuses; this is how the
CPU tests and ``tools/gpu_smoke.sh --cpu`` run the ``--amp`` code path.
"""
import math
import warnings
from contextlib import contextmanager
from typing import List

import torch
import torch.distributed as dist
from mmdet.registry import OPTIM_WRAPPERS
from mmengine.device import is_cuda_available, is_mlu_available, is_musa_available, is_npu_available
from mmengine.optim import AmpOptimWrapper, OptimWrapper
from mmengine.optim.optimizer import amp_optimizer_wrapper
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


def has_accelerator() -> bool:
    """bool: Whether MMEngine's AmpOptimWrapper has a device to run on."""
    return (is_cuda_available() or is_npu_available() or is_mlu_available()
            or is_musa_available())


@contextmanager
def _accelerator_check_skipped():
    """Let ``AmpOptimWrapper.__init__`` run on a CPU-only machine."""
    original = amp_optimizer_wrapper.is_cuda_available
    amp_optimizer_wrapper.is_cuda_available = lambda: True
    try:
        with warnings.catch_warnings():
            # the CUDA GradScaler it builds (replaced right after) warns
            warnings.simplefilter('ignore')
            yield
    finally:
        amp_optimizer_wrapper.is_cuda_available = original


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

    Without an accelerator (CPU only), ``dtype='bfloat16'`` gives CPU
    autocast in bf16 with loss scaling off; other dtypes are refused there.

    Args:
        loss_scale (str | float | dict): As in ``AmpOptimWrapper``; ignored
            on CPU (bf16 is not scaled).
        dtype (str | torch.dtype, optional): Autocast dtype, as in
            ``AmpOptimWrapper`` (None: float16 on GPUs).
        **kwargs: Other arguments of :class:`~mmengine.optim.AmpOptimWrapper`.
    """

    def __init__(self, loss_scale='dynamic', dtype=None, **kwargs) -> None:
        if has_accelerator():
            super().__init__(loss_scale=loss_scale, dtype=dtype, **kwargs)
            return
        if dtype not in ('bfloat16', torch.bfloat16):
            raise ValueError(
                'GlobalNormAmpOptimWrapper: mixed precision on a machine '
                f'without GPU needs dtype=\'bfloat16\' (CPU autocast), got '
                f'dtype={dtype!r}; e.g. tools/train.py CONFIG --amp '
                '--cfg-options optim_wrapper.dtype=bfloat16')
        with _accelerator_check_skipped():
            super().__init__(loss_scale=loss_scale, dtype=dtype, **kwargs)
        # bf16 has float32's range: no loss scaling (a disabled scaler
        # passes every call through)
        self.loss_scaler = torch.amp.GradScaler('cpu', enabled=False)

    def step(self, **kwargs) -> None:
        """Unscale, agree on overflow across ranks, clip, step, update.

        Args:
            **kwargs: Keyword arguments of :meth:`torch.optim.Optimizer.step`.
        """
        distributed = dist.is_available() and dist.is_initialized()
        if self.clip_grad_kwargs or distributed:
            self.loss_scaler.unscale_(self.optimizer)
        if distributed and self.loss_scaler.is_enabled():
            # GradScaler's per-optimizer record of the unscale_ above (a
            # disabled scaler, bf16 on CPU, checks nothing and skips nothing)
            state = self.loss_scaler._per_optimizer_states[id(self.optimizer)]
            for found_inf in state['found_inf_per_device'].values():
                dist.all_reduce(found_inf, op=dist.ReduceOp.MAX)
        if self.clip_grad_kwargs:
            self._clip_grad()
        self.loss_scaler.step(self.optimizer, **kwargs)
        self.loss_scaler.update(self._scale_update_param)
