# Copyright (c) mmgem contributors. All rights reserved.
"""Model-zoo metadata for mim, and a regular (non-editable) install that mim can read."""
import importlib.util
import re
from pathlib import Path

import pytest
import yaml
from tool_utils import check_mim_search_list_run, copy_checkout, system_site_venv

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
    texts = [REPO / 'README.md', *REPO.glob('**/README.md'), REPO / 'Makefile',
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


def test_cited_test_files_exist():
    """Every ``tests/...py`` file that code, configs and docs cite is a real file."""
    texts = [REPO / 'README.md', *REPO.glob('**/README.md'), *REPO.glob('mmgem/**/*.py'),
             *REPO.glob('tools/**/*.py'), *REPO.glob('tools/*.sh'), *REPO.glob('configs/**/*.py')]
    cited = {(path.relative_to(REPO).as_posix(), ref) for path in texts
             for ref in re.findall(r'\btests/[\w/]+\.py\b', path.read_text())}
    missing = sorted((where, ref) for where, ref in cited if not (REPO / ref).is_file())
    assert not missing, missing
    assert cited


@pytest.mark.skipif(importlib.util.find_spec('mim') is None,
                    reason='openmim is not installed: `make mim` (or `make test`) installs it')
def test_regular_install_is_searchable_and_runnable_by_mim(tmp_path):
    """``pip install .`` into a fresh virtualenv, then mim search / list / run."""
    src = copy_checkout(tmp_path / 'src')
    run = system_site_venv(tmp_path / 'venv', cwd=tmp_path)
    run('-m', 'pip', 'install', '--disable-pip-version-check', '-q', '--no-deps',
        '--no-build-isolation', '--no-index', str(src))
    where = run('-c', 'import mmgem, os; print(os.path.dirname(mmgem.__file__))').split()[-1]
    assert Path(where).resolve().is_relative_to((tmp_path / 'venv').resolve()), where
    assert (Path(where) / '.mim' / 'model-index.yml').is_file()

    check_mim_search_list_run(run, src, tmp_path / 'plan')
