# Copyright (c) mmgem contributors. All rights reserved.
"""Atomic file writes: nothing is ever left half written.

Pure standard library, so that :mod:`mmgem.planner` (numpy + cvxpy only)
can use it too.

Files and folders get the mode an ordinary ``open()`` / ``mkdir`` would give
them (``0o666 & ~umask`` and ``0o777 & ~umask``): :func:`tempfile.mkstemp`
and :func:`tempfile.mkdtemp` create ``0o600`` / ``0o700`` entries, which
would make everything mmgem writes unreadable for other users and container
uids.
"""
import os
import os.path as osp
import shutil
import tempfile
from typing import List, Optional, Tuple, Union


def current_umask() -> int:
    """The process's umask, without changing it.

    Reads ``/proc/self/status`` where it exists (thread-safe); otherwise sets
    and restores the umask with :func:`os.umask`.

    Returns:
        int: The umask, e.g. ``0o022``.
    """
    try:
        with open('/proc/self/status', encoding='ascii') as f:
            for line in f:
                if line.startswith('Umask:'):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def file_mode() -> int:
    """int: The mode ``open()`` gives a new file: ``0o666 & ~umask``."""
    return 0o666 & ~current_umask()


def dir_mode() -> int:
    """int: The mode ``os.mkdir`` gives a new folder: ``0o777 & ~umask``."""
    return 0o777 & ~current_umask()


def atomic_write(path: str, data: Union[str, bytes]) -> str:
    """Write ``data`` to ``path`` through a temporary file and a rename.

    The temporary file lives in the destination folder (created if needed),
    so the final ``os.replace`` is atomic; on any error it is removed and the
    destination keeps its old content. The file gets the umask's mode
    (``0o666 & ~umask``), as if written with ``open()``.

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
        os.chmod(tmp, file_mode())
        with os.fdopen(fd, mode, encoding=encoding) as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if osp.exists(tmp):
            os.remove(tmp)
        raise
    return path


class StagingDir:
    """Write a tree of outputs into a temporary folder, then move it into
    place all at once.

    The staging folder is created inside ``root`` (so the final renames stay
    on one file system) and has the umask's mode. Writers put their outputs
    under :attr:`path` with the same relative paths they will have under
    ``root``, and register each output with :meth:`add_file` (one file,
    replaced on commit; its siblings in ``root`` are kept) or
    :meth:`add_tree` (a folder that replaces the folder of the same name in
    ``root`` as a whole). :meth:`commit` moves every registered output into
    place; if any move fails, the moves done so far are undone. Without a
    commit (an error, or :meth:`discard`), ``root`` is left untouched.

    A folder registered with :meth:`add_tree` gets a marker file
    :attr:`MARKER`; committing refuses to replace an existing folder of
    ``root`` that has no marker (it was not written by a staging run), with
    an error naming it.

    Args:
        root (str): The final output root (created if needed).
        prefix (str): Name prefix of the staging folder.

    Examples:
        >>> with StagingDir('data/uodb') as stage:
        ...     atomic_write(stage.file('voc/annotations/test.json'), '{}')
        ...     stage.commit()
    """

    MARKER = '.mmgem_staged'

    def __init__(self, root: str, prefix: str = '.mmgem-staging-') -> None:
        self.root = osp.abspath(root)
        os.makedirs(self.root, exist_ok=True)
        self.path = tempfile.mkdtemp(prefix=prefix, dir=self.root)
        os.chmod(self.path, dir_mode())
        self._files: List[str] = []
        self._trees: List[str] = []
        self.committed = False

    def file(self, relpath: str) -> str:
        """Register one output file and return where to write it.

        Args:
            relpath (str): Its path relative to ``root``.

        Returns:
            str: Its path in the staging folder (the folder is created).
        """
        relpath = osp.normpath(relpath)
        if relpath not in self._files:
            self._files.append(relpath)
        staged = osp.join(self.path, relpath)
        self.makedirs(osp.dirname(staged))
        return staged

    def tree(self, relpath: str) -> str:
        """Register an output folder (replaced as a whole on commit) and
        return where to write it.

        Args:
            relpath (str): Its path relative to ``root``.

        Returns:
            str: Its path in the staging folder (created, with the marker).
        """
        relpath = osp.normpath(relpath)
        staged = osp.join(self.path, relpath)
        if relpath not in self._trees:
            self._trees.append(relpath)
            self.makedirs(staged)
            atomic_write(osp.join(staged, self.MARKER), 'written by mmgem\n')
        return staged

    def makedirs(self, folder: str) -> None:
        """``os.makedirs`` with the umask's mode for every new folder.

        Args:
            folder (str): The folder.
        """
        os.makedirs(folder, exist_ok=True)

    def _check_replaceable(self, rel: str) -> None:
        dest = osp.join(self.root, rel)
        if osp.lexists(dest) and not osp.isfile(osp.join(dest, self.MARKER)):
            raise FileExistsError(
                f'{dest} exists and was not written by mmgem (no {self.MARKER} in it); '
                'move it away or write to another output folder')

    def commit(self) -> List[str]:
        """Move every registered output into ``root``.

        Returns:
            list[str]: The final paths, files first, then folders.

        Raises:
            FileExistsError: A registered folder would replace a folder of
                ``root`` that was not written by a staging run (nothing is
                moved).
        """
        for rel in self._trees:
            self._check_replaceable(rel)
        done: List[Tuple[str, Optional[str]]] = []  # (dest, backup of old)
        old_suffix = f'.mmgem-old-{os.getpid()}'
        try:
            for rel in self._files + self._trees:
                src, dest = osp.join(self.path, rel), osp.join(self.root, rel)
                self.makedirs(osp.dirname(dest))
                backup = None
                if rel in self._trees and osp.lexists(dest):
                    backup = dest + old_suffix
                    os.rename(dest, backup)
                elif osp.isfile(dest):
                    backup = dest + old_suffix
                    os.replace(dest, backup)
                try:
                    os.rename(src, dest)
                except BaseException:
                    if backup is not None:
                        os.rename(backup, dest)
                    raise
                done.append((dest, backup))
        except BaseException:
            for dest, backup in reversed(done):
                rel = osp.relpath(dest, self.root)
                os.rename(dest, osp.join(self.path, rel))
                if backup is not None:
                    os.rename(backup, dest)
            raise
        for _, backup in done:
            if backup is None:
                continue
            if osp.isdir(backup) and not osp.islink(backup):
                shutil.rmtree(backup)
            else:
                os.remove(backup)
        self.committed = True
        self.discard()
        return [osp.join(self.root, rel) for rel in self._files + self._trees]

    def discard(self) -> None:
        """Remove the staging folder and everything not committed."""
        if osp.isdir(self.path):
            shutil.rmtree(self.path)

    def __enter__(self) -> 'StagingDir':
        return self

    def __exit__(self, *exc) -> None:
        self.discard()

