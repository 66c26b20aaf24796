# Copyright (c) mmgem contributors. All rights reserved.
"""An optimizer-wrapper constructor that picks the global-norm wrappers.

In expert-parallel training every rank holds other experts, so two things
that MMEngine's wrappers do per rank must be done over all ranks: the norm
that ``clip_grad`` clips by, and (mixed precision) the loss scaler's check
for inf/nan gradients. Otherwise ranks clip by different factors, or one
rank skips a step that another takes, and the shared weights drift apart.
:class:`~mmgem.engine.optim.GlobalNormOptimWrapper` and
:class:`~mmgem.engine.optim.GlobalNormAmpOptimWrapper` do both globally.

:class:`ExpertParallelOptimWrapperConstructor` is MMEngine's
``DefaultOptimWrapperConstructor`` (so ``paramwise_cfg`` works as usual)
that, when the model holds expert shards, builds

- ``GlobalNormOptimWrapper`` for ``type='OptimWrapper'``,
- ``GlobalNormAmpOptimWrapper`` for ``type='AmpOptimWrapper'``,

and the configured type otherwise. On a machine without an accelerator,
``AmpOptimWrapper`` (which MMEngine refuses there) also becomes
``GlobalNormAmpOptimWrapper``, which runs bf16 CPU autocast
(``optim_wrapper.dtype='bfloat16'``). mmdet's ``tools/train.py --amp`` sets
``optim_wrapper.type='AmpOptimWrapper'`` whatever the config said, so with
this constructor ``--amp`` works on the expert-parallel configs::

    optim_wrapper = dict(type='GlobalNormOptimWrapper',
                         constructor='ExpertParallelOptimWrapperConstructor')

A per-rank wrapper that would clip or skip steps per rank in expert-parallel
training is refused by
:class:`~mmgem.engine.wrappers.GEMDistributedDataParallel` at the first
step, with a message naming these classes.
"""
from mmdet.registry import OPTIM_WRAPPER_CONSTRUCTORS
from mmengine.logging import print_log
from mmengine.optim import DefaultOptimWrapperConstructor, OptimWrapper
from torch import nn

from mmgem.models.layers.expert_parallel import is_expert_shard

from .global_norm_optim_wrapper import has_accelerator

#: mmengine wrapper type -> its global-norm counterpart.
GLOBAL_NORM_WRAPPERS = {
    'OptimWrapper': 'GlobalNormOptimWrapper',
    'AmpOptimWrapper': 'GlobalNormAmpOptimWrapper',
}


def has_expert_shards(model: nn.Module) -> bool:
    """Whether any parameter of ``model`` is an expert shard.

    Args:
        model (nn.Module): The (wrapped) model.

    Returns:
        bool: True in expert-parallel training with more than one rank per
        expert-parallel group.
    """
    return any(is_expert_shard(p) for p in model.parameters())


@OPTIM_WRAPPER_CONSTRUCTORS.register_module()
class ExpertParallelOptimWrapperConstructor(DefaultOptimWrapperConstructor):
    """``DefaultOptimWrapperConstructor`` that maps MMEngine's wrappers to
    the global-norm ones when the model is expert parallel.

    Args:
        optim_wrapper_cfg (dict): The optimizer wrapper config.
        paramwise_cfg (dict, optional): As in
            ``DefaultOptimWrapperConstructor``.
    """

    def __call__(self, model: nn.Module) -> OptimWrapper:
        """Build the optimizer wrapper for ``model``.

        Args:
            model (nn.Module): The (wrapped) model; expert parallelism is
                already set up when MMEngine builds the optimizer.

        Returns:
            OptimWrapper: The wrapper.
        """
        wrapper_type = self.optim_wrapper_cfg.get('type', 'OptimWrapper')
        why = None
        if has_expert_shards(model) and wrapper_type in GLOBAL_NORM_WRAPPERS:
            why = ('the model is expert parallel (gradient norm and overflow '
                   'check over all ranks)')
        elif wrapper_type == 'AmpOptimWrapper' and not has_accelerator():
            why = 'there is no GPU (bf16 CPU autocast)'
        if why is not None:
            mapped = GLOBAL_NORM_WRAPPERS[wrapper_type]
            print_log(
                f'ExpertParallelOptimWrapperConstructor: {wrapper_type} '
                f'becomes {mapped}: {why}', logger='current')
            self.optim_wrapper_cfg = dict(self.optim_wrapper_cfg, type=mapped)
        return super().__call__(model)
