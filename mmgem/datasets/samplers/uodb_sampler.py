# Copyright (c) mmgem contributors. All rights reserved.
"""A distributed sampler that draws UODB's datasets in chosen proportions."""
import math
from collections import Counter
from typing import Iterator, List, Optional, Sequence, Sized

import numpy as np
from mmdet.registry import DATA_SAMPLERS
from mmengine.dist import get_dist_info, sync_random_seed
from torch.utils.data import Sampler

from .expected_images import uodb_index_map

MODES = ('proportional', 'ratio', 'temperature')


def largest_remainder(weights: np.ndarray, total: int) -> np.ndarray:
    """Integer counts proportional to ``weights`` that sum to ``total``.

    Args:
        weights (np.ndarray): Non-negative weights, not all zero.
        total (int): The sum of the counts.

    Returns:
        np.ndarray: int64 counts; ties go to the lower index.
    """
    share = weights / weights.sum() * total
    counts = np.floor(share).astype(np.int64)
    rest = total - int(counts.sum())
    order = np.argsort(-(share - counts), kind='stable')
    counts[order[:rest]] += 1
    return counts


@DATA_SAMPLERS.register_module()
class UODBSampler(Sampler):
    """Draw the datasets of a :class:`UODBDataset` in set proportions.

    Modes:

    - ``'proportional'``: every image once per epoch, shuffled (what
      mmengine's ``DefaultSampler`` does); dataset ``d`` gets ``n_d`` images.
    - ``'ratio'``: dataset ``d`` gets ``ratios[d] / sum(ratios)`` of the
      epoch's draws.
    - ``'temperature'``: dataset ``d`` gets a share proportional to
      ``n_d ** (1 / temperature)`` (``T = 1`` is proportional, large ``T``
      tends to uniform).

    In the last two modes an epoch has ``epoch_length`` draws (default: the
    total number of images), split between datasets by largest-remainder
    rounding, so the per-epoch counts are exact, not only expected. Inside a
    dataset, images are drawn without replacement, cycling through fresh
    permutations when a dataset is drawn more often than it has images (so
    every image of an up-sampled dataset appears before any repeats).

    Like ``DefaultSampler``, the global index list of an epoch is the same on
    every rank (seeded with ``seed + epoch``), padded to a multiple of the
    world size (``round_up``) and split between ranks by stride.

    Over a dataset wrapper (mmengine's ``RepeatDataset`` or
    ``ClassBalancedDataset`` around the :class:`UODBDataset`) the sampler
    works in the wrapper's index space: ``n_d`` counts the wrapper's indices
    of dataset ``d`` (so ``'proportional'`` draws every index of the wrapper
    once, with its repeats), and every drawn index is one of the wrapper's.
    A wrapper whose index map is unknown is refused, naming it. A subclass
    that reads the UODBDataset by index itself must map its indices through
    :attr:`uodb_indices` and declare ``WRAPPER_SAFE = True`` in its own body;
    otherwise it refuses wrapped datasets.

    Resume: :meth:`state_dict` / :meth:`load_state_dict` hold the seed and
    the epoch, and :meth:`skip_batches` starts the current epoch where a
    checkpoint left it (used by :class:`~mmgem.engine.hooks.ResumeStateHook`),
    without loading the skipped images.

    Args:
        dataset (Sized): A :class:`UODBDataset` (or a wrapper of one).
        mode (str): ``'proportional'``, ``'ratio'`` or ``'temperature'``.
        ratios (Sequence[float], optional): Per-dataset weights (mode
            ``'ratio'``), in dataset order; non-negative, not all zero.
        temperature (float, optional): The temperature (mode
            ``'temperature'``), > 0.
        shuffle (bool): Shuffle the epoch's indices. Defaults to True.
        seed (int, optional): Random seed; synchronised across ranks when
            None.
        round_up (bool): Pad so every rank gets the same number of indices.
            Defaults to True.
        epoch_length (int, optional): Draws per epoch over all ranks in
            modes ``'ratio'`` and ``'temperature'``; defaults to the dataset
            length.
    """

    #: This class maps wrapper indices itself (see the class docstring).
    WRAPPER_SAFE = True

    def __init__(self,
                 dataset: Sized,
                 mode: str = 'proportional',
                 ratios: Optional[Sequence[float]] = None,
                 temperature: Optional[float] = None,
                 shuffle: bool = True,
                 seed: Optional[int] = None,
                 round_up: bool = True,
                 epoch_length: Optional[int] = None) -> None:
        if mode not in MODES:
            raise ValueError(f'UODBSampler: mode must be one of {MODES}, got '
                             f'{mode!r}')
        rank, world_size = get_dist_info()
        self.rank = rank
        self.world_size = world_size
        self.dataset = dataset
        self.uodb, self.uodb_indices, wrappers = uodb_index_map(dataset)
        if self.uodb_indices is not None and not vars(type(self)).get('WRAPPER_SAFE', False):
            raise TypeError(
                f'{type(self).__name__} reads the UODBDataset by its own indices, but the '
                f'dataset is wrapped in {" > ".join(wrappers)}; it does not support dataset '
                'wrappers (use UODBSampler, or wrap the sub-datasets inside UODBDataset)')
        self.mode = mode
        self.shuffle = shuffle
        self.seed = sync_random_seed() if seed is None else seed
        self.round_up = round_up
        self.epoch = 0
        self._resume: Optional[dict] = None
        self.pulled = 0

        self._ids = np.asarray(self.uodb.sample_dataset_ids)
        if self.uodb_indices is not None:
            self._ids = self._ids[self.uodb_indices]
        lengths = np.bincount(
            self._ids, minlength=self.uodb.num_datasets).astype(np.int64)
        self._lengths = lengths
        names = self.uodb.dataset_names
        self._members = [np.flatnonzero(self._ids == d)
                         for d in range(len(lengths))]
        if mode == 'proportional':
            if ratios is not None or temperature is not None:
                raise ValueError('UODBSampler: mode "proportional" takes no '
                                 'ratios or temperature')
            self.counts = lengths.copy()
        else:
            if mode == 'ratio':
                if ratios is None or len(ratios) != len(lengths):
                    raise ValueError(
                        f'UODBSampler: mode "ratio" needs {len(lengths)} '
                        f'ratios (one per dataset {names}), got {ratios}')
                weights = np.asarray(ratios, dtype=np.float64)
                if (weights < 0).any() or not weights.sum() > 0 \
                        or not np.isfinite(weights).all():
                    raise ValueError(
                        f'UODBSampler: ratios must be finite, >= 0 and not '
                        f'all 0, got {list(ratios)}')
                if temperature is not None:
                    raise ValueError('UODBSampler: mode "ratio" takes no '
                                     'temperature')
            else:
                if temperature is None or not temperature > 0:
                    raise ValueError(
                        'UODBSampler: mode "temperature" needs a temperature '
                        f'> 0, got {temperature}')
                if ratios is not None:
                    raise ValueError('UODBSampler: mode "temperature" takes '
                                     'no ratios')
                weights = lengths.astype(np.float64)**(1.0 / temperature)
            empty = [names[d] for d in np.flatnonzero(
                (weights > 0) & (lengths == 0))]
            if empty:
                raise ValueError(f'UODBSampler: dataset(s) {empty} have a '
                                 'positive ratio but no images')
            total = len(self._ids) if epoch_length is None else epoch_length
            if total <= 0:
                raise ValueError(
                    f'UODBSampler: epoch_length must be > 0, got {total}')
            self.counts = largest_remainder(weights, int(total))
        self.ratios = None if ratios is None else list(ratios)
        self.temperature = temperature
        self.epoch_length = int(self.counts.sum())
        if self.round_up:
            self.num_samples = math.ceil(self.epoch_length / world_size)
            self.total_size = self.num_samples * world_size
        else:
            self.num_samples = math.ceil(
                (self.epoch_length - rank) / world_size)
            self.total_size = self.epoch_length

    def _global_indices(self) -> np.ndarray:
        """The epoch's index list over all ranks, before padding."""
        rng = np.random.default_rng([self.seed, self.epoch])
        if self.mode == 'proportional':
            if self.shuffle:
                return rng.permutation(len(self._ids))
            return np.arange(len(self._ids))
        chosen: List[np.ndarray] = []
        for members, count in zip(self._members, self.counts):
            if count == 0:
                continue
            rounds = -(-int(count) // len(members))
            draws = [
                rng.permutation(members) if self.shuffle else members
                for _ in range(rounds)
            ]
            chosen.append(np.concatenate(draws)[:count])
        indices = np.concatenate(chosen)
        if self.shuffle:
            indices = rng.permutation(indices)
        return indices

    def rank_indices(self) -> np.ndarray:
        """This rank's indices of the current epoch, in order.

        Returns:
            np.ndarray: int64 dataset indices.
        """
        indices = self._global_indices()
        if self.round_up and self.total_size > len(indices):
            reps = -(-self.total_size // len(indices))
            indices = np.tile(indices, reps)[:self.total_size]
        return indices[self.rank:self.total_size:self.world_size]

    def _epoch_indices(self) -> np.ndarray:
        """:meth:`rank_indices`, started where :meth:`skip_batches` says."""
        indices = self.rank_indices()
        resume = self._resume
        if resume is not None and resume['epoch'] == self.epoch:
            indices = np.concatenate([
                np.asarray(resume['leftovers'], dtype=np.int64),
                indices[resume['start']:]
            ])
        return indices

    def __iter__(self) -> Iterator[int]:
        indices = self._epoch_indices()
        self.pulled = 0
        for idx in indices.tolist():
            self.pulled += 1
            yield idx

    def __len__(self) -> int:
        return self.num_samples

    def set_epoch(self, epoch: int) -> None:
        """Set the epoch, which reseeds the shuffling.

        Args:
            epoch (int): Epoch number.
        """
        if self._resume is not None and self._resume['epoch'] != epoch:
            self._resume = None
        self.epoch = epoch

    # ------------------------------------------------------------------
    # resume
    # ------------------------------------------------------------------
    def state_dict(self) -> dict:
        """What makes the sampler's epochs reproducible.

        Returns:
            dict: ``seed``, ``epoch``, ``world_size`` and the class name.
        """
        return dict(type=type(self).__name__, seed=int(self.seed),
                    epoch=int(self.epoch), world_size=self.world_size)

    def load_state_dict(self, state: dict) -> None:
        """Take the seed and the epoch of :meth:`state_dict`.

        Args:
            state (dict): A :meth:`state_dict`.
        """
        self.seed = int(state['seed'])
        self.set_epoch(int(state['epoch']))

    def skip_batches(self, batch_sampler, num_batches: int) -> int:
        """Start the current epoch after its first ``num_batches`` batches.

        The batches of the epoch are drawn (indices only, no image is
        loaded) through ``batch_sampler``, which must wrap this sampler; the
        epoch then yields the indices that the batch sampler had taken but
        not yet put into a batch (e.g. the partly filled buckets of mmdet's
        ``AspectRatioBatchSampler``) followed by the indices it had not
        taken, so the same batch sampler produces exactly the batches that
        would have followed. mmdet's ``AspectRatioBatchSampler`` keeps its
        buckets between epochs; they are emptied here.

        Args:
            batch_sampler: The batch sampler over this sampler (a torch
                ``BatchSampler``, mmdet's ``AspectRatioBatchSampler`` or
                :class:`SingleDatasetBatchSampler`).
            num_batches (int): Batches of the current epoch already trained.

        Returns:
            int: The number of batches this epoch has in all. When that is
            not more than ``num_batches`` (the epoch was trained to its end)
            nothing is skipped.
        """
        self._resume = None
        total, taken, emitted = 0, 0, Counter()
        batches = iter(batch_sampler)
        try:
            for batch in batches:
                if total < num_batches:
                    emitted.update(int(i) for i in batch)
                    taken = self.pulled
                total += 1
        finally:
            batches.close()
            buckets = getattr(batch_sampler, '_aspect_ratio_buckets', None)
            if buckets is not None:
                batch_sampler._aspect_ratio_buckets = [[] for _ in buckets]
        if num_batches <= 0 or num_batches >= total:
            return total
        leftovers = []
        for idx in self.rank_indices()[:taken].tolist():
            if emitted[idx] > 0:
                emitted[idx] -= 1
            else:
                leftovers.append(idx)
        self._resume = dict(epoch=self.epoch, start=taken, leftovers=leftovers)
        return total

    def expected_images_per_dataset(self) -> np.ndarray:
        """Images of each dataset per epoch, summed over all ranks.

        Returns:
            np.ndarray: float64 array of length K. The per-epoch counts,
            scaled by ``total_size / epoch_length`` for the padding
            ``round_up`` adds.
        """
        counts = self.counts.astype(np.float64)
        return counts * (self.total_size / self.epoch_length)
