# Copyright (c) mmgem contributors. All rights reserved.
"""Exact resume: random states and the data position in every checkpoint.

MMEngine's ``resume`` restores the weights, the optimizer, the schedulers
and the iteration counter, but not the random number generators (it re-seeds
them, or leaves them where building the model left them) and, in
``EpochBasedTrainLoop``, not the position inside an epoch (a checkpoint
saved mid-epoch restarts the epoch). In ``IterBasedTrainLoop`` it finds the
position by loading and discarding every batch trained so far. So a resumed
run draws other augmentations, other denoising queries and (mid-epoch) other
images than the run it continues.

:class:`ResumeStateHook` saves in every checkpoint, for every rank
(gathered right before the save, see
:mod:`mmgem.engine.hooks.save_collectives`):

- the states of Python's ``random``, NumPy's global generator, torch's CPU
  generator and the CUDA generators of the process;
- the training sampler's state (seed, epoch; samplers with ``state_dict``,
  i.e. :class:`~mmgem.datasets.samplers.UODBSampler` and
  :class:`~mmgem.datasets.samplers.ExpertLocalitySampler`) and how many
  batches of its current epoch were trained.

On ``resume`` (not on ``load_from``) it restores them:

- the sampler gets its seed and epoch back and starts the epoch after the
  trained batches (:meth:`UODBSampler.skip_batches`: indices only, no image
  is loaded); in ``IterBasedTrainLoop`` this replaces MMEngine's
  load-and-discard of every batch trained so far;
- the random states are set right before the first batch after the resume
  is drawn (``IterBasedTrainLoop``) or at the start of the resumed epoch
  (``EpochBasedTrainLoop``), i.e. where the interrupted run stood when it
  saved.

So with the same world size a resumed run continues the losses of the
uninterrupted one. Two things make that hold in every run, resumed or not:
validation leaves the random states as it found them (it would otherwise
consume random numbers between a checkpoint and the next batch), and the
training dataloader draws its workers' base seed from its own generator
(MMEngine's ``worker_init_fn`` re-seeds the workers anyway) instead of the
global one each time an epoch's iterator starts. With ``num_workers > 0``
the augmentations of the batches right after a mid-epoch resume differ
(the workers restart with their seeds); model randomness and data order
are exact.

On a different world size the weights, plan, optimizer and schedulers
resume as saved (checkpoints of
:class:`~mmgem.engine.hooks.ExpertParallelCheckpointHook` hold full
experts); the sampler keeps its seed and epoch and skips the same share of
the epoch, and the random states are not restored (there is no per-rank
state for the new ranks): the log says so.
"""
import logging
import random
from typing import Any, Dict, List, Optional

import numpy as np
import torch
from mmdet.registry import HOOKS
from mmengine.dist import all_gather_object, get_dist_info, is_distributed
from mmengine.hooks import Hook
from mmengine.logging import print_log

from .save_collectives import add_save_collective, save_payload

CKPT_KEY = 'resume_state'
PAYLOAD_KEY = 'resume_state'


def get_rng_states() -> Dict[str, Any]:
    """The random states of this process.

    Returns:
        dict: ``python``, ``numpy``, ``torch`` and ``cuda`` (a list, empty
        when CUDA is not initialised).
    """
    cuda = []
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        cuda = [s.cpu() for s in torch.cuda.get_rng_state_all()]
    return dict(python=random.getstate(), numpy=np.random.get_state(),
                torch=torch.get_rng_state(), cuda=cuda)


def set_rng_states(states: Dict[str, Any]) -> None:
    """Set the random states of this process.

    Args:
        states (dict): A :func:`get_rng_states` result.
    """
    random.setstate(states['python'])
    np.random.set_state(states['numpy'])
    torch.set_rng_state(states['torch'])
    if states.get('cuda') and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states['cuda'])


def find_stateful_sampler(dataloader) -> Optional[Any]:
    """The index sampler of ``dataloader`` if it can save and skip.

    Args:
        dataloader: A ``DataLoader``.

    Returns:
        The sampler (with ``state_dict``, ``load_state_dict`` and
        ``skip_batches``), or None.
    """
    batch_sampler = getattr(dataloader, 'batch_sampler', None)
    for obj in (getattr(batch_sampler, 'sampler', None),
                getattr(dataloader, 'sampler', None)):
        if all(callable(getattr(obj, name, None))
               for name in ('state_dict', 'load_state_dict', 'skip_batches')):
            return obj
    return None


