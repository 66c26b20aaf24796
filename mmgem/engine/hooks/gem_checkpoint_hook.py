# Copyright (c) mmgem contributors. All rights reserved.
"""A CheckpointHook whose checkpoints survive kills.

mmengine's :class:`~mmengine.hooks.CheckpointHook` writes a checkpoint with
``open(path, 'wb')`` (a kill leaves a truncated ``iter_N.pth``) and, with
``max_keep_ckpts``, deletes the oldest checkpoint *before* writing the new
one (with ``max_keep_ckpts=1`` a kill during the write leaves nothing to
resume from). :class:`GEMCheckpointHook` changes only that:

- the runner saves into a temporary file beside the checkpoint
  (``.iter_N.pth.<pid>.mmgem-tmp``), which is ``fsync``-ed and renamed into
  place (``os.replace``), then the folder is ``fsync``-ed; the file has the
  umask's mode, as any file written with ``open()``;
- the checkpoint that ``max_keep_ckpts`` drops is deleted only once its
  successor is complete; which ids are kept is exactly mmengine's rule;
- ``last_checkpoint`` is written atomically too;
- at ``before_run``, temporary files of an earlier killed run in the
  checkpoint folder are removed.

Checkpoints to other backends (``backend_args``) are saved as mmengine does.
"""
import os
import os.path as osp
import re
from typing import Optional

from mmdet.registry import HOOKS
from mmengine.dist import is_main_process
from mmengine.fileio.backends.local_backend import LocalBackend
from mmengine.hooks import CheckpointHook

from mmgem.utils.fileio import atomic_write, fsync_dir

#: Suffix of the temporary file a checkpoint is written to.
TMP_SUFFIX = '.mmgem-tmp'
_TMP_NAME = re.compile(r'^\..+\.\d+' + re.escape(TMP_SUFFIX) + r'$')


@HOOKS.register_module()
class GEMCheckpointHook(CheckpointHook):
    """CheckpointHook with atomic saves and keep-until-saved.

    Takes the arguments of :class:`~mmengine.hooks.CheckpointHook` and keeps
    its behaviour (interval, ``max_keep_ckpts``, ``save_best``, ...).

    Args:
        *args, **kwargs: Those of :class:`~mmengine.hooks.CheckpointHook`.
    """

    def before_run(self, runner) -> None:
        """Remove temporary checkpoint files of an earlier killed run.

        Args:
            runner (Runner): The runner.
        """
        super().before_run(runner)
        if not is_main_process():
            return
        folder = runner.work_dir
        if self.out_dir not in (None, runner.work_dir):  # as before_train sets it
            folder = osp.join(str(self.out_dir), osp.basename(runner.work_dir.rstrip(osp.sep)))
        for name in os.listdir(folder) if osp.isdir(folder) else ():
            if _TMP_NAME.match(name) and osp.isfile(osp.join(folder, name)):
                os.remove(osp.join(folder, name))
                runner.logger.warning(
                    f'removed {osp.join(folder, name)}, a checkpoint left half '
                    'written by an earlier run that was killed while saving')

    def _temp_name(self, filename: str) -> str:
        """The temporary file a checkpoint is first written to."""
        return f'.{filename}.{os.getpid()}{TMP_SUFFIX}'

    def _commit(self, tmp: str, path: str) -> None:
        """Flush ``tmp`` to disk and rename it to ``path``.

        Args:
            tmp (str): The complete temporary file.
            path (str): The checkpoint.
        """
        with open(tmp, 'rb') as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
        fsync_dir(osp.dirname(path) or '.')

    def _remove_checkpoint(self, step: int) -> None:
        """Delete the checkpoint of ``step`` (a file or a folder)."""
        path = self.file_backend.join_path(self.out_dir, self.filename_tmpl.format(step))
        if self.file_backend.isfile(path):
            self.file_backend.remove(path)
        elif self.file_backend.isdir(path):
            self.file_backend.rmtree(path)

    def _save_checkpoint_with_step(self, runner, step, meta) -> None:
        """mmengine's save, atomic, deleting the dropped checkpoint last.

        Args:
            runner (Runner): The runner.
            step (int): The epoch or iteration of the checkpoint.
            meta (dict): The checkpoint's meta.
        """
        dropped: Optional[int] = None
        if self.max_keep_ckpts > 0 and not (
                self.keep_ckpt_ids and self.keep_ckpt_ids[-1] == step):
            if len(self.keep_ckpt_ids) == self.max_keep_ckpts:
                dropped = self.keep_ckpt_ids.popleft()
            self.keep_ckpt_ids.append(step)
            runner.message_hub.update_info('keep_ckpt_ids', list(self.keep_ckpt_ids))

        ckpt_filename = self.filename_tmpl.format(step)
        self.last_ckpt = self.file_backend.join_path(self.out_dir, ckpt_filename)
        runner.message_hub.update_info('last_ckpt', self.last_ckpt)
        local = isinstance(self.file_backend, LocalBackend)
        save_name = self._temp_name(ckpt_filename) if local else ckpt_filename
        tmp = osp.join(self.out_dir, save_name)
        try:
            runner.save_checkpoint(
                self.out_dir, save_name, self.file_client_args,
                save_optimizer=self.save_optimizer,
                save_param_scheduler=self.save_param_scheduler,
                meta=meta, by_epoch=self.by_epoch,
                backend_args=self.backend_args, **self.args)
            if not is_main_process():
                return
            if local:
                self._commit(tmp, self.last_ckpt)
        finally:  # only rank 0 writes; another rank never touches its file
            if local and is_main_process() and osp.isfile(tmp):
                os.remove(tmp)
        if dropped is not None:
            self._remove_checkpoint(dropped)
        atomic_write(osp.join(runner.work_dir, 'last_checkpoint'), self.last_ckpt)
