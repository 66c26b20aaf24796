# Copyright (c) mmgem contributors. All rights reserved.
"""A checkpoint whose pickle runs a command is refused everywhere mmgem is.

The file, written by ``torch.save``, unpickles to ``os.system('touch
MARKER')``. With mmgem imported it must be refused by mmengine's
``load_checkpoint`` and mmdet's ``init_detector`` (which are torch's safe
``weights_only=True`` default, untouched by mmgem), and by
``tools/train.py --resume`` of an mmgem config (GEMRunner's loader, whose
error names the file and the global); the marker is never created.
"""
import os
import subprocess
import sys

import pytest
import torch
from mmengine.runner import load_checkpoint
from tool_utils import REPO, data_options

import mmgem  # noqa: F401
from mmgem.engine.runner import UnsafeCheckpointError, load_checkpoint_file

TINY_DINO = 'configs/gem/dino-plain-tiny_r18_mini-uodb.py'


class RunsACommand:
    """Unpickles to ``os.system(command)``."""

    def __init__(self, command: str) -> None:
        self.command = command

    def __reduce__(self):
        return (os.system, (self.command, ))


@pytest.fixture
def hostile(tmp_path):
    marker = tmp_path / 'MARKER'
    path = tmp_path / 'hostile.pth'
    torch.save(dict(state_dict={}, meta=dict(x=RunsACommand(f'touch {marker}'))), path)
    return path, marker


def test_mmengine_load_checkpoint_refuses_it(hostile):
    path, marker = hostile
    with pytest.raises(Exception, match='Weights only load failed'):
        load_checkpoint(torch.nn.Linear(2, 2), str(path), map_location='cpu')
    with pytest.raises(UnsafeCheckpointError,
                       match=f'refusing to load the checkpoint {path}: its pickle wants '
                       'the global posix.system'):
        load_checkpoint_file(str(path))
    assert not marker.exists()


def test_init_detector_refuses_it(hostile):
    from mmdet.apis import init_detector
    path, marker = hostile
    with pytest.raises(Exception, match='Weights only load failed'):
        init_detector(str(REPO / TINY_DINO), str(path), device='cpu')
    assert not marker.exists()


def test_train_resume_refuses_it(hostile, mini_uodb_root, tmp_path):
    path, marker = hostile
    env = {k: v for k, v in os.environ.items() if not k.startswith('PYTEST')}
    env['PYTHONPATH'] = os.pathsep.join(filter(None, [str(REPO), env.get('PYTHONPATH')]))
    env['OMP_NUM_THREADS'] = '1'
    proc = subprocess.run(
        [sys.executable, str(REPO / 'tools' / 'train.py'), str(REPO / TINY_DINO),
         '--resume', str(path), '--work-dir', str(tmp_path / 'work'),
         '--cfg-options', *data_options(mini_uodb_root)],
        capture_output=True, text=True, env=env, cwd=str(tmp_path), timeout=300)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0, out[-3000:]
    assert f'refusing to load the checkpoint {path}: its pickle wants the global ' \
           'posix.system' in out, out[-3000:]
    assert not marker.exists()
