# Copyright (c) mmgem contributors. All rights reserved.
"""``import mmgem`` changes nothing outside mmgem.

A fresh interpreter imports mmengine, mmdet, mmcv and torch (with the
submodules mmdet's tools use), records the identity of every attribute of
every module of theirs that is loaded, and of every attribute of their
classes (one level into class-level dicts, e.g. mmengine's checkpoint
loader schemes), then imports mmgem and compares: every recorded object
must be the very same object.
"""
import os
import subprocess
import sys
import textwrap
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

SNAPSHOT = textwrap.dedent('''
    import sys
    import torch, mmengine, mmdet, mmcv.ops  # noqa: F401
    import mmengine.runner, mmengine.hooks, mmengine.fileio  # noqa: F401
    import mmdet.apis, mmdet.models.losses.focal_loss  # noqa: F401
    import mmcv.ops.multi_scale_deform_attn  # noqa: F401

    PACKAGES = ('torch', 'mmengine', 'mmdet', 'mmcv')


    def ours(name):
        return name.split('.')[0] in PACKAGES


    def snapshot():
        ids = {}
        for name, module in list(sys.modules.items()):
            if not ours(name) or module is None:
                continue
            try:
                items = list(vars(module).items())
            except TypeError:
                continue
            for attr, value in items:
                if isinstance(value, type(sys)):
                    continue  # submodules are checked themselves
                ids[f'{name}.{attr}'] = id(value)
                if isinstance(value, type) and ours(getattr(value, '__module__', '') or ''):
                    for key, member in list(vars(value).items()):
                        ids[f'{name}.{attr}.{key}'] = id(member)
                        if isinstance(member, dict) and key.startswith('_'):
                            for k, v in list(member.items()):
                                ids[f'{name}.{attr}.{key}[{k!r}]'] = id(v)
        return ids


    before = snapshot()
    keep = {k: None for k in before}  # the objects stay alive: ids stay unique
    import mmgem  # noqa: F401,E402
    import mmgem.engine, mmgem.apis  # noqa: F401,E402
    after = snapshot()
    changed = sorted(k for k in before if k in after and after[k] != before[k])
    gone = sorted(k for k in before if k not in after)
    print('CHECKED', len(before))
    print('CHANGED', changed)
    print('GONE', gone)
''')


def test_import_mmgem_changes_nothing_outside_mmgem(tmp_path):
    script = tmp_path / 'snapshot.py'
    script.write_text(SNAPSHOT)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        filter(None, [str(REPO), os.environ.get('PYTHONPATH')])))
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                         env=env, cwd=str(tmp_path), timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    lines = dict(line.split(' ', 1) for line in out.stdout.splitlines() if ' ' in line)
    assert int(lines['CHECKED']) > 10000
    assert lines['CHANGED'] == '[]', lines['CHANGED'][:3000]
    assert lines['GONE'] == '[]', lines['GONE'][:3000]
