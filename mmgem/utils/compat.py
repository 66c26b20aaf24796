# Copyright (c) mmgem contributors. All rights reserved.
"""Fixes to mmengine 0.10.7, applied when :mod:`mmgem` is imported.

This is the one place where mmgem changes mmengine's behaviour. Each fix is
narrow, idempotent, and leaves code that does not need it unchanged.

1. **Loading local checkpoints on torch >= 2.6**
   (:func:`patch_mmengine_checkpoint_loading`). mmengine loads local
   checkpoints with ``torch.load(filename, map_location=...)``; since torch
   2.6 that defaults to ``weights_only=True``, which refuses the plain Python
   objects mmengine itself puts into every checkpoint (``meta`` with the
   config text, the message hub, numpy scalars in the log history), so
   ``Runner.resume`` and ``load_from`` fail with "Weights only load failed".
   Only mmengine's loader for local file paths (the ``''`` scheme of
   :class:`mmengine.runner.CheckpointLoader`) is replaced, by one that passes
   ``weights_only=False``; checkpoints fetched over HTTP or from other
   backends keep torch's safe default. Only load local checkpoints you
   trust: ``weights_only=False`` unpickles arbitrary objects, exactly as
   torch < 2.6 and mmengine always did. A file that cannot be read (e.g.
   truncated by a run killed while saving) fails with an error that names
   it, instead of a bare unpickling error.
2. **Checkpoints are written atomically** (:func:`patch_atomic_local_put`).
   mmengine writes a checkpoint with ``open(path, 'wb').write(...)``, so a
   run killed while saving leaves a truncated ``iter_N.pth``. mmengine's
   local file backend now writes to a temporary file in the same folder and
   renames it (:func:`mmgem.utils.atomic_write`); the destination is either
   the old or the complete new file, with the umask's mode.
3. **A checkpoint is removed only after its successor is written**
   (:func:`patch_checkpoint_hook_keep_until_saved`). With
   ``max_keep_ckpts``, mmengine's ``CheckpointHook`` deletes the oldest
   checkpoint *before* it writes the new one; with ``max_keep_ckpts=1`` a
   kill during the write leaves nothing to resume from.
4. **Auto-resume skips a bad last checkpoint**
   (:func:`patch_find_latest_checkpoint`). ``resume=True`` (``--resume``
   without a file) takes the file named in ``work_dir/last_checkpoint``; if
   that file is missing, truncated or unreadable, the newest complete
   ``iter_*.pth`` / ``epoch_*.pth`` beside it is used instead and the log
   says so.
5. **Expert shards keep their own initialisation**
   (:func:`patch_init_weights_broadcast`). ``Runner._init_model_weights``
   broadcasts every state-dict tensor from rank 0 after ``init_weights``,
   which would overwrite every rank's expert shards (expert parallelism) with
   rank 0's. Tensors the model lists in
   ``_ddp_params_and_buffers_to_ignore`` (PyTorch's list of what DDP must not
   synchronise, set by
   :class:`~mmgem.engine.wrappers.GEMDistributedDataParallel` for the expert
   shards) are left out of that broadcast, as DDP itself leaves them out of
   its own; everything else is broadcast as before.

6. **Optional: PyTorch kernels on CUDA instead of mmcv's CUDA ops**
   (:func:`patch_pure_pytorch_cuda_ops`, only with the environment variable
   ``MMGEM_PURE_PYTORCH_OPS=1``). An mmcv built without its CUDA ops (e.g.
   when ``tools/gpu_smoke.sh`` cannot compile them in time) has no kernel
   for CUDA tensors; DINO then needs mmcv's pure-PyTorch multi-scale
   deformable attention and mmdet's PyTorch sigmoid focal loss on CUDA.
   Both compute the same functions, more slowly.

:func:`patch_mmengine` applies 1-5, and 6 when asked.
"""
import logging
import os
import os.path as osp
import re
import zipfile
from typing import Any, Callable, List, Optional

import torch
from mmengine.dist import broadcast, is_main_process
from mmengine.fileio.backends.local_backend import LocalBackend
from mmengine.hooks import CheckpointHook
from mmengine.logging import print_log
from mmengine.model import is_model_wrapper
from mmengine.runner import checkpoint as mmengine_checkpoint
from mmengine.runner import runner as mmengine_runner
from mmengine.runner.checkpoint import CheckpointLoader
from mmengine.utils import digit_version

from .fileio import atomic_write

_LOCAL_SCHEME = ''
#: Names of the checkpoints auto-resume may fall back to.
CHECKPOINT_NAME = re.compile(r'^(iter|epoch)_(\d+)\.pth$')


def _replace(owner: Any, name: str, new: Any) -> bool:
    """Set ``owner.name = new`` unless it is already; say whether it was."""
    if getattr(owner, name) is new:
        return False
    setattr(owner, name, new)
    return True


