# Copyright (c) mmgem contributors. All rights reserved.
"""Loading checkpoints without running the code a pickle may carry.

``torch.load(weights_only=True)`` rebuilds only tensors, plain containers and
the globals it is told to trust. mmengine's checkpoints hold a few more: the
message hub's :class:`~mmengine.logging.HistoryBuffer` (with numpy arrays and
scalars, and references to its statistics methods) and numpy values in
``meta``. :data:`ALLOWED_GLOBALS` is exactly that list; anything else (e.g.
``posix.system``) is refused with an error that names the file and the
global. ``builtins.getattr``, which the pickle of a ``HistoryBuffer`` uses to
name its statistics methods (``HistoryBuffer.min`` ...), is replaced by
:func:`history_buffer_method`, which gives only those methods.

A file the user trusts can be loaded with ``weights_only=False`` only by
naming it (:class:`~mmgem.engine.runner.GEMRunner`'s
``unsafe_load_checkpoints``): its pickle can run any code.
"""
import importlib
import logging
import os
import os.path as osp
import pickle
import re
import warnings
import zipfile
from typing import Any, Iterable, List, Optional

import numpy as np
import torch
from mmengine.logging import HistoryBuffer, print_log
from mmengine.runner.checkpoint import _load_checkpoint

#: Names of the checkpoints auto-resume may fall back to.
CHECKPOINT_NAME = re.compile(r'^(iter|epoch)_(\d+)\.pth$')
#: Names of the statistics methods a pickled HistoryBuffer refers to.
HISTORY_BUFFER_METHODS = ('min', 'max', 'current', 'mean')


#: Words of torch's weights-only errors that refuse a global (not a broken file).
REFUSALS = ('global', 'allowlisted', 'reduce', 'not allowed')


class UnsafeCheckpointError(pickle.UnpicklingError):
    """A checkpoint needs a global that is not on the allow-list."""


def history_buffer_method(owner: Any, name: str) -> Any:
    """``getattr`` restricted to the statistics methods of HistoryBuffer.

    Stands in for ``builtins.getattr`` while unpickling a checkpoint.

    Args:
        owner (Any): What the pickle asks an attribute of.
        name (str): The attribute.

    Returns:
        Callable: ``HistoryBuffer.<name>``.

    Raises:
        pickle.UnpicklingError: For anything else.
    """
    allowed = set(HISTORY_BUFFER_METHODS) | set(HistoryBuffer._statistics_methods)
    if owner is HistoryBuffer and isinstance(name, str) and name in allowed:
        return getattr(HistoryBuffer, name)
    raise pickle.UnpicklingError(
        f'builtins.getattr({owner!r}, {name!r}) is not allowed: only '
        f'HistoryBuffer.{{{", ".join(sorted(allowed))}}}')


def _numpy_globals() -> List[Any]:
    """numpy's array, dtype and scalar reconstruction (both module names)."""
    found = [np.ndarray, np.dtype]
    for module in ('numpy._core.multiarray', 'numpy.core.multiarray'):
        try:
            with warnings.catch_warnings():  # numpy 2 deprecates numpy.core
                warnings.simplefilter('ignore')
                mod = importlib.import_module(module)
        except ImportError:
            continue
        found += [(mod._reconstruct, f'{module}._reconstruct'),
                  (mod.scalar, f'{module}.scalar')]
    # a dtype is rebuilt as an instance of its class (numpy.dtypes.Float64DType)
    dtypes = getattr(np, 'dtypes', None)
    if dtypes is not None:
        found += [getattr(dtypes, n) for n in sorted(dir(dtypes)) if n.endswith('DType')]
    return found


def allowed_globals() -> List[Any]:
    """The globals a checkpoint of mmengine or mmgem may contain.

    Returns:
        list: Entries for :func:`torch.serialization.safe_globals`.
    """
    return [HistoryBuffer, (history_buffer_method, 'builtins.getattr')
            ] + _numpy_globals()