class _ResumedIterator:
    """Stands in for ``IterBasedTrainLoop.dataloader_iterator``.

    MMEngine's loop calls ``next`` ``skip`` times to move past the trained
    batches; those calls return None without loading anything when the
    sampler was positioned already (``load_skipped=False``), or are passed on
    otherwise. The random states are restored right before the first batch
    that is trained.
    """

    def __init__(self, iterator, skip: int, load_skipped: bool,
                 states: Optional[Dict[str, Any]]) -> None:
        self.iterator = iterator
        self.skip = skip
        self.load_skipped = load_skipped
        self.states = states

    def __iter__(self):
        return self

    def __next__(self):
        if self.skip > 0:
            self.skip -= 1
            return next(self.iterator) if self.load_skipped else None
        if self.states is not None:
            set_rng_states(self.states)
            self.states = None
        return next(self.iterator)

    def __getattr__(self, name):
        return getattr(self.iterator, name)


@HOOKS.register_module()
class ResumeStateHook(Hook):
    """Save random states and the data position; restore them on resume.

    Add it to ``custom_hooks``; see the module docstring for what it does.
    It runs after ``GEMPlannerHook`` and ``ExpertParallelExchangeHook``
    (priority ``LOW``), so the locality sampler has its plan when it is
    positioned.

    Args:
        restore_rng (bool): Restore the random states on resume (same world
            size only). Defaults to True.
        neutral_validation (bool): Leave the random states of training as
            they were before a validation. Defaults to True.
    """

    priority = 'LOW'

    def __init__(self, restore_rng: bool = True,
                 neutral_validation: bool = True) -> None:
        self.restore_rng = restore_rng
        self.neutral_validation = neutral_validation
        self._loaded: Optional[dict] = None
        self._pending: Optional[dict] = None
        self._val_states: Optional[Dict[str, Any]] = None
        self._sampler_epoch: Optional[int] = None
        self._epoch_batches = 0

    # ------------------------------------------------------------------
    # saving
    # ------------------------------------------------------------------
    def before_run(self, runner) -> None:
        """Gather every rank's state before each checkpoint."""
        add_save_collective(runner, PAYLOAD_KEY,
                            lambda r, _: self._gather_state(r))

    def _local_state(self, runner) -> dict:
        sampler = find_stateful_sampler(getattr(runner, 'train_dataloader',
                                                None))
        return dict(
            rng=get_rng_states(),
            sampler=None if sampler is None else sampler.state_dict(),
            epoch_batches=self._epoch_batches,
            iter=runner.iter)

    def _gather_state(self, runner) -> List[dict]:
        local = self._local_state(runner)
        return all_gather_object(local) if is_distributed() else [local]

    def before_save_checkpoint(self, runner, checkpoint: dict) -> None:
        """Write every rank's state into the checkpoint (rank 0)."""
        ranks = save_payload(runner, PAYLOAD_KEY)
        if ranks is None:  # saved outside the runner's wrapped save
            ranks = [self._local_state(runner)]
        checkpoint[CKPT_KEY] = dict(world_size=len(ranks), ranks=ranks)

    def after_train_iter(self, runner, batch_idx: int, data_batch=None,
                         outputs=None) -> None:
        """Count the trained batches of the sampler's current epoch."""
        sampler = find_stateful_sampler(runner.train_dataloader)
        epoch = None if sampler is None else sampler.epoch
        if epoch != self._sampler_epoch:
            self._sampler_epoch, self._epoch_batches = epoch, 0
        self._epoch_batches += 1

    # ------------------------------------------------------------------
    # validation leaves the random states alone
    # ------------------------------------------------------------------
    def before_val_epoch(self, runner) -> None:
        if self.neutral_validation:
            self._val_states = get_rng_states()

    def after_val_epoch(self, runner, metrics=None) -> None:
        if self._val_states is not None:
            set_rng_states(self._val_states)
            self._val_states = None

    # ------------------------------------------------------------------
    # resuming
    # ------------------------------------------------------------------
    def after_load_checkpoint(self, runner, checkpoint: dict) -> None:
        """Keep the saved state for ``before_train``.

        Whether it is used is decided there: only when the runner resumed
        at the checkpoint's iteration (``load_from`` starts at 0).
        """
        meta = checkpoint.get('meta', {})
        self._loaded = dict(state=checkpoint.get(CKPT_KEY),
                            iter=meta.get('iter'))

    def before_train(self, runner) -> None:
        """Give the dataloader its own seed generator; keep what a resume
        restores for ``before_train_epoch``."""
        loader = runner.train_dataloader
        rank, _ = get_dist_info()
        if getattr(loader, 'generator', None) is None:
            loader.generator = torch.Generator().manual_seed(
                int(runner.seed) * 1000 + rank)
        loaded, self._loaded = self._loaded, None
        sampler = find_stateful_sampler(loader)
        self._sampler_epoch = None if sampler is None else sampler.epoch
        self._epoch_batches = 0
        self._pending = None
        if loaded is None or not runner.iter or runner.iter != loaded['iter']:
            return  # not resumed (a new run, or load_from)
        if loaded['state'] is None:
            print_log(
                'ResumeStateHook: the checkpoint has no resume state (saved '
                'without this hook); random states and the data position '
                'are not restored', logger='current', level=logging.WARNING)
            return
        self._pending = loaded['state']

    def before_train_epoch(self, runner) -> None:
        """On the first epoch after a resume, position the sampler and set
        the random states (or have them set before the first batch).

        Runs after MMEngine's ``DistSamplerSeedHook`` (priority ``NORMAL``),
        which sets the sampler's epoch to the loop's: the resumed epoch in
        ``EpochBasedTrainLoop``, always 0 in ``IterBasedTrainLoop``, whose
        infinite iterator counts epochs itself.
        """
        state, self._pending = self._pending, None
        if state is None:
            return
        rank, world_size = get_dist_info()
        saved_world = state['world_size']
        mine = state['ranks'][rank if rank < saved_world else 0]
        same_world = saved_world == world_size
        states = mine['rng'] if (self.restore_rng and same_world) else None
        if not same_world:
            print_log(
                f'ResumeStateHook: resuming on {world_size} ranks a run saved '
                f'on {saved_world}: weights, plan, optimizer and schedulers '
                'are restored, the random states are not (no state exists '
                'for the new ranks) and the sampler skips the same share of '
                'its epoch', logger='current', level=logging.WARNING)
        loop = runner.train_loop
        iter_loop = hasattr(loop, 'dataloader_iterator')
        sampler = find_stateful_sampler(runner.train_dataloader)
        saved = mine.get('sampler')
        positioned = sampler is not None and saved is not None
        skipped = 0
        if positioned:
            batches = mine['epoch_batches']
            if not same_world:
                batches = round(batches * saved_world / world_size)
            if iter_loop:
                sampler.load_state_dict(saved)
                skipped = self._position(runner, sampler, batches)
                loop.dataloader_iterator = self._new_iterator(
                    loop, sampler.epoch)
            else:
                # the loop set the epoch; a checkpoint saved at the end of an
                # epoch resumes at the start of the next one
                sampler.seed = int(saved['seed'])
                if sampler.epoch == int(saved['epoch']):
                    skipped = self._position(runner, sampler, batches)
        elif runner.iter > 0 and not iter_loop:
            print_log(
                'ResumeStateHook: the training sampler cannot skip batches, '
                'so a checkpoint saved inside an epoch restarts that epoch '
                '(MMEngine\'s behaviour)', logger='current',
                level=logging.WARNING)
        if iter_loop:
            # MMEngine's loop now calls next() runner.iter times to skip the
            # trained batches: without loading them when positioned
            loop.dataloader_iterator = _ResumedIterator(
                loop.dataloader_iterator, runner.iter,
                load_skipped=not positioned, states=states)
        elif states is not None:
            set_rng_states(states)
        self._sampler_epoch = None if sampler is None else sampler.epoch
        self._epoch_batches = skipped
        print_log(
            f'ResumeStateHook: resumed at iteration {runner.iter}'
            + ('' if sampler is None else
               f', sampler epoch {sampler.epoch} after {skipped} batches')
            + ('; random states restored' if states is not None else ''),
            logger='current')

    def _position(self, runner, sampler, batches: int) -> int:
        """Move ``sampler`` past ``batches`` of its epoch; returns how many
        batches of the (possibly next) epoch are skipped."""
        total = sampler.skip_batches(runner.train_dataloader.batch_sampler,
                                     batches)
        if batches < total:
            return batches
        # the saved epoch was complete: IterBasedTrainLoop goes on with the
        # next one (EpochBasedTrainLoop is already there)
        if hasattr(runner.train_loop, 'dataloader_iterator'):
            sampler.set_epoch(sampler.epoch + 1)
        return 0

    @staticmethod
    def _new_iterator(loop, epoch: int):
        """A fresh MMEngine infinite iterator that starts at ``epoch``."""
        old = loop.dataloader_iterator
        iterator = type(old)(loop.dataloader)
        iterator._epoch = epoch
        return iterator
