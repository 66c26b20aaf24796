# Copyright (c) mmgem contributors. All rights reserved.
"""A router registered from this file trains GEM-DINO in a real Runner.

Nothing of mmgem is edited: the router is a :class:`BaseRouter` subclass
registered in ``ROUTERS`` here, named in the config, and the detector asks
it what it needs (dataset ids), which loss it has and what to log.
"""
from pathlib import Path

import torch
from mmengine.hooks import Hook
from test_gem_planner_hook import build_runner, make_cfg
from torch import nn

from mmgem.models.routers import BaseRouter
from mmgem.registry import ROUTERS

REPO = Path(__file__).resolve().parents[2]
MOE_CFG = REPO / 'configs' / 'gem' / 'moe-dino-tiny_r18_mini-uodb.py'


@ROUTERS.register_module(force=True)
class ToyDatasetRouter(BaseRouter):
    """Image of dataset ``d`` -> expert ``d % M``, output times a learned gain.

    Its auxiliary loss pulls the gains to 1; it logs the mean gain.
    """
    name = 'toy'
    needs_dataset_ids = True
    aux_loss_name = 'loss_toy'
    image_level = True

    def __init__(self, embed_dims, num_experts, init_gain=1.0):
        super().__init__(embed_dims, num_experts)
        self.gain = nn.Parameter(torch.full((num_experts, ), init_gain))

    def forward(self, layer, x, routing):
        experts = routing.dataset_ids % self.num_experts
        out = layer._dispatch_images(x, experts)
        out = out * self.gain[experts.to(x.device)][:, None, None]
        num_images, num_tokens = x.shape[:2]
        image_experts = nn.functional.one_hot(experts, self.num_experts) * num_tokens
        self.routing_stats = dict(
            expert_tokens=image_experts.sum(0),
            dropped_tokens=torch.zeros((), dtype=torch.long),
            image_experts=image_experts,
            token_experts=experts[:, None].expand(num_images, num_tokens),
            dataset_ids=routing.dataset_ids.clone())
        self._state = dict(gain=self.gain) if self.training else {}
        return out

    def aux_loss(self, token_mask=None):
        return (self._state['gain'] - 1).square().mean() if self._state else None

    @classmethod
    def log_scalars(cls, stats, training):
        return dict(toy_images=torch.tensor(float(sum(len(s['dataset_ids']) for s in stats))))


class Probe(Hook):
    priority = 'LOWEST'

    def __init__(self):
        self.keys, self.routes = set(), []

    def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None):
        self.keys |= set(runner.message_hub.log_scalars)
        for ffn in runner.model.moe_ffns():
            stats = ffn.routing_stats
            self.routes.append((stats['dataset_ids'].tolist(),
                                stats['token_experts'][:, 0].tolist()))


def test_toy_router_from_a_test_file_trains_in_a_runner(mini_uodb_root, tmp_path):
    cfg = make_cfg(mini_uodb_root, tmp_path, max_iters=3, base=MOE_CFG,
                   router=dict(type='ToyDatasetRouter', init_gain=1.5))
    cfg.custom_hooks = []
    probe = Probe()
    runner = build_runner(cfg, probe)
    gains_before = [ffn.router.gain.detach().clone() for ffn in runner.model.moe_ffns()]
    assert all(isinstance(ffn.router, ToyDatasetRouter) for ffn in runner.model.moe_ffns())
    runner.train()
    assert {'train/loss_toy', 'train/toy_images', 'train/moe_load_e0'} <= probe.keys
    assert runner.model.routing == 'toy'
    # the router routed by the dataset ids the detector handed it
    assert probe.routes
    num_experts = runner.model.num_experts
    for ids, experts in probe.routes:
        assert experts == [d % num_experts for d in ids]
    # and its parameters trained (the aux loss pulls 1.5 towards 1)
    for ffn, before in zip(runner.model.moe_ffns(), gains_before):
        after = ffn.router.gain.detach()
        assert not torch.equal(after, before)
        touched = before.new_zeros(num_experts, dtype=torch.bool)
        for ids, _ in probe.routes:
            touched[[d % num_experts for d in ids]] = True
        assert bool((after[touched] < before[touched]).all())
