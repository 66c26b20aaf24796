# Copyright (c) mmgem contributors. All rights reserved.
"""DDP for GEM-DINO in data-parallel and expert-parallel mode.

Data parallel (``expert_parallel=False``, the default): every rank holds all
experts and this is MMEngine's ``MMDistributedDataParallel``. Experts that
no image of a step uses do not break DDP, without
``find_unused_parameters``: the experts of an MoE layer live in four batched
tensors (``w1``, ``b1``, ``w2``, ``b2``, one slice per expert) and every
step uses at least one expert of every MoE layer, so every parameter gets a
gradient (exact zeros in the slices of the unused experts, which is also
what a single process computes). ``find_unused_parameters`` is therefore
left to the user (DINO does not need it); the 2-process tests check it.

Expert parallel (``expert_parallel=True``): before DDP is set up, every
:class:`~mmgem.models.layers.MoEFFN` is converted in place to an
:class:`~mmgem.models.layers.ExpertParallelMoEFFN` that keeps only this
rank's experts, and

- the expert shards are excluded from DDP (``_ddp_params_and_buffers_to_
  ignore``): from its gradient all-reduce and from the rank-0 broadcast at
  start (which would overwrite other ranks' experts with rank 0's);
- after backward, the gradient of an expert (already summed over the
  images of its EP group by the reverse exchange) is summed over the ranks
  holding the same expert (its replica group) and divided by the world
  size, which is DDP's average for an expert: the result equals a
  single-process step on the union of the ranks' batches;
- an expert shard that got no gradient on this rank gets zeros, as the
  batched tensors of a data-parallel layer do;
- the replicas of an expert start identical (broadcast in the replica group
  at wrap time) and the first training step re-broadcasts shared weights from
  rank 0 and experts within replica groups, because MMEngine initialises
  weights after wrapping the model.

In expert-parallel mode the optimizer wrapper must compute the clipping
norm and the mixed-precision overflow check over all ranks
(:class:`~mmgem.engine.optim.GlobalNormOptimWrapper`,
:class:`~mmgem.engine.optim.GlobalNormAmpOptimWrapper`; the
``ExpertParallelOptimWrapperConstructor`` picks them, also for ``--amp``); a
wrapper that would clip by each rank's own norm, or let each rank skip
overflowing steps on its own, is refused at the first step.

On CPU (gloo) ``device_ids`` is dropped, which MMEngine otherwise always
passes and DDP refuses for CPU modules. The wrapper is registered in
MMEngine's root ``MODEL_WRAPPERS``: the Runner looks wrappers up there with
``get``, which does not search child registries such as mmdet's.
"""
from typing import Dict, List, Optional, Tuple, Union

import torch
import torch.distributed as dist
from mmengine.model import MMDistributedDataParallel
from mmengine.optim import AmpOptimWrapper, OptimWrapper
from mmengine.registry import MODEL_WRAPPERS
from torch import nn

from mmgem.engine.optim.global_norm_optim_wrapper import GlobalNormClipMixin
from mmgem.models.layers.ep_topology import ExpertParallelTopology, get_ep_topology
from mmgem.models.layers.expert_parallel import (
    EP_SIZE_ATTR,
    convert_to_expert_parallel,
    is_expert_shard,
)


