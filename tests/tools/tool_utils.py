# Copyright (c) mmgem contributors. All rights reserved.
"""Helpers of the mmdet-tool tests: run a tool, point a config at mini-UODB."""
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import List, Sequence

from mmengine.config import Config

REPO = Path(__file__).resolve().parents[2]
GEM_CONFIG = 'configs/gem/gem-dino-tiny_r18_mini-uodb.py'
LOADERS = ('train_dataloader', 'val_dataloader', 'test_dataloader')


def data_options(root: Path) -> List[str]:
    """``--cfg-options`` that point a mini-UODB config at ``root``."""
    return [f'{loader}.dataset.data_root={root}/' for loader in LOADERS]


def split_images(root: Path, split: str) -> dict:
    """File names of each domain's split, read from its COCO JSON."""
    out = {}
    for ann in sorted(root.glob(f'*/annotations/{split}.json')):
        images = json.loads(ann.read_text())['images']
        out[ann.parent.parent.name] = sorted(Path(im['file_name']).name for im in images)
    return out


def run_tool(args: List[str], cwd: Path, timeout: int = 600,
             extra_path: Sequence[Path] = ()) -> str:
    """Run a script with this checkout (and ``extra_path``) first on the path.

    Fails the test with the script's output when it exits non-zero.
    """
    env = {k: v for k, v in os.environ.items() if not k.startswith('PYTEST')}
    paths = [str(REPO), *map(str, extra_path), env.get('PYTHONPATH')]
    env['PYTHONPATH'] = os.pathsep.join(filter(None, paths))
    env.setdefault('OMP_NUM_THREADS', '2')
    env['MPLBACKEND'] = 'Agg'
    proc = subprocess.run([sys.executable, *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=timeout)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, f'{" ".join(args)} failed:\n{out[-4000:]}'
    return out


def tiny_gem_config(root: Path) -> Config:
    """The tiny GEM config on the mini-UODB at ``root``."""
    cfg = Config.fromfile(str(REPO / GEM_CONFIG))
    for loader in LOADERS:
        cfg[loader].dataset.data_root = f'{root}/'
    return cfg
