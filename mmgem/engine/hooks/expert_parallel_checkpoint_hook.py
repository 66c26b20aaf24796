# Copyright (c) mmgem contributors. All rights reserved.
"""Checkpoints of expert-parallel training that do not depend on world size.

MMEngine saves checkpoints on rank 0 only (``Runner.save_checkpoint`` is
``master_only``), where no collective can run, and rank 0 holds only its own
experts. :class:`ExpertParallelCheckpointHook` is a
:class:`~mmengine.hooks.CheckpointHook` that, right before every checkpoint
the runner saves (``interval``, last, best; see
:mod:`mmgem.engine.hooks.save_collectives`), gathers the expert shards of
every :class:`~mmgem.models.layers.ExpertParallelMoEFFN` from all ranks of
the expert-parallel group, together with their optimizer state (e.g. AdamW's
moments) when the checkpoint holds the optimizer; then, in
``before_save_checkpoint`` on rank 0, it writes the full
``(num_experts, ...)`` tensors into the checkpoint in place of the shards.
Nothing is gathered when nothing is saved (e.g. a validation that does not
improve ``save_best``, or no ``save_best`` at all).

So a checkpoint of expert-parallel training is the checkpoint a single
process (or data-parallel training) would write: it loads with any world
size, in either mode. Loading keeps each rank's slice: model weights are
sliced by :class:`~mmgem.models.layers.ExpertParallelMoEFFN` itself (so
``load_from``, ``tools/test.py`` and ``init_cfg`` work too), and on
``resume`` this hook slices the expert entries of the optimizer state in
``after_load_checkpoint``, before MMEngine loads it.

Gathering costs one all-gather of the experts per save and rank 0 holds the
full experts for the time of the save (for GEM-DINO's 3 MoE layers of 8
experts, about 25 M numbers plus optimizer state).
"""
from typing import Dict, List, Optional, Tuple

import torch
import torch.distributed as dist
from mmdet.registry import HOOKS
from mmengine.dist import all_gather_object, is_distributed
from mmengine.model import is_model_wrapper
from mmengine.optim import OptimWrapper
from torch import Tensor, nn

from mmgem.models.layers.expert_parallel import ExpertParallelMoEFFN

from .gem_checkpoint_hook import GEMCheckpointHook
from .save_collectives import add_save_collective, save_payload

PAYLOAD_KEY = 'experts'


def expert_parallel_layers(model: nn.Module
                           ) -> List[Tuple[str, ExpertParallelMoEFFN]]:
    """The sharded expert-parallel MoE layers of a (wrapped) model.

    Args:
        model (nn.Module): The model or its wrapper.

    Returns:
        list[tuple[str, ExpertParallelMoEFFN]]: ``(name, layer)`` pairs.
    """
    if is_model_wrapper(model):
        model = model.module
    return [(name, m) for name, m in model.named_modules()
            if isinstance(m, ExpertParallelMoEFFN) and m.is_sharded]


def _gather(shard: Tensor, layer: ExpertParallelMoEFFN) -> Tensor:
    """All-gather a shard over the layer's EP group, concatenated."""
    group = layer.topology.ep_group
    parts = [torch.empty_like(shard) for _ in range(layer.topology.ep_size)]
    dist.all_gather(parts, shard.detach().contiguous(), group=group)
    return torch.cat(parts, dim=0).cpu()


def _param_indices(optim_wrapper) -> Dict[int, int]:
    """``id(param) -> index`` as in ``optimizer.state_dict()['state']``."""
    params = [p for group in optim_wrapper.optimizer.param_groups
              for p in group['params']]
    return {id(p): i for i, p in enumerate(params)}


