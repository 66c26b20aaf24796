# Copyright (c) mmgem contributors. All rights reserved.
"""mim after the README's install (``make demo`` / ``make test``: ``pip install -e``).

``mim search / run / train mmgem`` against this Python's editable install, and
the same install path (``pip install -e`` then ``tools/misc/link_editable_for_mim.py``,
as ``tools/install.sh`` does) in a fresh virtualenv, where it can be checked
before and after the link. ``mim test mmdet`` with a config path is the way
that needs no mmgem install at all.
"""
import importlib.util
import os
import shutil
import subprocess
from pathlib import Path

import pytest
from tool_utils import check_mim_search_list_run, copy_checkout, system_site_venv

REPO = Path(__file__).resolve().parents[2]
CONFIG = 'configs/gem/gem-dino-tiny_r18_mini-uodb.py'
LINK = 'tools/misc/link_editable_for_mim.py'

needs_mim = pytest.mark.skipif(
    importlib.util.find_spec('mim') is None,
    reason='openmim is not installed: `make mim` (or `make test`) installs it')


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


@needs_mim
def test_editable_install_is_found_by_mim_once_linked(tmp_path):
    """``pip install -e`` alone leaves mim without ``site-packages/mmgem/.mim``;
    the link script refuses a folder it did not make, then links, and
    ``pip uninstall`` removes the link (one virtualenv: each costs seconds)."""
    src = copy_checkout(tmp_path / 'src')
    run = system_site_venv(tmp_path / 'venv', cwd=tmp_path)
    run('-m', 'pip', 'install', '--disable-pip-version-check', '-q', '--no-deps',
        '--no-build-isolation', '--no-index', '-e', str(src))
    assert 'model-index.yml' in run('-m', 'mim', 'search', 'mmgem', ok=False)

    # something other than a link at site-packages/mmgem is left alone
    site = Path(run('-c', 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
                .split()[-1])
    (site / 'mmgem').mkdir()
    out = run(str(src / LINK), ok=False)
    assert 'is not a link' in out and str(site / 'mmgem') in out
    assert (site / 'mmgem').is_dir() and not (site / 'mmgem').is_symlink()
    (site / 'mmgem').rmdir()

    assert 'linked' in run(str(src / LINK))
    assert 'already linked' in run(str(src / LINK))  # idempotent, as install.sh reruns it
    where = run('-c', 'import mmgem, os; print(os.path.dirname(mmgem.__file__))').split()[-1]
    assert Path(where).is_symlink() and Path(where).resolve() == (src / 'mmgem').resolve()
    check_mim_search_list_run(run, src, tmp_path / 'plan')

    run('-m', 'pip', 'uninstall', '-y', '-q', 'mmgem')
    assert not os.path.lexists(where)
    assert (src / 'mmgem' / '__init__.py').is_file()  # the link went, not the checkout


def test_mim_search_and_run_find_the_installed_mmgem(tmp_path):
    """The README's install (this Python's editable install): search, list, run."""
    out = _mim('search', 'mmgem', cwd=tmp_path)
    assert 'config id: gem-dino-4scale_r50_8xb2-36e_uodb' in out
    out = _mim('run', 'mmgem', 'gem_plan', '--stats',
               str(REPO / 'configs/_base_/datasets/uodb_stats.json'), '--experts', '8',
               '--out-dir', str(tmp_path / 'plan'), cwd=tmp_path)
    assert (tmp_path / 'plan' / 'gem_plan.json').is_file(), out


def test_mim_train_then_test_prints_the_per_dataset_table(mini_uodb_root, tmp_path):
    """``mim train mmgem <config name>`` (found through ``.mim/configs``), then
    ``mim test mmdet <config path>``."""
    root = f'{mini_uodb_root}/'
    data = [f'{loader}.dataset.data_root={root}'
            for loader in ('train_dataloader', 'val_dataloader', 'test_dataloader')]
    work_dir = tmp_path / 'work'
    out = _mim('train', 'mmgem', Path(CONFIG).name, '--gpus', '0', '--work-dir', str(work_dir),
               '--cfg-options', 'train_cfg.max_iters=2', 'train_cfg.val_interval=100',
               'default_hooks.checkpoint.interval=2', 'param_scheduler=[]', *data, cwd=tmp_path)
    assert '.mim/tools/train.py' in out  # mmgem's own tools, from the install
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
