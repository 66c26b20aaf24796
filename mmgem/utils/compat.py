# Copyright (c) mmgem contributors. All rights reserved.
"""Compatibility fixes applied when :mod:`mmgem` is imported.

mmengine 0.10.7 loads local checkpoints with ``torch.load(filename,
map_location=...)``. Since torch 2.6, ``torch.load`` defaults to
``weights_only=True``, which refuses the plain Python objects mmengine itself
puts into every checkpoint (``meta`` with the config text, the message hub,
numpy scalars in the log history): ``Runner.resume`` and ``load_from`` fail
with "Weights only load failed".

The fix is deliberately narrow: it replaces only mmengine's loader for local
file paths (the ``''`` scheme of :class:`mmengine.runner.CheckpointLoader`)
with one that passes ``weights_only=False``. Checkpoints fetched over HTTP or
from other backends keep torch's safe default. Only load local checkpoints
you trust: ``weights_only=False`` unpickles arbitrary objects, exactly as
torch < 2.6 and mmengine always did.
"""
import os.path as osp
from typing import Any, Callable, Optional

import torch
from mmengine.runner.checkpoint import CheckpointLoader
from mmengine.utils import digit_version

_LOCAL_SCHEME = ''


def load_local_checkpoint(filename: str,
                          map_location: Optional[Any] = None) -> Any:
    """Load a trusted local checkpoint written by mmengine.

    Args:
        filename (str): Local checkpoint file path (``~`` is expanded).
        map_location (str | callable, optional): Same as :func:`torch.load`.

    Returns:
        dict | OrderedDict: The loaded checkpoint.
    """
    filename = osp.expanduser(filename)
    if not osp.isfile(filename):
        raise FileNotFoundError(f'{filename} can not be found.')
    return torch.load(filename, map_location=map_location, weights_only=False)


def _needs_patch(loader: Callable) -> bool:
    """Whether mmengine's local loader relies on torch's old default."""
    if digit_version(torch.__version__) < digit_version('2.6.0'):
        return False
    return loader is not load_local_checkpoint and getattr(
        loader, '__module__', '') == 'mmengine.runner.checkpoint'


def patch_mmengine_checkpoint_loading() -> bool:
    """Make mmengine's local checkpoint loader work on torch >= 2.6.

    Idempotent; does nothing on torch < 2.6 or when mmengine's local loader
    was already replaced (by this function or by a newer mmengine).

    Returns:
        bool: Whether the loader was replaced by this call.
    """
    loader = CheckpointLoader._schemes.get(_LOCAL_SCHEME)
    if loader is None or not _needs_patch(loader):
        return False
    CheckpointLoader.register_scheme(
        prefixes=_LOCAL_SCHEME, loader=load_local_checkpoint, force=True)
    return True
