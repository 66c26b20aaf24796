# Copyright (c) mmgem contributors. All rights reserved.
"""Atomic file writes: nothing is ever left half written.

Pure standard library, so that :mod:`mmgem.planner` (numpy + cvxpy only)
can use it too.
"""
import os
import os.path as osp
import tempfile
from typing import Union


def _umask() -> int:
    """The process's umask, read from ``/proc`` where it can be (setting it
    to read it back would briefly change it for every thread)."""
    try:
        with open('/proc/self/status') as f:
            for line in f:
                if line.startswith('Umask:'):
                    return int(line.split()[1], 8)
    except OSError:
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def atomic_write(path: str, data: Union[str, bytes]) -> str:
    """Write ``data`` to ``path`` through a temporary file and a rename.

    The temporary file lives in the destination folder (created if needed),
    so the final ``os.replace`` is atomic; on any error it is removed and the
    destination keeps its old content. The file gets the mode ``open()``
    would give a new file (``0o666`` minus the umask), not the private mode
    of a temporary file.

    Args:
        path (str): Destination file.
        data (str | bytes): Content; ``str`` is written as UTF-8 text.

    Returns:
        str: The absolute path written.
    """
    path = osp.abspath(path)
    folder = osp.dirname(path)
    os.makedirs(folder, exist_ok=True)
    mode, encoding = ('wb', None) if isinstance(data, bytes) else ('w', 'utf-8')
    fd, tmp = tempfile.mkstemp(prefix='.' + osp.basename(path) + '.', suffix='.tmp',
                               dir=folder)
    try:
        with os.fdopen(fd, mode, encoding=encoding) as f:
            f.write(data)
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException:
        if osp.exists(tmp):
            os.remove(tmp)
        raise
    return path
