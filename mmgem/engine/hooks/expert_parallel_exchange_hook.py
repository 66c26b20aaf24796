# Copyright (c) mmgem contributors. All rights reserved.
"""Hands the GEM plan to the locality sampler and logs the exchange."""
from typing import Optional

from mmdet.registry import HOOKS
from mmengine.dist import is_distributed
from mmengine.hooks import CheckpointHook, Hook
from mmengine.model import is_model_wrapper

from mmgem.models.layers.ep_exchange_stats import exchange_stats
from mmgem.models.layers.expert_parallel import ExpertParallelMoEFFN
from mmgem.models.layers.moe_ffn import MoEFFN

from .expert_parallel_checkpoint_hook import ExpertParallelCheckpointHook


def _find_plan_sampler(dataloader) -> Optional[object]:
    """The sampler (or batch sampler) of ``dataloader`` with ``set_plan``."""
    seen, obj = set(), dataloader
    while obj is not None and id(obj) not in seen:
        seen.add(id(obj))
        if callable(getattr(obj, 'set_plan', None)):
            return obj
        obj = getattr(obj, 'batch_sampler', None) or getattr(
            obj, 'sampler', None)
    sampler = getattr(dataloader, 'sampler', None)
    return sampler if callable(getattr(sampler, 'set_plan', None)) else None


@HOOKS.register_module()
class ExpertParallelExchangeHook(Hook):
    """Connect expert-parallel training to the sampler and the logs.

    - ``before_train`` (after ``GEMPlannerHook``, which has ``VERY_HIGH``
      priority, has installed or restored the plan): hands the model's plan
      quota and expert-parallel size to the training sampler if it has
      ``set_plan`` (:class:`~mmgem.datasets.samplers.ExpertLocalitySampler`);
      in distributed expert-parallel training, refuses a plain
      ``CheckpointHook``, which would save rank 0's experts only.
    - ``after_train_iter``: logs ``exchange_MB``, the megabytes this rank
      sent to other ranks through the expert exchange in the iteration
      (forward and backward; 0 in data-parallel mode and with the locality
      sampler), and resets the counter.

    Args:
        check_checkpoint_hook (bool): Refuse a plain ``CheckpointHook`` in
            expert-parallel training. Defaults to True.
    """

    priority = 'NORMAL'

    def __init__(self, check_checkpoint_hook: bool = True) -> None:
        self.check_checkpoint_hook = check_checkpoint_hook
        self.last_sent_bytes = 0

    def before_train(self, runner) -> None:
        """Give the plan to the sampler; check the checkpoint hook."""
        model = runner.model.module if is_model_wrapper(
            runner.model) else runner.model
        layers = [m for m in model.modules() if isinstance(m, MoEFFN)]
        sharded = [m for m in layers if isinstance(m, ExpertParallelMoEFFN)
                   and m.is_sharded]
        ep_size = sharded[0].topology.ep_size if sharded else 1
        if sharded and is_distributed() and self.check_checkpoint_hook:
            plain = [h for h in runner.hooks if isinstance(h, CheckpointHook)
                     and not isinstance(h, ExpertParallelCheckpointHook)]
            if plain:
                raise TypeError(
                    'expert-parallel training with a plain CheckpointHook '
                    'would save rank 0\'s experts only; set '
                    "default_hooks.checkpoint.type='ExpertParallelCheckpointHook'")
        sampler = _find_plan_sampler(runner.train_dataloader)
        if sampler is not None:
            if not layers or not model.has_plan():
                raise RuntimeError(
                    'the training sampler needs the GEM plan but the model '
                    'has none installed; add GEMPlannerHook to custom_hooks')
            sampler.set_plan(model.installed_plan_quota(),
                             expert_parallel_size=ep_size)
        exchange_stats().reset()

    def before_train_iter(self, runner, batch_idx: int,
                          data_batch=None) -> None:
        """Reset the exchange counter."""
        exchange_stats().reset()

    def after_train_iter(self, runner, batch_idx: int, data_batch=None,
                         outputs=None) -> None:
        """Log the bytes the exchange sent in this iteration."""
        stats = exchange_stats()
        self.last_sent_bytes = stats.sent_bytes
        runner.message_hub.update_scalar('train/exchange_MB',
                                         stats.sent_bytes / 2**20)
        stats.reset()
