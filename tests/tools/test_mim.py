# Copyright (c) mmgem contributors. All rights reserved.
"""`mim train mmdet` / `mim test mmdet` on a tiny GEM config, from a clean shell."""
import os
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
CONFIG = 'configs/gem/gem-dino-tiny_r18_mini-uodb.py'


def _mim(*args: str, cwd: Path) -> str:
    mim = shutil.which('mim')
    if mim is None:
        # openmim is optional (its full install downgrades setuptools); `make test`
        # installs it (without opendatalab) through `make mim`
        pytest.skip('openmim is not installed: `make mim` (or `make test`) installs it')
    env = {k: v for k, v in os.environ.items() if not k.startswith('PYTEST')}
    env['PYTHONPATH'] = ''  # a clean shell: mmgem must come from the installed package
    env['OMP_NUM_THREADS'] = env.get('OMP_NUM_THREADS', '2')
    proc = subprocess.run([mim, *args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=600)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, f'mim {" ".join(args)} failed:\n{out[-4000:]}'
    return out


def test_mim_train_then_test_prints_the_per_dataset_table(mini_uodb_root, tmp_path):
    root = f'{mini_uodb_root}/'
    data = [f'{loader}.dataset.data_root={root}'
            for loader in ('train_dataloader', 'val_dataloader', 'test_dataloader')]
    work_dir = tmp_path / 'work'
    _mim('train', 'mmdet', str(REPO / CONFIG), '--gpus', '0', '--work-dir', str(work_dir),
         '--cfg-options', 'train_cfg.max_iters=2', 'train_cfg.val_interval=100',
         'default_hooks.checkpoint.interval=2', 'param_scheduler=[]', *data, cwd=tmp_path)
    assert (work_dir / 'iter_2.pth').is_file()
    assert (work_dir / 'gem_plan.json').is_file()

    out = _mim('test', 'mmdet', str(REPO / CONFIG), '--gpus', '0', '--checkpoint',
               str(work_dir / 'iter_2.pth'), '--work-dir', str(work_dir),
               '--cfg-options', *data, cwd=tmp_path)
    # UODBMetric's table: one column per domain and a Mean column
    header = next(line for line in out.splitlines() if '| Mean |' in line)
    for name in ('Natural', 'Aerial', 'Signs', 'Icons', 'Clipart', 'Medical'):
        assert name in header, header
    assert 'uodb/bbox_mAP' in out
    assert (work_dir / 'uodb_table.md').is_file()