def _unsafe_globals(filename: str) -> List[str]:
    """Globals of ``filename`` outside torch's and mmgem's allow-lists."""
    try:
        wanted = torch.serialization.get_unsafe_globals_in_checkpoint(filename)
    except Exception:  # not a zip checkpoint, or unreadable
        return []
    names = set()
    for entry in allowed_globals():
        obj, name = entry if isinstance(entry, tuple) else (
            entry, f'{entry.__module__}.{entry.__qualname__}')
        names.add(name)
    return [w for w in wanted if w not in names]


def is_local_path(filename: str) -> bool:
    """Whether mmengine would read ``filename`` from the local disk.

    Args:
        filename (str): A checkpoint path or URL.

    Returns:
        bool: No ``scheme://`` prefix.
    """
    return '://' not in str(filename)


def load_checkpoint_file(filename: str,
                         map_location: Optional[Any] = None,
                         unsafe_files: Iterable[str] = ()) -> Any:
    """Load a checkpoint without unpickling arbitrary objects.

    Local files are read with ``torch.load(weights_only=True)`` under
    :func:`torch.serialization.safe_globals` with :func:`allowed_globals`;
    other sources (``http://``, ``open-mmlab://``, ...) go through
    mmengine's loader unchanged.

    Args:
        filename (str): The checkpoint (``~`` is expanded).
        map_location (str | callable, optional): As for :func:`torch.load`.
        unsafe_files (Iterable[str]): Files the user trusts: loaded with
            ``weights_only=False`` (their pickle can run any code), with a
            warning.

    Returns:
        dict: The checkpoint.

    Raises:
        FileNotFoundError: The file does not exist.
        UnsafeCheckpointError: The file wants a global that is not allowed;
            the message names the file and the global.
        RuntimeError: The file cannot be read as a checkpoint (e.g. cut
            short by a kill); the message names the file.
    """
    if not is_local_path(filename):
        return _load_checkpoint(filename, map_location=map_location)
    filename = osp.expanduser(str(filename))
    if not osp.isfile(filename):
        raise FileNotFoundError(f'{filename} can not be found.')
    if osp.realpath(filename) in {osp.realpath(osp.expanduser(f)) for f in unsafe_files}:
        print_log(
            f'loading {filename} with weights_only=False because it is listed in '
            'unsafe_load_checkpoints: its pickle can run arbitrary code',
            logger='current', level=logging.WARNING)
        return torch.load(filename, map_location=map_location, weights_only=False)
    try:
        with torch.serialization.safe_globals(allowed_globals()):
            return torch.load(filename, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as err:
        unsafe = _unsafe_globals(filename)
        refusal = _refusal(err)
        if unsafe or any(word in refusal for word in REFUSALS):
            wanted = ', '.join(f'the global {g}' for g in unsafe) or refusal
            raise UnsafeCheckpointError(
                f'refusing to load the checkpoint {filename}: its pickle wants '
                f'{wanted}, which is not on mmgem\'s allow-list of what mmengine '
                'and mmgem checkpoints contain. Only if you trust this file, '
                f'list it in unsafe_load_checkpoints=[{filename!r}] (the config '
                'of GEMRunner): its pickle can then run arbitrary code.') from err
        problem = checkpoint_problem(filename) or 'it cannot be unpickled'
        raise RuntimeError(_unreadable(filename, problem, err)) from err
    except Exception as err:
        problem = checkpoint_problem(filename) or 'it cannot be unpickled'
        raise RuntimeError(_unreadable(filename, problem, err)) from err


def _refusal(err: Exception) -> str:
    """The line of torch's weights-only error that says what was refused."""
    lines = [ln.strip() for ln in str(err).splitlines() if ln.strip()]
    for i, line in enumerate(lines):
        if line.startswith('WeightsUnpickler error'):
            return ' '.join(lines[i:i + 2])
    return lines[0] if lines else type(err).__name__


def _unreadable(filename: str, problem: str, err: Exception) -> str:
    return (f'cannot load the checkpoint {filename}: {problem} '
            f'({type(err).__name__}: {err}). It may have been cut short by a '
            'run killed while saving; resume from an earlier checkpoint '
            '(or use --resume without a file, which skips bad checkpoints)')


def checkpoint_problem(path: str) -> Optional[str]:
    """Why ``path`` is not a complete checkpoint, or None if it is.

    A zip checkpoint (what ``torch.save`` writes) must have its central
    directory, written last, and every member must lie inside the file; a
    file cut short by a kill has neither. A legacy (pre-zip) file is loaded
    with ``weights_only=True`` to check; nothing is ever unpickled unsafely.

    Args:
        path (str): A checkpoint file.

    Returns:
        str, optional: A short reason, or None for a complete file.
    """
    if not osp.isfile(path):
        return 'the file does not exist'
    size = osp.getsize(path)
    if size == 0:
        return 'the file is empty'
    if zipfile.is_zipfile(path):
        try:
            with zipfile.ZipFile(path) as archive:
                for info in archive.infolist():
                    if info.header_offset + info.compress_size > size:
                        return (f'the file is truncated ({size} bytes, '
                                f'{info.filename} needs more)')
        except (zipfile.BadZipFile, OSError) as err:
            return f'the file is not a valid zip archive ({err})'
        return None
    with open(path, 'rb') as f:
        head = f.read(4)
    if head.startswith(b'PK'):
        return (f'the file is truncated ({size} bytes, the zip archive has no '
                'central directory)')
    try:
        with torch.serialization.safe_globals(allowed_globals()):
            torch.load(path, map_location='cpu', weights_only=True)
    except Exception as err:
        return f'it cannot be loaded ({type(err).__name__}: {err})'
    return None


def _candidates(folder: str) -> List[str]:
    """``iter_N.pth`` / ``epoch_N.pth`` in ``folder``, newest first."""
    if not osp.isdir(folder):
        return []
    found = []
    for name in os.listdir(folder):
        match = CHECKPOINT_NAME.match(name)
        if match:
            path = osp.join(folder, name)
            found.append((osp.getmtime(path), int(match.group(2)), path))
    return [path for _, _, path in sorted(found, reverse=True)]


def find_latest_complete_checkpoint(work_dir: str) -> Optional[str]:
    """The checkpoint auto-resume continues from, skipping bad files.

    Reads ``work_dir/last_checkpoint`` as mmengine's
    ``find_latest_checkpoint`` does. If the file it names is missing,
    truncated or unreadable, the newest complete ``iter_*.pth`` or
    ``epoch_*.pth`` in the same folder (or in ``work_dir``) is returned
    instead, with a warning naming both.

    Args:
        work_dir (str): The work dir.

    Returns:
        str, optional: The checkpoint, or None (no ``last_checkpoint``, or
        no complete checkpoint: training starts from scratch).
    """
    save_file = osp.join(work_dir, 'last_checkpoint')
    if not osp.exists(save_file):
        print_log('Did not find last_checkpoint to be resumed.', logger='current')
        return None
    with open(save_file) as f:
        last = f.read().strip()
    problem = checkpoint_problem(last) if last else 'last_checkpoint is empty'
    if problem is None:
        return last
    folders = [osp.dirname(last)] if last else []
    folders.append(work_dir)
    seen = set()
    for folder in folders:
        for candidate in _candidates(folder):
            if candidate in seen or candidate == last:
                continue
            seen.add(candidate)
            reason = checkpoint_problem(candidate)
            if reason is None:
                print_log(
                    f'auto-resume: the last checkpoint {last or save_file} '
                    f'is not usable ({problem}); resuming from the previous '
                    f'complete checkpoint {candidate} instead.',
                    logger='current', level=logging.WARNING)
                return candidate
            print_log(f'auto-resume: skipping {candidate} ({reason})',
                      logger='current', level=logging.WARNING)
    print_log(
        f'auto-resume: the last checkpoint {last or save_file} is not usable '
        f'({problem}) and no earlier complete checkpoint was found in '
        f'{sorted(set(folders))}; training starts from scratch.',
        logger='current', level=logging.WARNING)
    return None