@MODEL_WRAPPERS.register_module()
class GEMDistributedDataParallel(MMDistributedDataParallel):
    """MMEngine DDP wrapper with optional expert parallelism.

    Args:
        module (nn.Module): The model (e.g. ``GEMDINO``).
        expert_parallel (bool): Split the experts of every MoE layer over
            the ranks. Defaults to False (data parallel).
        expert_parallel_size (int, optional): Ranks sharing one full set of
            experts; must divide the world size and ``num_experts``. None
            uses the world size. Only with ``expert_parallel=True``.
        broadcast_buffers (bool): As in DDP; defaults to False like
            MMEngine's default wrapper.
        **kwargs: Other arguments of
            :class:`torch.nn.parallel.DistributedDataParallel`.

    Examples:
        >>> # in a config
        >>> model_wrapper_cfg = dict(
        ...     type='GEMDistributedDataParallel', expert_parallel=True)
        >>> optim_wrapper = dict(type='GlobalNormOptimWrapper', ...)
    """

    def __init__(self,
                 module: nn.Module,
                 expert_parallel: bool = False,
                 expert_parallel_size: Optional[int] = None,
                 broadcast_buffers: bool = False,
                 **kwargs) -> None:
        if expert_parallel_size is not None and not expert_parallel:
            raise ValueError('expert_parallel_size is set but '
                             'expert_parallel=False')
        self.converted_layers: List[str] = []
        if expert_parallel:
            self.converted_layers = convert_to_expert_parallel(
                module, expert_parallel_size)
            if not self.converted_layers:
                raise ValueError(
                    'expert_parallel=True but the model '
                    f'{type(module).__name__} has no MoEFFN layer')
        shards = [(name, p) for name, p in module.named_parameters()
                  if is_expert_shard(p)]
        if shards:
            ignored = set(getattr(module, '_ddp_params_and_buffers_to_ignore',
                                  ()))
            ignored.update(name for name, _ in shards)
            module._ddp_params_and_buffers_to_ignore = sorted(ignored)
        first = next(module.parameters(), None)
        if first is not None and first.device.type == 'cpu':
            kwargs.pop('device_ids', None)
            kwargs.pop('output_device', None)
        super().__init__(
            module=module, broadcast_buffers=broadcast_buffers, **kwargs)
        self.expert_shards: List[Tuple[str, nn.Parameter]] = shards
        self.topology: Optional[ExpertParallelTopology] = None
        if shards:
            sizes = {getattr(p, EP_SIZE_ATTR) for _, p in shards}
            if len(sizes) != 1:
                raise ValueError(f'MoE layers with different expert-parallel '
                                 f'sizes {sorted(sizes)} are not supported')
            self.topology = get_ep_topology(sizes.pop())
            self._broadcast_expert_replicas()
        self._states_synced = False
        self._optim_wrapper_checked = False

    # ------------------------------------------------------------------
    # weights
    # ------------------------------------------------------------------
    @torch.no_grad()
    def _broadcast_expert_replicas(self) -> None:
        """Make the replicas of every expert equal to the first one's."""
        topology = self.topology
        if topology is None or topology.replica_group is None:
            return
        src = topology.replica_group_ranks[0]
        for _, param in self.expert_shards:
            dist.broadcast(param.data, src=src, group=topology.replica_group)

    @torch.no_grad()
    def sync_states(self) -> None:
        """Broadcast shared weights and buffers from rank 0 and experts
        within their replica groups.

        Called once, before the first training step: MMEngine initialises
        (or loads) weights after DDP's own broadcast at wrap time.
        """
        ignored = set(getattr(self.module, '_ddp_params_and_buffers_to_ignore',
                              ()))
        for name, tensor in list(self.module.named_parameters()) + list(
                self.module.named_buffers()):
            if name not in ignored:
                dist.broadcast(tensor.data, src=0)
        self._broadcast_expert_replicas()
        self._states_synced = True

    # ------------------------------------------------------------------
    # training
    # ------------------------------------------------------------------
    def train_step(self, data: Union[dict, tuple, list],
                   optim_wrapper: OptimWrapper) -> Dict[str, torch.Tensor]:
        """Forward, backward, expert-gradient reduction and update.

        As :meth:`MMDistributedDataParallel.train_step` (and
        ``OptimWrapper.update_params``), with :meth:`reduce_expert_grads`
        between backward and the optimizer step.

        Args:
            data (dict | tuple | list): A batch from the dataloader.
            optim_wrapper (OptimWrapper): The optimizer wrapper.

        Returns:
            dict[str, Tensor]: The log variables.
        """
        if not self._states_synced:
            self.sync_states()
        if not self._optim_wrapper_checked:
            self.check_optim_wrapper(optim_wrapper)
        with optim_wrapper.optim_context(self):
            data = self.module.data_preprocessor(data, training=True)
            losses = self._run_forward(data, mode='loss')
        parsed_loss, log_vars = self.module.parse_losses(losses)
        optim_wrapper.backward(optim_wrapper.scale_loss(parsed_loss))
        if optim_wrapper.should_update():
            self.reduce_expert_grads()
            optim_wrapper.step()
            optim_wrapper.zero_grad()
        return log_vars

    def check_optim_wrapper(self, optim_wrapper: OptimWrapper) -> None:
        """Refuse a wrapper that would let expert-parallel ranks diverge.

        With expert shards, MMEngine's ``clip_grad`` clips every rank by the
        norm of its own experts and a mixed-precision loss scaler skips
        steps on the ranks whose own gradients overflow; either way the
        shared weights drift apart silently.

        Args:
            optim_wrapper (OptimWrapper): The optimizer wrapper of training.

        Raises:
            TypeError: For such a wrapper in expert-parallel training; the
                message names the global-norm wrappers.
        """
        self._optim_wrapper_checked = True
        if not self.expert_shards or isinstance(optim_wrapper,
                                                GlobalNormClipMixin):
            return
        name = type(optim_wrapper).__name__
        if isinstance(optim_wrapper, AmpOptimWrapper):
            why = ('checks for inf/nan gradients (and clips) per rank, so '
                   'ranks would skip different steps')
            fix = 'GlobalNormAmpOptimWrapper'
        elif getattr(optim_wrapper, 'clip_grad_kwargs', None):
            why = 'clips every rank by the norm of its own experts'
            fix = 'GlobalNormOptimWrapper'
        else:
            return
        raise TypeError(
            f'expert-parallel training with {name}: it {why} and the shared '
            f"weights drift apart. Use optim_wrapper.type='{fix}', or "
            "optim_wrapper.constructor='ExpertParallelOptimWrapperConstructor'"
            ', which turns OptimWrapper and AmpOptimWrapper (e.g. from '
            'tools/train.py --amp) into the global-norm wrappers.')

    @torch.no_grad()
    def reduce_expert_grads(self) -> None:
        """Average the expert gradients as DDP averages shared ones.

        An expert's local gradient already sums the contributions of every
        image of its EP group; it is summed over the expert's replica group
        and divided by the world size. Missing gradients count as zeros.
        """
        if not self.expert_shards:
            return
        params = [p for _, p in self.expert_shards if p.requires_grad]
        for p in params:
            if p.grad is None:
                p.grad = torch.zeros_like(p)
        grads = [p.grad for p in params]
        flat = torch.cat([g.reshape(-1) for g in grads])
        if self.topology.replica_group is not None:
            dist.all_reduce(flat, group=self.topology.replica_group)
        flat.div_(self.topology.world_size)
        offset = 0
        for g in grads:
            g.copy_(flat[offset:offset + g.numel()].view_as(g))
            offset += g.numel()
