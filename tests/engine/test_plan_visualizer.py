# Copyright (c) mmgem contributors. All rights reserved.
"""The plan's heat map and table reach MMEngine's vis backends at planning time."""
import importlib.util
from pathlib import Path

import mmcv
import numpy as np
import pytest
from mmengine.config import Config
from mmengine.runner import Runner

from mmgem.planner import GEMPlan
from mmgem.visualization import render_text_image

REPO = Path(__file__).resolve().parents[2]
GEM_CFG = REPO / 'configs' / 'gem' / 'gem-dino-tiny_r18_mini-uodb.py'


def _train_one_iter(root: Path, work_dir: Path, vis_backends: list) -> Runner:
    # unformatted: MMEngine would yapf-format the config text for every log, dump and
    # checkpoint (no test here reads that text); Config.fromfile of MMEngine 0.10.7
    # drops its format_python_code, hence the copy
    cfg = Config.fromfile(str(GEM_CFG))
    cfg = Config(cfg.to_dict(), filename=cfg.filename, format_python_code=False)
    for name in ('train_dataloader', 'val_dataloader', 'test_dataloader'):
        cfg[name].dataset.data_root = str(root)
    cfg.work_dir = str(work_dir)
    cfg.train_cfg = dict(type='IterBasedTrainLoop', max_iters=1, val_interval=10**6)
    cfg.param_scheduler = []
    cfg.val_dataloader = cfg.val_cfg = cfg.val_evaluator = None  # no final validation
    cfg.default_hooks.checkpoint = dict(type='CheckpointHook', interval=10**6)
    cfg.custom_hooks[0].similarity = dict(sources=dict(labels=1.0))
    cfg.visualizer.vis_backends = vis_backends
    # a fresh instance: MMEngine hands out an existing Visualizer of the same name (and
    # save_dir) when an earlier Runner of this process built one
    cfg.visualizer.name = f'plan_vis_{work_dir.name}'
    cfg.log_level = 'WARNING'
    runner = Runner.from_cfg(cfg)
    runner.train()
    return runner


def test_plan_heatmap_and_table_arrive_at_local_vis_backend(mini_uodb_root, tmp_path):
    runner = _train_one_iter(mini_uodb_root, tmp_path, [dict(type='LocalVisBackend')])
    (vis_dir,) = tmp_path.glob('*/vis_data/vis_image')
    assert sorted(p.name for p in vis_dir.iterdir()) == ['gem_plan_0.png',
                                                         'gem_plan_table_0.png']
    # the backend's image is the heat map of the installed plan, drawn anew here
    plan = GEMPlan.load(str(tmp_path / 'gem_plan.json'))
    assert plan.hash == runner.model.installed_plan_hash()
    plan.plot(str(tmp_path / 'redrawn.png'))
    np.testing.assert_array_equal(mmcv.imread(str(vis_dir / 'gem_plan_0.png')),
                                  mmcv.imread(str(tmp_path / 'redrawn.png')))
    table = mmcv.imread(str(vis_dir / 'gem_plan_table_0.png'), channel_order='rgb')
    np.testing.assert_array_equal(table, render_text_image(str(plan)))
    assert (table < 128).any() and (table > 128).any()  # text on a background


@pytest.mark.skipif(importlib.util.find_spec('tensorboard') is None,
                    reason='tensorboard is optional (requirements/optional.txt)')
def test_plan_images_arrive_at_tensorboard(mini_uodb_root, tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    _train_one_iter(mini_uodb_root, tmp_path, [dict(type='TensorboardVisBackend')])
    (events,) = tmp_path.glob('*/vis_data/events.out.tfevents.*')
    accumulator = EventAccumulator(str(events.parent))
    accumulator.Reload()
    assert {'gem_plan', 'gem_plan_table'} <= set(accumulator.Tags()['images'])
