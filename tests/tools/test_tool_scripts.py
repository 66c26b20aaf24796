# Copyright (c) mmgem contributors. All rights reserved.
"""``tools/`` is one package: importing mmgem loads none of it, its modules
import each other as ``tools.*`` (no ``sys.path`` edits of their own), and its
scripts still run by path from any folder."""
import os
import subprocess
import sys
from pathlib import Path

from mmgem.utils.tool_scripts import tools_root

#: what moved from mmgem to tools/ (issue 23)
MOVED = ('scenes', 'cell_store', 'seed_statistics', 'identifiability', 'utils.benchmark')


def test_importing_mmgem_loads_no_benchmark_or_generator_code():
    code = ('import mmgem, sys; print(sorted(m for m in sys.modules '
            f'if any(k in m for k in {MOVED!r})))')
    out = subprocess.run([sys.executable, '-c', code], check=True, capture_output=True,
                         text=True, cwd=Path(__file__).resolve().parents[2])
    assert out.stdout.strip().splitlines()[-1] == '[]'


def test_no_tool_edits_sys_path(repo_root):
    offenders = [str(p.relative_to(repo_root)) for p in (repo_root / 'tools').rglob('*.py')
                 if 'sys.path.insert' in p.read_text(encoding='utf-8')]
    assert offenders == []


def test_tools_root_is_the_folder_above_the_package(repo_root):
    assert tools_root(str(repo_root / 'tools' / 'benchmark' / 'mini_uodb_table.py')) == repo_root
    assert tools_root(str(repo_root / 'tools' / 'misc' / 'mini_uodb' / 'v2_scenes.py')) == \
        repo_root


def test_a_script_runs_by_path_from_another_folder(repo_root, tmp_path):
    """Only mmgem is importable (a link in a folder of its own), the
    working directory is elsewhere: ``tools`` comes from the bootstrap
    (the generator: the demo and the README run it by path)."""
    site = tmp_path / 'site'
    site.mkdir()
    (site / 'mmgem').symlink_to(repo_root / 'mmgem', target_is_directory=True)
    env = dict(os.environ, PYTHONPATH=str(site))
    script = str(repo_root / 'tools' / 'misc' / 'make_mini_uodb.py')
    out = subprocess.run([sys.executable, script, '--help'], cwd=tmp_path, env=env,
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.startswith('usage: ')