# ----------------------------------------------------------------------
# 1. loading local checkpoints
# ----------------------------------------------------------------------
def load_local_checkpoint(filename: str,
                          map_location: Optional[Any] = None) -> Any:
    """Load a trusted local checkpoint written by mmengine.

    Args:
        filename (str): Local checkpoint file path (``~`` is expanded).
        map_location (str | callable, optional): Same as :func:`torch.load`.

    Returns:
        dict | OrderedDict: The loaded checkpoint.

    Raises:
        FileNotFoundError: If the file does not exist.
        RuntimeError: If the file cannot be read as a checkpoint; the message
            names the file.
    """
    filename = osp.expanduser(filename)
    if not osp.isfile(filename):
        raise FileNotFoundError(f'{filename} can not be found.')
    try:
        return torch.load(
            filename, map_location=map_location, weights_only=False)
    except Exception as err:
        problem = checkpoint_problem(filename) or 'it cannot be unpickled'
        raise RuntimeError(
            f'cannot load the checkpoint {filename}: {problem} '
            f'({type(err).__name__}: {err}). It may have been cut short by a '
            'run killed while saving; resume from an earlier checkpoint '
            '(or use --resume without a file, which skips bad checkpoints)'
        ) from err


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


# ----------------------------------------------------------------------
# 2. atomic writes
# ----------------------------------------------------------------------
_original_put = LocalBackend.put


def _atomic_put(self, obj: bytes, filepath) -> None:
    """:meth:`LocalBackend.put` through a temporary file and a rename."""
    path = str(filepath)
    if osp.exists(path) and not osp.isfile(path):
        return _original_put(self, obj, filepath)  # a device, a fifo, ...
    atomic_write(path, obj)


def patch_atomic_local_put() -> bool:
    """Make mmengine's local file backend write files atomically.

    Returns:
        bool: Whether the method was replaced by this call.
    """
    return _replace(LocalBackend, 'put', _atomic_put)


# ----------------------------------------------------------------------
# 3. keep the previous checkpoint until the new one is written
# ----------------------------------------------------------------------
_original_save_with_step = CheckpointHook._save_checkpoint_with_step


def _save_checkpoint_with_step(self, runner, step, meta) -> None:
    """mmengine's method, but the oldest checkpoint goes after the save."""
    keep = self.max_keep_ckpts
    if keep <= 0:
        return _original_save_with_step(self, runner, step, meta)
    self.max_keep_ckpts = keep + 1  # let mmengine hold one more ...
    try:
        _original_save_with_step(self, runner, step, meta)
    finally:
        self.max_keep_ckpts = keep
    # ... and remove it once the new checkpoint is on disk
    while len(self.keep_ckpt_ids) > keep:
        old = self.keep_ckpt_ids.popleft()
        if is_main_process():
            path = self.file_backend.join_path(self.out_dir,
                                               self.filename_tmpl.format(old))
            if self.file_backend.isfile(path):
                self.file_backend.remove(path)
            elif self.file_backend.isdir(path):
                self.file_backend.rmtree(path)
    runner.message_hub.update_info('keep_ckpt_ids', list(self.keep_ckpt_ids))


def patch_checkpoint_hook_keep_until_saved() -> bool:
    """Make ``CheckpointHook`` delete old checkpoints after saving.

    Returns:
        bool: Whether the method was replaced by this call.
    """
    return _replace(CheckpointHook, '_save_checkpoint_with_step',
                    _save_checkpoint_with_step)


