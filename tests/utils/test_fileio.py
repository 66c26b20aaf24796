# Copyright (c) mmgem contributors. All rights reserved.
"""Files mmgem writes get the umask's mode; staged trees move in whole."""
import os
import stat
from contextlib import contextmanager
from pathlib import Path

import pytest

from mmgem.utils import StagingDir, atomic_write, current_umask


@contextmanager
def umask(mask: int):
    old = os.umask(mask)
    try:
        yield
    finally:
        os.umask(old)


def _mode(path: Path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


@pytest.mark.parametrize('mask', [0o022, 0o002, 0o077])
def test_atomic_write_uses_the_umask(tmp_path, mask):
    with umask(mask):
        assert current_umask() == mask
        atomic_write(str(tmp_path / 'a.txt'), 'text')
        atomic_write(str(tmp_path / 'b.bin'), b'\x00\x01')
        atomic_write(str(tmp_path / 'a.txt'), 'replaced')  # a rewrite too
    assert _mode(tmp_path / 'a.txt') == 0o666 & ~mask
    assert _mode(tmp_path / 'b.bin') == 0o666 & ~mask
    assert (tmp_path / 'a.txt').read_text() == 'replaced'
    assert sorted(p.name for p in tmp_path.iterdir()) == ['a.txt', 'b.bin']


def test_conversion_outputs_readable_by_others(tmp_path):
    """A whole native conversion under umask 022: every file 0644, every
    folder 0755 (the staging folder's 0700 must not leak into the output)."""
    import native_fixtures as nf

    from mmgem.datasets.converters import convert_native
    src = tmp_path / 'src'
    nf.write_dota(src)
    nf.write_deeplesion(src)
    out = tmp_path / 'out'
    with umask(0o022):
        convert_native(str(src), out=str(out), datasets=['dota', 'deeplesion'])
    files = [p for p in out.rglob('*') if p.is_file()]
    dirs = [p for p in out.rglob('*') if p.is_dir()] + [out]
    assert len(files) > 10
    assert {oct(_mode(p)) for p in files} == {oct(0o644)}
    assert {oct(_mode(p)) for p in dirs} == {oct(0o755)}


def test_staging_commits_whole_and_rolls_back(tmp_path):
    root = tmp_path / 'out'
    (root / 'keep').mkdir(parents=True)
    (root / 'keep' / 'other.json').write_text('theirs')
    with StagingDir(str(root)) as stage:
        atomic_write(stage.file('keep/new.json'), 'new')
        tree = stage.tree('imgs')
        atomic_write(os.path.join(tree, 'x.png'), b'x')
        assert not (root / 'keep' / 'new.json').exists()  # nothing before the commit
        stage.commit()
    assert (root / 'keep' / 'other.json').read_text() == 'theirs'  # siblings kept
    assert (root / 'keep' / 'new.json').read_text() == 'new'
    assert (root / 'imgs' / 'x.png').exists()
    assert sorted(p.name for p in root.iterdir()) == ['imgs', 'keep']
    # a second run replaces the tree as a whole
    with StagingDir(str(root)) as stage:
        atomic_write(os.path.join(stage.tree('imgs'), 'y.png'), b'y')
        stage.commit()
    assert sorted(p.name for p in (root / 'imgs').iterdir()) == ['.mmgem_staged', 'y.png']
    # an error before the commit leaves the root as it was
    with pytest.raises(RuntimeError):
        with StagingDir(str(root)) as stage:
            atomic_write(stage.file('keep/new.json'), 'newer')
            raise RuntimeError('a dataset failed')
    assert (root / 'keep' / 'new.json').read_text() == 'new'
    assert sorted(p.name for p in root.iterdir()) == ['imgs', 'keep']
    # a folder not written by a staging run is never replaced
    (root / 'theirs').mkdir()
    with StagingDir(str(root)) as stage:
        atomic_write(stage.file('keep/new.json'), 'newest')
        stage.tree('theirs')
        with pytest.raises(FileExistsError, match='theirs exists and was not written by mmgem'):
            stage.commit()
    assert (root / 'keep' / 'new.json').read_text() == 'new'


def test_atomic_write_fsyncs_the_data_before_the_rename(tmp_path, monkeypatch):
    """The temporary file's content is flushed to disk (``fsync`` of its
    descriptor) before ``os.replace`` gives it the final name, so a crash
    cannot leave an empty file under that name."""
    events = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd):
        target = os.readlink(f'/proc/self/fd/{fd}')
        events.append(('fsync', os.path.basename(target), os.path.getsize(target)
                       if os.path.isfile(target) else None))
        return real_fsync(fd)

    def replace(src, dst):
        events.append(('replace', os.path.basename(src), os.path.basename(dst)))
        return real_replace(src, dst)

    monkeypatch.setattr(os, 'fsync', fsync)
    monkeypatch.setattr(os, 'replace', replace)
    atomic_write(str(tmp_path / 'a.json'), '{"x": 1}')
    kinds = [e[0] for e in events]
    assert 'replace' in kinds and 'fsync' in kinds[:kinds.index('replace')], events
    synced = [e for e in events[:kinds.index('replace')] if e[0] == 'fsync']
    tmp_name = events[kinds.index('replace')][1]
    assert ('fsync', tmp_name, len('{"x": 1}')) in synced, events
