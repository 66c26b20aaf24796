# Copyright (c) mmgem contributors. All rights reserved.
"""Hands the GEM plan to the locality sampler and logs the exchange."""
import logging
from typing import List, Optional

from mmdet.registry import HOOKS
from mmengine.dist import is_distributed
from mmengine.hooks import CheckpointHook, Hook
from mmengine.logging import print_log
from mmengine.model import is_model_wrapper
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

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


def _sharded_moe_layers(model: nn.Module) -> List[ExpertParallelMoEFFN]:
    """The model's MoE layers whose experts are sharded over ranks."""
    return [m for m in model.modules()
            if isinstance(m, ExpertParallelMoEFFN) and m.is_sharded]


def give_plan_to_sampler(model: nn.Module, dataloader) -> Optional[object]:
    """Hand the model's plan to the plan sampler of ``dataloader``.

    The one way :class:`~mmgem.datasets.samplers.ExpertLocalitySampler` gets
    a plan: the quota and thresholds the model routes by (its
    :class:`~mmgem.models.layers.RoutingTable`, filled by ``model.plan_file``,
    :func:`mmgem.apis.attach_plan` or ``GEMPlannerHook``) and the
    expert-parallel size of its sharded MoE layers (1 when none is sharded).

    Args:
        model (nn.Module): The (unwrapped) GEM model.
        dataloader: A built data loader.

    Returns:
        The sampler (or batch sampler) given the plan, or None when the data
        loader has none with ``set_plan``.

    Raises:
        RuntimeError: If the data loader has a plan sampler and the model has
            no plan installed.
    """
    sampler = _find_plan_sampler(dataloader)
    if sampler is None:
        return None
    has_plan = getattr(model, 'has_plan', None)
    if not any(isinstance(m, MoEFFN) for m in model.modules()) or not (
            callable(has_plan) and has_plan()):
        raise RuntimeError(
            'the training sampler needs the GEM plan but the model has none '
            'installed; add GEMPlannerHook to custom_hooks or give '
            'model.plan_file')
    sharded = _sharded_moe_layers(model)
    ep_size = sharded[0].topology.ep_size if sharded else 1
    # the quota and thresholds the model routes by, from its routing table
    quota, names, thresholds = model.routing_table.host()
    sampler.set_plan(quota.numpy().copy(), expert_parallel_size=ep_size,
                     thresholds=thresholds.numpy().copy(),
                     dataset_names=names or None)
    return sampler


def train_mode_batchnorms(model: nn.Module) -> List[str]:
    """BatchNorm layers that use batch statistics when the model trains.

    The model is put in training mode (its own ``train()``, which e.g. keeps
    ``norm_eval`` layers in eval mode) and back to the modes it had.
    SyncBatchNorm (statistics over all ranks) is not listed.

    Args:
        model (nn.Module): The model.

    Returns:
        list[str]: Names of the layers.
    """
    modes = {m: m.training for m in model.modules()}
    model.train()
    try:
        return [
            name for name, m in model.named_modules()
            if isinstance(m, _BatchNorm) and not isinstance(m, nn.SyncBatchNorm)
            and 'Sync' not in type(m).__name__ and m.training
        ]
    finally:
        for m, mode in modes.items():
            m.training = mode


def _batch_size(dataloader) -> int:
    batch_sampler = getattr(dataloader, 'batch_sampler', None)
    size = getattr(batch_sampler, 'batch_size', None) or getattr(
        dataloader, 'batch_size', None)
    return int(size or 1)


@HOOKS.register_module()
class ExpertParallelExchangeHook(Hook):
    """Connect expert-parallel training to the sampler and the logs.

    - ``before_train`` (after ``GEMPlannerHook``, which has ``VERY_HIGH``
      priority, has installed or restored the plan): hands the model's plan
      quota and expert-parallel size to the training sampler if it has
      ``set_plan`` (:class:`~mmgem.datasets.samplers.ExpertLocalitySampler`);
      in distributed expert-parallel training, refuses a plain
      ``CheckpointHook``, which would save rank 0's experts only; warns when
      the sampler gives some rank mostly single-dataset batches while the
      model has BatchNorm layers that normalise with batch statistics in
      training (every such rank then normalises one domain; use SyncBN or
      frozen BN).
    - ``after_train_iter``: logs ``exchange_MB``, the megabytes this rank
      sent to other ranks through the expert exchange in the iteration
      (forward and backward; 0 in data-parallel mode and with the locality
      sampler), and resets the counter.

    Args:
        check_checkpoint_hook (bool): Refuse a plain ``CheckpointHook`` in
            expert-parallel training. Defaults to True.
        single_dataset_batch_share (float): Warn about BatchNorm when some
            rank's share of single-dataset batches reaches this. Defaults to
            0.5.
    """

    priority = 'NORMAL'

    def __init__(self, check_checkpoint_hook: bool = True,
                 single_dataset_batch_share: float = 0.5) -> None:
        self.check_checkpoint_hook = check_checkpoint_hook
        self.single_dataset_batch_share = single_dataset_batch_share
        self.last_sent_bytes = 0
        self.batchnorm_warning: Optional[str] = None

    def before_train(self, runner) -> None:
        """Give the plan to the sampler; check the checkpoint hook."""
        model = runner.model.module if is_model_wrapper(
            runner.model) else runner.model
        sharded = _sharded_moe_layers(model)
        if sharded and is_distributed() and self.check_checkpoint_hook:
            plain = [h for h in runner.hooks if isinstance(h, CheckpointHook)
                     and not isinstance(h, ExpertParallelCheckpointHook)]
            if plain:
                raise TypeError(
                    'expert-parallel training with a plain CheckpointHook '
                    'would save rank 0\'s experts only; set '
                    "default_hooks.checkpoint.type='ExpertParallelCheckpointHook'")
        sampler = give_plan_to_sampler(model, runner.train_dataloader)
        if sampler is not None:
            self._check_batchnorm(runner, model, sampler)
        exchange_stats().reset()

    def _check_batchnorm(self, runner, model: nn.Module, sampler) -> None:
        """Warn when ranks normalise single-dataset batches in train mode."""
        if not callable(getattr(sampler, 'distortion', None)):
            return
        norms = train_mode_batchnorms(model)
        if not norms:
            return
        batch_size = _batch_size(runner.train_dataloader)
        shares = sampler.distortion(batch_size)['single_dataset_batch_share']
        ranks = [r for r, share in enumerate(shares)
                 if share >= self.single_dataset_batch_share]
        if not ranks:
            return
        self.batchnorm_warning = (
            f'{type(sampler).__name__}: ranks {ranks} get single-dataset '
            'batches ('
            + ', '.join(f'rank {r}: {100 * shares[r]:.0f}%' for r in ranks)
            + f' of batches of {batch_size}) and the model has '
            f'{len(norms)} BatchNorm layers that normalise with batch '
            f'statistics in training (e.g. {norms[0]}), so each of these '
            'ranks normalises one domain only. Use SyncBN (sync_bn=\'torch\''
            ' in the config, or norm_cfg=dict(type=\'SyncBN\')) or frozen BN '
            '(norm_eval=True).')
        print_log(self.batchnorm_warning, logger='current',
                  level=logging.WARNING)

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
