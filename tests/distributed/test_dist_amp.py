# Copyright (c) mmgem contributors. All rights reserved.
"""Mixed precision in expert-parallel training, on 2 gloo processes.

1. mmdet's own ``tools/train.py`` with ``--amp`` (bf16 on CPU) trains the
   tiny expert-parallel GEM-DINO config for 2 iterations: ``--amp`` asks for
   ``AmpOptimWrapper``, the config's constructor builds
   ``GlobalNormAmpOptimWrapper``, the forward runs under bf16 autocast, and
   the shared weights stay bit-identical on both ranks.
2. Per-rank wrappers are refused in expert-parallel training with an error
   that names the fix: a clipping ``OptimWrapper`` (each rank would clip by
   its own norm) and ``AmpOptimWrapper`` (each rank would skip overflowing
   steps on its own).
"""
import os.path as osp
import sys

import pytest
import torch
from dist_utils import run_distributed
from mmengine.optim import AmpOptimWrapper, OptimWrapper
from runner_utils import EP_CONFIG, import_mmgem

DATA = ('train_dataloader', 'val_dataloader', 'test_dataloader')


def _write_config(path, data_root, work_dir):
    lines = [f'_base_ = {EP_CONFIG!r}']
    for loader in DATA:
        lines.append(f'{loader} = dict(dataset=dict(data_root={data_root + "/"!r}))')
    lines += [
        'train_cfg = dict(max_iters=2, val_interval=10**6)',
        'val_dataloader = None', 'val_cfg = None', 'val_evaluator = None',
        'param_scheduler = []',
        'default_hooks = dict(checkpoint=dict(interval=2), '
        'logger=dict(interval=1))',
        'custom_hooks = [dict(type="GEMPlannerHook", capacity_factor=1.25, '
        'similarity=dict(sources=dict(labels=1.0))), '
        'dict(type="ExpertParallelExchangeHook"), dict(type="ResumeStateHook")]',
    ]
    with open(path, 'w') as f:
        f.write('\n'.join(lines) + '\n')


def _train_with_amp(rank, out_dir, data_root):
    import_mmgem()
    from mmengine.runner import Runner

    from mmgem.utils.mmdet_tools import run_mmdet_tool
    config = osp.join(out_dir, 'amp_cfg.py')
    work_dir = osp.join(out_dir, 'amp')
    if rank == 0:
        _write_config(config, data_root, work_dir)
    torch.distributed.barrier()
    runners, dtypes = [], []
    original = Runner.from_cfg.__func__

    def from_cfg(cls, cfg):
        runner = original(cls, cfg)
        runners.append(runner)
        model = runner.model.module
        model.decoder.layers[0].ffn.register_forward_hook(
            lambda m, args, out: dtypes.append(
                torch.get_autocast_dtype('cpu')
                if torch.is_autocast_enabled('cpu') else None))
        return runner

    Runner.from_cfg = classmethod(from_cfg)
    argv = sys.argv
    sys.argv = ['train.py', config, '--amp', '--launcher', 'pytorch',
                '--work-dir', work_dir, '--cfg-options',
                'optim_wrapper.dtype=bfloat16']
    try:
        run_mmdet_tool('train.py')
    finally:
        sys.argv = argv
        Runner.from_cfg = classmethod(original)
    runner = runners[0]
    model = runner.model.module
    return dict(
        wrapper=type(runner.optim_wrapper).__name__,
        cast_dtype=runner.optim_wrapper.cast_dtype,
        autocast=dtypes,
        iters=runner.iter,
        loss=runner.message_hub.get_scalar('train/loss').current(),
        shared={n: p.detach().clone() for n, p in model.named_parameters()
                if not getattr(p, 'expert_parallel_size', 1) > 1})


def _refusals():
    """Per-rank wrappers are refused at the first step, naming the fix."""
    from test_dist_ddp_and_clip import MAX_NORM, ToyMoEModel, _batch

    from mmgem.engine.optim.global_norm_optim_wrapper import _accelerator_check_skipped
    from mmgem.engine.wrappers import GEMDistributedDataParallel
    messages = {}
    for name in ('clip', 'amp'):
        torch.manual_seed(0)
        model = ToyMoEModel()
        ddp = GEMDistributedDataParallel(model, expert_parallel=True)
        optim = torch.optim.SGD(model.parameters(), lr=0.1)
        if name == 'clip':
            wrapper = OptimWrapper(optim, clip_grad=dict(max_norm=MAX_NORM))
        else:
            with _accelerator_check_skipped():
                wrapper = AmpOptimWrapper(optimizer=optim, dtype='bfloat16')
        before = {k: v.clone() for k, v in model.state_dict().items()}
        with pytest.raises(TypeError) as info:
            ddp.train_step(_batch(torch.distributed.get_rank(), 0), wrapper)
        messages[name] = str(info.value)
        # refused before anything changed
        for k, v in model.state_dict().items():
            assert torch.equal(v, before[k]), k
    # a plain OptimWrapper without clipping is fine
    wrapper = OptimWrapper(torch.optim.SGD(model.parameters(), lr=0.1))
    ddp = GEMDistributedDataParallel(ToyMoEModel(), expert_parallel=True)
    ddp.train_step(_batch(torch.distributed.get_rank(), 0), wrapper)
    return messages


def _worker(rank, world_size, out_dir, data_root):
    return dict(train=_train_with_amp(rank, out_dir, data_root),
                refusals=_refusals())


@pytest.fixture(scope='module')
def amp_runs(mini_uodb_root, tmp_path_factory):
    return run_distributed(_worker, 2, tmp_path_factory.mktemp('amp'),
                           str(mini_uodb_root))


def test_mmdet_train_amp_on_the_expert_parallel_config(amp_runs):
    runs = [res['train'] for res in amp_runs]
    for run in runs:
        assert run['wrapper'] == 'GlobalNormAmpOptimWrapper'
        assert run['cast_dtype'] == torch.bfloat16
        assert run['iters'] == 2 and torch.isfinite(torch.tensor(run['loss']))
        # the MoE layers ran under bf16 autocast (2 iterations x 1 forward)
        assert run['autocast'] == [torch.bfloat16] * 2
    assert len(runs[0]['shared']) > 100
    for name, value in runs[0]['shared'].items():
        assert torch.equal(value, runs[1]['shared'][name]), name


def test_per_rank_wrappers_are_refused(amp_runs):
    for res in amp_runs:
        clip, amp = res['refusals']['clip'], res['refusals']['amp']
        assert 'OptimWrapper' in clip and 'own experts' in clip
        assert "optim_wrapper.type='GlobalNormOptimWrapper'" in clip
        assert 'AmpOptimWrapper' in amp and 'skip different steps' in amp
        assert "optim_wrapper.type='GlobalNormAmpOptimWrapper'" in amp
        for message in (clip, amp):
            assert 'ExpertParallelOptimWrapperConstructor' in message
