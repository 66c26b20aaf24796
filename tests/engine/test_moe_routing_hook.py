# Copyright (c) mmgem contributors. All rights reserved.
"""MoERoutingVisualizationHook and the routing scalars in a real Runner."""
import glob
import os.path as osp

import numpy as np
from mmengine.hooks import Hook
from test_gem_planner_hook import build_runner, make_cfg, planner_hook

from mmgem.datasets.samplers.expected_images import find_uodb_dataset
from mmgem.engine import MoERoutingVisualizationHook


class ScalarProbe(Hook):
    """Copies the message hub's train scalars after every iteration."""

    priority = 'LOWEST'

    def __init__(self) -> None:
        self.keys = set()

    def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None) -> None:
        self.keys |= set(runner.message_hub.log_scalars)


def test_routing_heat_maps_reach_the_visualizer(mini_uodb_root, tmp_path):
    cfg = make_cfg(mini_uodb_root, tmp_path, max_iters=2, val=True)
    cfg.train_cfg.val_interval = 2
    # every query counts as foreground: the counts are then fixed by the plan
    vis = [h for h in cfg.custom_hooks if h.type == 'MoERoutingVisualizationHook']
    assert len(vis) == 1  # the GEM config shows the routing at every validation
    vis[0].score_thr = 0.0
    # mmdet's runtime names its visualizer 'visualizer', and MMEngine hands an
    # existing instance of that name (with an earlier runner's save_dir) to
    # every later runner of the process: give this one its own
    cfg.visualizer.name = f'routing_vis_{tmp_path.name}'
    probe = ScalarProbe()
    runner = build_runner(cfg, probe)
    runner.train()

    # per-iteration routing scalars went through the message hub
    num_experts = runner.model.num_experts
    for e in range(num_experts):
        assert f'train/moe_load_e{e}' in probe.keys
    assert 'train/moe_drop_rate' in probe.keys

    # the counts of the validation equal the plan's routing of the images
    plan = planner_hook(runner).plan
    dataset = find_uodb_dataset(runner.val_dataloader.dataset)
    expected = np.zeros((len(dataset.dataset_names), num_experts), dtype=np.int64)
    for idx in range(len(dataset)):
        info = dataset.get_data_info(idx)
        e = plan.expert_of(info['dataset_name'], info['img_id'])
        expected[info['dataset_id'], e] += runner.model.num_queries
    table = open(osp.join(runner.work_dir, 'moe_routing_val.md')).read()
    hook = next(h for h in runner.hooks if isinstance(h, MoERoutingVisualizationHook))
    assert hook.tally is None  # finished and reset
    for layer in (0, 2):
        assert f'decoder layer {layer}' in table
    for name, row in zip(dataset.dataset_names, expected):
        share = row / row.sum()
        line = next(x for x in table.splitlines() if x.startswith(f'| {name} |'))
        assert line == (f'| {name} | {int(row.sum())} | ' +
                        ' | '.join(f'{v:.2f}' for v in share) + ' |')
    # the specialisation of the plan's routing, per layer, in the table and the hub
    nmi = _nmi_by_loops(expected.tolist())
    assert table.count(f'NMI(dataset; expert) = {nmi:.3f}') == 2
    for layer in (0, 2):
        logged = runner.message_hub.get_scalar(f'val/moe_nmi_decoder_layer_{layer}').current()
        assert abs(logged - nmi) < 1e-9
    # one heat map per MoE layer, saved by the LocalVisBackend
    for layer in (0, 2):
        files = glob.glob(osp.join(
            runner.log_dir, 'vis_data', 'vis_image', f'moe_routing_decoder_layer_{layer}_2.png'))
        assert len(files) == 1, layer
        assert osp.isfile(osp.join(runner.work_dir, f'moe_routing_val_decoder_layer_{layer}.png'))
    assert runner.model.record_routing is False


def _nmi_by_loops(counts):
    """Independent NMI (arithmetic normalisation): plain sums, natural logs."""
    import math
    total = sum(sum(r) for r in counts)
    rows = [sum(r) / total for r in counts]
    cols = [sum(r[e] for r in counts) / total for e in range(len(counts[0]))]
    mi = sum(c / total * math.log(c / total / (rows[d] * cols[e]))
             for d, r in enumerate(counts) for e, c in enumerate(r) if c)
    hd = -sum(p * math.log(p) for p in rows if p)
    he = -sum(p * math.log(p) for p in cols if p)
    return 2 * mi / (hd + he)
