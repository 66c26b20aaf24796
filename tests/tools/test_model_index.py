# Copyright (c) mmgem contributors. All rights reserved.
"""Model-zoo metadata for mim, and a regular (non-editable) install that mim can read."""
import importlib.util
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
CONFIGS = sorted(p.relative_to(REPO).as_posix() for p in (REPO / 'configs/gem').rglob('*.py'))


def _metafiles():
    index = yaml.safe_load((REPO / 'model-index.yml').read_text())
    return {path: yaml.safe_load((REPO / path).read_text()) for path in index['Import']}


def test_model_index_lists_every_config_once():
    models, collections = [], set()
    for path, meta in _metafiles().items():
        collections |= {c['Name'] for c in meta['Collections']}
        for c in meta['Collections']:
            assert (REPO / c['README']).is_file(), (path, c['README'])
        models += meta['Models']
    assert sorted(m['Config'] for m in models) == CONFIGS
    assert sorted(m['Name'] for m in models) == sorted(Path(c).stem for c in CONFIGS)
    assert {m['In Collection'] for m in models} == collections
    for m in models:  # no result or weight is claimed without a run
        assert 'Results' not in m and 'Weights' not in m, m['Name']


def test_cited_config_names_exist():
    """Every config name the docs, tools and configs cite is a real file."""
    names = {Path(c).name for c in CONFIGS}
    texts = [REPO / 'README.md', REPO / 'configs/gem/README.md', REPO / 'Makefile',
             *REPO.glob('tools/**/*.py'), *REPO.glob('tools/*.sh'),
             *REPO.glob('configs/**/*.py'), *REPO.glob('mmgem/**/*.py')]
    config_name = re.compile(r'[a-z0-9-]*dino[a-z0-9-]*(?:_[a-z0-9-]+){2,}\.py')
    cited = set()
    for path in texts:
        for name in config_name.findall(path.read_text()):
            cited.add((path.relative_to(REPO).as_posix(), name))
    missing = sorted((where, name) for where, name in cited
                     if name not in names and not name.startswith('dino-4scale_r50_8xb2-12e'))
    assert not missing, missing
    assert len(cited) > 20


def _copy_checkout(dst: Path) -> Path:
    """This checkout's files, without build outputs (pip writes into the source)."""
    ignore = shutil.ignore_patterns('.git', '.mim', 'build', '*.egg-info', 'work_dirs', 'data',
                                    '__pycache__', '.pytest_cache', '.ruff_cache')
    return Path(shutil.copytree(REPO, dst, ignore=ignore, symlinks=True))


@pytest.mark.skipif(importlib.util.find_spec('mim') is None,
                    reason='openmim is not installed: `make mim` (or `make test`) installs it')
def test_regular_install_is_searchable_and_runnable_by_mim(tmp_path):
    """``pip install .`` into a fresh virtualenv, then mim search / list / run."""
    src = _copy_checkout(tmp_path / 'src')
    venv = tmp_path / 'venv'
    # the system's site-packages provide torch/mmcv/mmdet (a build takes minutes)
    subprocess.run([sys.executable, '-m', 'venv', '--system-site-packages', str(venv)],
                   check=True)
    python = str(venv / 'bin' / 'python')
    env = {k: v for k, v in os.environ.items() if not k.startswith('PYTEST')}
    env.pop('PYTHONPATH', None)  # mmgem must come from the virtualenv's install

    def run(*args, cwd=tmp_path):
        proc = subprocess.run([python, *args], cwd=cwd, env=env, capture_output=True, text=True,
                              timeout=600)
        out = proc.stdout + proc.stderr
        assert proc.returncode == 0, f'{" ".join(args)}:\n{out[-4000:]}'
        return out

    run('-m', 'pip', 'install', '--disable-pip-version-check', '-q', '--no-deps',
        '--no-build-isolation', '--no-index', str(src))
    where = run('-c', 'import mmgem, os; print(os.path.dirname(mmgem.__file__))').split()[-1]
    assert Path(where).resolve().is_relative_to(venv.resolve()), where
    assert (Path(where) / '.mim' / 'model-index.yml').is_file()

    out = run('-m', 'mim', 'search', 'mmgem')
    listed = set(re.findall(r'^config id: (\S+)$', out, re.M))
    assert listed == {Path(c).stem for c in CONFIGS}
    assert re.search(r'^mmgem\s+\d', run('-m', 'mim', 'list'), re.M)

    out = run('-m', 'mim', 'run', 'mmgem', 'gem_plan', '--stats',
              str(src / 'configs/_base_/datasets/uodb_stats.json'), '--experts', '8',
              '--out-dir', str(tmp_path / 'plan'))
    assert (tmp_path / 'plan' / 'gem_plan.json').is_file(), out
