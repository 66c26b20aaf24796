# Copyright (c) mmgem contributors. All rights reserved.
"""UODBMetric's keys in a real Runner log: save_best='auto' and mmdet's analyze_logs.py.

A real MMEngine Runner trains a stand-in detector for two epochs and
validates it after each with the real UODBMetric on the tiny mini-UODB test
split. The stand-in predicts ground-truth boxes and drops a share of them
that depends on the epoch and the dataset, so that the first dataset is best
after epoch 1 and the mean is best after epoch 2: a checkpoint hook that
chose the first dataset's key instead of the mean would keep the wrong one.
"""
import argparse
import importlib.util
import json
import sys
import types
from pathlib import Path

import pytest
import torch
from mmengine.config import Config
from mmengine.hooks import Hook
from mmengine.model import BaseModel
from mmengine.registry import init_default_scope
from mmengine.runner import Runner
from mmengine.structures import InstanceData
from tool_utils import run_tool

from mmgem.utils.mmdet_tools import mmdet_tool_path

REPO = Path(__file__).resolve().parents[2]
#: share of each image's boxes kept, per validation round: (first dataset, others)
KEEP = {1: (1.0, 0.2), 2: (0.4, 1.0)}


class GroundTruthDetector(BaseModel):
    """Predicts the first ``KEEP`` share of each image's ground-truth boxes."""

    def __init__(self) -> None:
        super().__init__()
        self.weight = torch.nn.Parameter(torch.ones(1))
        self.round = 0

    def forward(self, inputs, data_samples=None, mode='tensor'):
        if mode == 'loss':
            return dict(loss=(self.weight ** 2).sum())
        first, others = KEEP[self.round]
        for sample in data_samples:
            gt = sample.gt_instances
            boxes = gt.bboxes.tensor if hasattr(gt.bboxes, 'tensor') else gt.bboxes
            w_scale, h_scale = sample.scale_factor
            boxes = boxes / boxes.new_tensor([w_scale, h_scale, w_scale, h_scale])
            n = round(len(boxes) * (first if sample.dataset_id == 0 else others))
            sample.pred_instances = InstanceData(
                bboxes=boxes[:n], labels=gt.labels[:n],
                scores=torch.linspace(1.0, 0.5, max(n, 1))[:n])
        return data_samples


class CountRounds(Hook):
    def before_val_epoch(self, runner) -> None:
        runner.model.round += 1


class TrainItems(torch.utils.data.Dataset):
    def __len__(self) -> int:
        return 2

    def __getitem__(self, idx):
        return dict(inputs=torch.zeros(1))


@pytest.fixture(scope='module')
def run_log(mini_uodb_root, tmp_path_factory):
    """Two epochs, a validation after each, save_best='auto'; the Runner and its log."""
    init_default_scope('mmdet')
    data = Config.fromfile(str(REPO / 'configs/_base_/datasets/mini_uodb.py'))
    data.val_dataloader.dataset.data_root = f'{mini_uodb_root}/'
    work_dir = tmp_path_factory.mktemp('uodb_log')
    runner = Runner(
        model=GroundTruthDetector(),
        work_dir=str(work_dir),
        train_dataloader=dict(dataset=TrainItems(), batch_size=1, num_workers=0,
                              sampler=dict(type='DefaultSampler', shuffle=False),
                              collate_fn=dict(type='pseudo_collate')),
        val_dataloader=data.val_dataloader,
        val_evaluator=data.val_evaluator,
        train_cfg=dict(type='EpochBasedTrainLoop', max_epochs=2, val_interval=1),
        val_cfg=dict(type='ValLoop'),
        optim_wrapper=dict(optimizer=dict(type='SGD', lr=0.0)),
        default_hooks=dict(checkpoint=dict(type='CheckpointHook', interval=1,
                                           save_best='auto'),
                           logger=dict(type='LoggerHook', interval=1)),
        custom_hooks=[CountRounds()],
        log_level='WARNING',
        default_scope='mmdet')
    runner.train()
    (log,) = work_dir.glob('*/vis_data/2*.json')
    lines = [json.loads(line) for line in log.read_text().splitlines()]
    vals = [line for line in lines if 'uodb/bbox_mAP' in line]
    return runner, work_dir, log, vals