# ----------------------------------------------------------------------
# 4. auto-resume from the newest complete checkpoint
# ----------------------------------------------------------------------
def checkpoint_problem(path: str) -> Optional[str]:
    """Why ``path`` is not a complete checkpoint, or None if it is.

    A zip checkpoint (what ``torch.save`` writes) must have its central
    directory, written last, and every member must lie inside the file; a
    file cut short by a kill has neither. Other files are loaded to check.

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
    try:  # a legacy (pre-zip) torch file: only loading can tell
        torch.load(path, map_location='cpu', weights_only=False)
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


def find_latest_checkpoint(path: str) -> Optional[str]:
    """The checkpoint auto-resume continues from, skipping bad files.

    Reads ``path/last_checkpoint`` as mmengine does. If the file it names is
    missing, truncated or unreadable, the newest complete ``iter_*.pth`` or
    ``epoch_*.pth`` in the same folder (or in ``path``) is returned instead,
    with a warning naming both.

    Args:
        path (str): The work dir.

    Returns:
        str, optional: The checkpoint, or None (no ``last_checkpoint``, or
        no complete checkpoint: training starts from scratch).
    """
    save_file = osp.join(path, 'last_checkpoint')
    if not osp.exists(save_file):
        print_log('Did not find last_checkpoint to be resumed.',
                  logger='current')
        return None
    with open(save_file) as f:
        last = f.read().strip()
    problem = checkpoint_problem(last) if last else 'last_checkpoint is empty'
    if problem is None:
        return last
    folders = [osp.dirname(last)] if last else []
    folders.append(path)
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


def patch_find_latest_checkpoint() -> bool:
    """Make auto-resume skip a truncated or unreadable last checkpoint.

    Returns:
        bool: Whether the function was replaced by this call.
    """
    if mmengine_runner.find_latest_checkpoint is find_latest_checkpoint:
        return False
    import mmengine.runner as runner_package
    for module in (mmengine_runner, mmengine_checkpoint, runner_package):
        module.find_latest_checkpoint = find_latest_checkpoint
    return True


# ----------------------------------------------------------------------
# 5. the start-up broadcast leaves expert shards alone
# ----------------------------------------------------------------------
def _init_model_weights(self) -> None:
    """``init_weights``, then broadcast from rank 0 what ranks share.

    As ``Runner._init_model_weights`` of mmengine 0.10.7, except that the
    tensors listed in the model's ``_ddp_params_and_buffers_to_ignore`` (the
    per-rank expert shards of expert parallelism) are not broadcast.
    """
    model = self.model.module if is_model_wrapper(self.model) else self.model
    if hasattr(model, 'init_weights'):
        model.init_weights()
        ignored = set(getattr(model, '_ddp_params_and_buffers_to_ignore', ()))
        for name, params in model.state_dict().items():
            if name not in ignored:
                broadcast(params)


def patch_init_weights_broadcast() -> bool:
    """Keep per-rank tensors out of the Runner's start-up broadcast.

    Returns:
        bool: Whether the method was replaced by this call.
    """
    return _replace(mmengine_runner.Runner, '_init_model_weights',
                    _init_model_weights)


# ----------------------------------------------------------------------
# 6. PyTorch kernels on CUDA (an mmcv without CUDA ops)
# ----------------------------------------------------------------------
PURE_PYTORCH_OPS_ENV = 'MMGEM_PURE_PYTORCH_OPS'


def _py_sigmoid_focal_loss_on_labels(pred, target, weight=None, gamma=2.0,
                                     alpha=0.25, reduction='mean',
                                     avg_factor=None):
    """mmdet's ``sigmoid_focal_loss`` (label targets) with PyTorch ops."""
    import torch.nn.functional as F
    from mmdet.models.losses.focal_loss import py_sigmoid_focal_loss
    num_classes = pred.size(1)
    one_hot = F.one_hot(target, num_classes=num_classes + 1)[:, :num_classes]
    return py_sigmoid_focal_loss(pred, one_hot.type_as(pred), weight,
                                 gamma=gamma, alpha=alpha,
                                 reduction=reduction, avg_factor=avg_factor)


def patch_pure_pytorch_cuda_ops(force: bool = False) -> bool:
    """Use PyTorch kernels where DINO would call mmcv's CUDA ops.

    Applied only when ``MMGEM_PURE_PYTORCH_OPS=1`` (or ``force``): mmcv's
    ``MultiScaleDeformableAttention`` runs
    ``multi_scale_deformable_attn_pytorch`` on CUDA tensors too, and mmdet's
    ``FocalLoss`` uses its PyTorch sigmoid focal loss instead of mmcv's op.

    Args:
        force (bool): Apply without the environment variable.

    Returns:
        bool: Whether the kernels were switched by this call.
    """
    if not (force or os.environ.get(PURE_PYTORCH_OPS_ENV) == '1'):
        return False
    from mmcv.ops import multi_scale_deform_attn
    from mmdet.models.losses import focal_loss
    if focal_loss.sigmoid_focal_loss is _py_sigmoid_focal_loss_on_labels:
        return False
    multi_scale_deform_attn.IS_CUDA_AVAILABLE = False
    focal_loss.sigmoid_focal_loss = _py_sigmoid_focal_loss_on_labels
    print_log(
        f'{PURE_PYTORCH_OPS_ENV}=1: multi-scale deformable attention and the '
        'sigmoid focal loss run as PyTorch code (mmcv without CUDA ops)',
        logger='current', level=logging.WARNING)
    return True


def patch_mmengine() -> List[str]:
    """Apply every fix of this module (idempotent).

    Returns:
        list[str]: Names of the fixes this call applied.
    """
    patches = (patch_mmengine_checkpoint_loading, patch_atomic_local_put,
               patch_checkpoint_hook_keep_until_saved,
               patch_find_latest_checkpoint, patch_init_weights_broadcast,
               patch_pure_pytorch_cuda_ops)
    return [p.__name__ for p in patches if p()]
