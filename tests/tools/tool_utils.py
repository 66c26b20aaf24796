# Copyright (c) mmgem contributors. All rights reserved.
"""Helpers of the mmdet-tool tests: run a tool, point a config at mini-UODB."""
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Callable, List, Sequence

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
    """The tiny GEM config on the mini-UODB at ``root``.

    Its text is not yapf-formatted (``format_python_code=False``): a dump is
    still a valid config file, seconds sooner. ``Config.fromfile`` of
    MMEngine 0.10.7 drops its ``format_python_code``, hence the copy.
    """
    cfg = Config.fromfile(str(REPO / GEM_CONFIG))
    cfg = Config(cfg.to_dict(), filename=cfg.filename, format_python_code=False)
    for loader in LOADERS:
        cfg[loader].dataset.data_root = f'{root}/'
    return cfg


def copy_checkout(dst: Path) -> Path:
    """This checkout's files, without build outputs (pip writes into the source)."""
    ignore = shutil.ignore_patterns('.git', '.mim', 'build', '*.egg-info', 'work_dirs', 'data',
                                    '__pycache__', '.pytest_cache', '.ruff_cache')
    return Path(shutil.copytree(REPO, dst, ignore=ignore, symlinks=True))


def system_site_venv(venv: Path, cwd: Path) -> Callable[..., str]:
    """A fresh virtualenv that also sees this Python's packages.

    The system's site-packages provide torch, mmcv, mmdet and openmim (a
    build takes minutes); mmgem is what the test installs into the
    virtualenv, whose site-packages come first.

    Args:
        venv (Path): Where to create it.
        cwd (Path): The working directory of the commands.

    Returns:
        Callable: ``run(*args, ok=True)`` runs the virtualenv's ``python``
        with ``args`` (no ``PYTHONPATH``: mmgem comes from the install) and
        returns stdout and stderr; it fails the test when the exit status is
        not zero (``ok=True``) or is zero (``ok=False``).
    """
    subprocess.run([sys.executable, '-m', 'venv', '--system-site-packages', str(venv)],
                   check=True)
    python = str(venv / 'bin' / 'python')
    env = {k: v for k, v in os.environ.items() if not k.startswith('PYTEST')}
    env.pop('PYTHONPATH', None)

    def run(*args: str, ok: bool = True) -> str:
        proc = subprocess.run([python, *args], cwd=cwd, env=env, capture_output=True,
                              text=True, timeout=600)
        out = proc.stdout + proc.stderr
        assert (proc.returncode == 0) == ok, f'{" ".join(args)}: {proc.returncode}\n{out[-4000:]}'
        return out

    return run


def check_mim_search_list_run(run: Callable[..., str], src: Path, out_dir: Path) -> None:
    """``mim search / list / run mmgem`` through ``run`` (see :func:`system_site_venv`).

    Args:
        run (Callable): Runs the installed Python with arguments.
        src (Path): The checkout mmgem was installed from.
        out_dir (Path): Where ``mim run mmgem gem_plan`` writes its plan.
    """
    out = run('-m', 'mim', 'search', 'mmgem')
    listed = set(re.findall(r'^config id: (\S+)$', out, re.M))
    assert listed == {p.stem for p in (src / 'configs/gem').rglob('*.py')}
    assert re.search(r'^mmgem\s+\d', run('-m', 'mim', 'list'), re.M)
    out = run('-m', 'mim', 'run', 'mmgem', 'gem_plan', '--stats',
              str(src / 'configs/_base_/datasets/uodb_stats.json'), '--experts', '8',
              '--out-dir', str(out_dir))
    assert (out_dir / 'gem_plan.json').is_file(), out