def test_save_best_auto_keeps_the_mean(run_log):
    runner, work_dir, _, vals = run_log
    names = runner.val_dataloader.dataset.dataset_names
    assert len(vals) == 2
    # what each round scored, from the log: the first dataset and the mean disagree
    first = [v[f'uodb/{names[0]}_bbox_mAP'] for v in vals]
    mean = [sum(v[f'uodb/{n}_bbox_mAP'] for n in names) / len(names) for v in vals]
    assert first[0] > first[1] and mean[1] > mean[0]
    assert [v['uodb/bbox_mAP'] for v in vals] == pytest.approx(mean, abs=1e-9)
    hook = next(h for h in runner.hooks if type(h).__name__ == 'CheckpointHook')
    assert hook.key_indicators == ['uodb/bbox_mAP']
    assert [p.name for p in work_dir.glob('best_*.pth')] == ['best_uodb_bbox_mAP_epoch_2.pth']


def _analyze_logs(monkeypatch):
    """mmdet's analyze_logs module; seaborn (only its style is used) may be absent."""
    if importlib.util.find_spec('seaborn') is None:
        monkeypatch.setitem(sys.modules, 'seaborn', types.SimpleNamespace(
            set_style=lambda style: None))
    spec = importlib.util.spec_from_file_location(
        'mmdet_analyze_logs', mmdet_tool_path('analysis_tools/analyze_logs.py'))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_analyze_logs_plot_curve_plots_the_mean(run_log, monkeypatch, tmp_path):
    runner, _, log, vals = run_log
    names = runner.val_dataloader.dataset.dataset_names
    module = _analyze_logs(monkeypatch)
    plotted = []
    plot = module.plt.plot
    monkeypatch.setattr(module.plt, 'plot', lambda xs, ys, **kw: (
        plotted.append((list(xs), list(ys), kw['label'])), plot(xs, ys, **kw))[1])
    keys = ['bbox_mAP', f'{names[0]}_bbox_mAP', f'{names[-1]}_bbox_mAP_50']
    args = argparse.Namespace(
        task='plot_curve', json_logs=[str(log)], keys=keys, legend=None, backend='Agg',
        style='dark', eval_interval='1', start_epoch='1', title=None,
        out=str(tmp_path / 'curve.png'))
    module.plot_curve(module.load_json_logs(args.json_logs), args)
    assert (tmp_path / 'curve.png').is_file()
    assert [p[0] for p in plotted] == [[1, 2]] * 3  # one point per epoch
    assert [p[1] for p in plotted] == [
        [v[f'uodb/{key}'] for v in vals] for key in keys]
    # the mean's curve is the mean over the datasets, not one dataset's
    means = [sum(v[f'uodb/{n}_bbox_mAP'] for n in names) / len(names) for v in vals]
    assert plotted[0][1] == pytest.approx(means, abs=1e-9)


def test_analyze_logs_command_line(run_log, tmp_path):
    """The script itself, as a user runs it (seaborn stubbed when absent)."""
    _, _, log, _ = run_log
    stub = tmp_path / 'stub'
    if importlib.util.find_spec('seaborn') is None:
        stub.mkdir()
        (stub / 'seaborn.py').write_text('def set_style(style):\n    pass\n')
    out = run_tool([str(REPO / 'tools/analysis_tools/analyze_logs.py'), 'plot_curve', str(log),
                    '--keys', 'bbox_mAP', '--out', str(tmp_path / 'mAP.png')],
                   cwd=tmp_path, extra_path=[stub] if stub.is_dir() else [])
    assert 'metric is bbox_mAP' in out
    assert (tmp_path / 'mAP.png').stat().st_size > 0