@HOOKS.register_module()
class ExpertParallelCheckpointHook(GEMCheckpointHook):
    """CheckpointHook that saves full experts in expert-parallel training.

    Use it in place of ``default_hooks.checkpoint``; it takes the arguments
    of :class:`~mmengine.hooks.CheckpointHook` and behaves as
    :class:`~mmgem.engine.hooks.GEMCheckpointHook` (atomic saves,
    keep-until-saved) when the model has no sharded expert (data parallel,
    one process).

    Args:
        *args, **kwargs: Those of :class:`~mmengine.hooks.CheckpointHook`.
    """

    def before_run(self, runner) -> None:
        """Gather the experts before every checkpoint the runner saves.

        Args:
            runner (Runner): The runner.
        """
        super().before_run(runner)
        add_save_collective(
            runner, PAYLOAD_KEY,
            lambda r, save_optimizer: self.gather_experts(r, save_optimizer))

    # ------------------------------------------------------------------
    # saving
    # ------------------------------------------------------------------
    def gather_experts(self, runner, with_optimizer: bool = True
                       ) -> Optional[dict]:
        """Gather every expert shard (and its optimizer state) on all ranks.

        A collective: every rank must call it.

        Args:
            runner (Runner): The runner.
            with_optimizer (bool): Also gather the experts' optimizer state.
                Defaults to True.

        Returns:
            dict, optional: ``state_dict`` (key -> full tensor) and
            ``optimizer`` (state index -> {key: full tensor}); None when the
            model has no sharded expert.
        """
        layers = expert_parallel_layers(runner.model)
        if not layers or not is_distributed():
            return None
        state_dict: Dict[str, Tensor] = {}
        optim_state: Dict[int, Dict[str, Tensor]] = {}
        optim_wrapper = runner.optim_wrapper
        with_optim = with_optimizer and isinstance(optim_wrapper, OptimWrapper)
        indices = _param_indices(optim_wrapper) if with_optim else {}
        # Every rank must gather the same entries in the same order.
        local_keys = []
        for name, layer in layers:
            for pname, param in layer.expert_parameters():
                state = optim_wrapper.optimizer.state.get(param, {}) \
                    if with_optim else {}
                local_keys.append(sorted(
                    k for k, v in state.items()
                    if torch.is_tensor(v) and v.shape == param.shape))
        all_keys = all_gather_object(local_keys)
        if any(keys != local_keys for keys in all_keys):
            raise RuntimeError(
                'ExpertParallelCheckpointHook: the ranks hold optimizer state '
                f'for different expert entries ({all_keys}); cannot gather a '
                'consistent checkpoint')
        entry = 0
        for name, layer in layers:
            prefix = f'{name}.' if name else ''
            for pname, param in layer.expert_parameters():
                state_dict[prefix + pname] = _gather(param.data, layer)
                keys = local_keys[entry]
                entry += 1
                if keys:
                    state = optim_wrapper.optimizer.state[param]
                    optim_state[indices[id(param)]] = {
                        k: _gather(state[k], layer)
                        for k in keys
                    }
        return dict(state_dict=state_dict, optimizer=optim_state)

    def before_save_checkpoint(self, runner, checkpoint: dict) -> None:
        """Put the gathered full experts into the checkpoint (rank 0).

        Args:
            runner (Runner): The runner.
            checkpoint (dict): The checkpoint about to be written.
        """
        gathered = save_payload(runner, PAYLOAD_KEY)
        if gathered is None:
            if expert_parallel_layers(runner.model) and is_distributed():
                raise RuntimeError(
                    'a checkpoint of expert-parallel training is being saved '
                    'without gathering the experts (Runner.save_checkpoint '
                    'called on rank 0 only, or before this hook\'s before_run);'
                    ' call runner.save_checkpoint on every rank, as '
                    'MMEngine\'s hooks do')
            return
        for key, value in gathered['state_dict'].items():
            if key not in checkpoint['state_dict']:
                raise KeyError(f'expert tensor {key} is not in the state dict')
            checkpoint['state_dict'][key] = value
        optim_state = checkpoint.get('optimizer', {}).get('state')
        if optim_state is not None:
            for index, entries in gathered['optimizer'].items():
                optim_state[index].update(entries)

    # ------------------------------------------------------------------
    # loading
    # ------------------------------------------------------------------
    def after_load_checkpoint(self, runner, checkpoint: dict) -> None:
        """Keep this rank's slice of the experts' optimizer state.

        Model weights are sliced by the layers when MMEngine loads them.

        Args:
            runner (Runner): The runner.
            checkpoint (dict): The loaded checkpoint.
        """
        optim_state = checkpoint.get('optimizer', {}).get('state')
        optim_wrapper = runner.optim_wrapper
        if not optim_state or not isinstance(optim_wrapper, OptimWrapper):
            return
        indices = _param_indices(optim_wrapper)
        for _, layer in expert_parallel_layers(runner.model):
            start, count = layer.local_expert_start, layer.num_local_experts
            for pname, param in layer.expert_parameters():
                state = optim_state.get(indices[id(param)], {})
                for key, value in state.items():
                    if not torch.is_tensor(value) or value.dim() == 0:
                        continue
                    if value.size(0) == layer.num_experts:
                        state[key] = value[start:start + count]
                    elif value.size(0) != count:
                        raise ValueError(
                            f'optimizer state {key!r} of {pname} holds '
                            f'{value.size(0)} experts; the model has '
                            f'{layer.num_experts} ({count} on this rank)')
