# Copyright (c) mmgem contributors. All rights reserved.
"""A sampler that sends every image to the rank holding its expert.

GEM fixes the expert of every image before training (the plan's quota table
and the stable hash of the image, :mod:`mmgem.planner.hashing`), so a sampler
can place each image on the rank that holds its expert in expert-parallel
training; the exchange then moves no token at all.
"""
import logging
from typing import Dict, List, Optional, Sequence, Sized

import numpy as np
from mmdet.registry import DATA_SAMPLERS
from mmengine.logging import print_log

from mmgem.planner.hashing import bucket_thresholds, expert_of_bucket, image_bucket

from .uodb_sampler import UODBSampler


@DATA_SAMPLERS.register_module()
class ExpertLocalitySampler(UODBSampler):
    """:class:`UODBSampler` that splits each epoch between ranks by expert.

    An epoch's global index list is drawn exactly as by
    :class:`UODBSampler` (same modes, same per-dataset counts, so the loads
    the planner balances are unchanged; :meth:`expected_images_per_dataset`
    is inherited). Instead of splitting it between ranks by stride, every
    image goes to the rank that holds its planned expert: with ``E`` ranks
    per expert-parallel group and ``M`` experts, expert ``e`` lives on EP
    rank ``e // (M / E)`` of every EP group; the images of one EP rank are
    dealt round-robin to the ``W / E`` ranks holding those experts.

    Every rank must still yield ``num_samples`` images per epoch (the same
    number of iterations everywhere), but the plan's per-rank loads are not
    equal (capacity slack, datasets that do not split evenly, the hash's
    spread around the quota). Two ways to even them out:

    - ``strict=False`` (the default): every image of the epoch is used
      exactly once, as with :class:`UODBSampler`, so the data mix is exactly
      the planned one. Each rank keeps its own images up to ``num_samples``;
      only the surplus of the over-full ranks is dealt to the under-full
      ones and travels through the exchange (spread over the epoch: with
      ``shuffle`` every rank's list is shuffled).
    - ``strict=True``: no image ever leaves the rank of its expert; each rank
      drops the surplus of this epoch (a different random surplus every
      epoch) or repeats its own images to fill up. The exchange moves
      nothing, but the data mix changes: the images of the datasets on
      over-full ranks are seen less often, those on under-full ranks more
      often. When the plan is set, the sampler logs a warning with the
      measured distortion of the epoch (:meth:`distortion`: dropped and
      repeated share, per-dataset shares against the plan).

    Either way a rank whose experts serve a single dataset gets
    single-dataset batches; with train-mode BatchNorm that rank normalises
    one domain only (:class:`~mmgem.engine.hooks.ExpertParallelExchangeHook`
    warns and names SyncBN or frozen BN).

    The plan is the model's (its routing table: ``model.plan_file``,
    :func:`mmgem.apis.attach_plan` or ``GEMPlannerHook``); the sampler reads
    no plan file. It gets it through :meth:`set_plan`, which
    :func:`~mmgem.engine.hooks.expert_parallel_exchange_hook.give_plan_to_sampler`
    calls: :class:`~mmgem.engine.hooks.ExpertParallelExchangeHook` in
    ``before_train`` (after ``GEMPlannerHook`` made or restored the plan),
    and :class:`~mmgem.engine.runner.GEMRunner` when it builds the data
    loader, if the model already has a plan then. Iterating without a plan
    is an error. MMEngine's ``EpochBasedTrainLoop`` starts iterating after
    ``before_train``, and so does ``IterBasedTrainLoop`` with
    ``num_workers=0``; with workers, the ``IterBasedTrainLoop`` prefetches
    indices when it is built, before any hook runs, so give the model
    ``plan_file`` (and use ``GEMRunner``, as mmgem's configs do).

    Args:
        dataset (Sized): A :class:`UODBDataset` (or a wrapper of one).
        expert_parallel_size (int, optional): Ranks per expert-parallel
            group ``E``; None uses the world size. :meth:`set_plan` may
            override it.
        strict (bool): See above. Defaults to False.
        **kwargs: Other arguments of :class:`UODBSampler` (``mode``,
            ``ratios``, ``temperature``, ``shuffle``, ``seed``, ``round_up``,
            ``epoch_length``).
    """

    def __init__(self,
                 dataset: Sized,
                 expert_parallel_size: Optional[int] = None,
                 strict: bool = False,
                 **kwargs) -> None:
        if 'plan_file' in kwargs:
            raise TypeError(
                'ExpertLocalitySampler reads no plan file: give the plan to '
                'the model (model.plan_file, mmgem.apis.attach_plan or '
                'GEMPlannerHook); GEMRunner and ExpertParallelExchangeHook '
                'hand it to the sampler')
        if kwargs.get('round_up') is False:
            raise ValueError('ExpertLocalitySampler needs round_up=True: '
                             'every rank must draw the same number of images')
        super().__init__(dataset, **kwargs)
        self.strict = strict
        self.expert_parallel_size = (self.world_size
                                     if expert_parallel_size is None else
                                     int(expert_parallel_size))
        self._check_ep_size(self.expert_parallel_size)
        self.quota: Optional[np.ndarray] = None
        self.thresholds: Optional[np.ndarray] = None
        self._image_experts: Optional[np.ndarray] = None

    def _check_ep_size(self, ep_size: int) -> None:
        if ep_size < 1 or self.world_size % ep_size != 0:
            raise ValueError(
                f'ExpertLocalitySampler: expert_parallel_size={ep_size} must '
                f'divide the world size {self.world_size}')

    # ------------------------------------------------------------------
    # the plan
    # ------------------------------------------------------------------
    def set_plan(self,
                 quota: Sequence[Sequence[int]],
                 expert_parallel_size: Optional[int] = None,
                 thresholds: Optional[Sequence[Sequence[int]]] = None,
                 dataset_names: Optional[Sequence[str]] = None) -> None:
        """Route every image of the dataset through a plan.

        Args:
            quota (array-like): ``(K, M)`` integer quota table of the plan.
            expert_parallel_size (int, optional): Overrides the sampler's
                ``expert_parallel_size``.
            thresholds (array-like, optional): ``(K, M)`` routing thresholds
                of the plan (what the model routes by); None routes by the
                quantiles of the quota (a plan made from counts only).
            dataset_names (Sequence[str], optional): The datasets the plan
                was made for, in its order; checked against the dataset's
                when given.
        """
        if dataset_names is not None and tuple(dataset_names) != tuple(
                self.uodb.dataset_names):
            raise ValueError(
                f'ExpertLocalitySampler: the plan was made for datasets '
                f'{list(dataset_names)}, the dataset has '
                f'{list(self.uodb.dataset_names)}')
        quota = np.asarray(quota, dtype=np.int64)
        num_datasets = len(self.uodb.dataset_names)
        if quota.ndim != 2 or quota.shape[0] != num_datasets:
            raise ValueError(
                f'ExpertLocalitySampler: the plan quota has shape '
                f'{quota.shape}, the dataset has {num_datasets} datasets')
        if expert_parallel_size is not None:
            self._check_ep_size(int(expert_parallel_size))
            self.expert_parallel_size = int(expert_parallel_size)
        num_experts = quota.shape[1]
        if num_experts % self.expert_parallel_size:
            raise ValueError(
                f'ExpertLocalitySampler: {num_experts} experts cannot be '
                f'split over expert_parallel_size='
                f'{self.expert_parallel_size} ranks')
        empty = [self.uodb.dataset_names[d] for d in range(num_datasets)
                 if quota[d].sum() <= 0 and self._lengths[d] > 0]
        if empty:
            raise ValueError(f'ExpertLocalitySampler: the plan routes no '
                             f'image of dataset(s) {empty}')
        self.quota = quota
        self.thresholds = (np.stack([
            bucket_thresholds(row) if row.sum() > 0 else np.zeros_like(row) for row in quota
        ]) if thresholds is None else np.asarray(thresholds, dtype=np.int64))
        self._image_experts = self.image_experts()
        loads = self.rank_loads()
        print_log(
            'ExpertLocalitySampler: planned images per EP rank and epoch '
            f'{loads.tolist()} (each rank draws {self.num_samples}'
            f' x {self.world_size // self.expert_parallel_size} per group)',
            logger='current')
        if self.strict:
            print_log(self.distortion_message(), logger='current',
                      level=logging.WARNING)

    def image_experts(self) -> np.ndarray:
        """The planned expert of every sample of the dataset.

        Returns:
            np.ndarray: int64 expert index per dataset index.
        """
        names = self.uodb.dataset_names
        experts = np.empty(len(self._ids), dtype=np.int64)
        for idx, d in enumerate(self._ids):
            info = self.uodb.get_data_info(idx)
            bucket = image_bucket(names[d], info['img_id'])
            experts[idx] = expert_of_bucket(self.thresholds[d], bucket)
        return experts

    def owner_ep_rank(self, indices: np.ndarray) -> np.ndarray:
        """EP rank holding the expert of each dataset index.

        Args:
            indices (np.ndarray): Dataset indices.

        Returns:
            np.ndarray: int64 EP rank (in ``[0, E)``) per index.
        """
        if self._image_experts is None:
            raise RuntimeError(
                'ExpertLocalitySampler has no plan: add '
                'ExpertParallelExchangeHook to custom_hooks (it hands the '
                'installed GEM plan to the sampler before training) or give '
                'the model plan_file and use GEMRunner')
        per_rank = self.quota.shape[1] // self.expert_parallel_size
        return self._image_experts[indices] // per_rank

    def rank_loads(self) -> np.ndarray:
        """Images per epoch whose expert lives on each EP rank.

        Returns:
            np.ndarray: int64 counts per EP rank for one epoch's draw.
        """
        owners = self.owner_ep_rank(self._global_indices())
        return np.bincount(owners, minlength=self.expert_parallel_size)

    # ------------------------------------------------------------------
    # sampling
    # ------------------------------------------------------------------
    def _own_lists(self, indices: np.ndarray) -> List[np.ndarray]:
        """Split ``indices`` by the global rank that holds their expert.

        Global rank ``r`` is EP rank ``r % E`` of EP group ``r // E``; the
        images of an EP rank are dealt round-robin over its replicas.
        """
        owners = self.owner_ep_rank(indices)
        ep_size = self.expert_parallel_size
        replicas = self.world_size // ep_size
        own: List[np.ndarray] = [np.empty(0, np.int64)] * self.world_size
        for ep_rank in range(ep_size):
            mine = indices[owners == ep_rank]
            for g in range(replicas):
                own[g * ep_size + ep_rank] = mine[g::replicas]
        return own

    def _rank_lists(self) -> List[np.ndarray]:
        """Every rank's indices for this epoch (the same on every rank)."""
        indices = self._global_indices()
        n = self.num_samples
        if self.strict:
            rng = np.random.default_rng([self.seed, self.epoch, 1])
            lists = []
            for items in self._own_lists(indices):
                if len(items) == 0:
                    raise RuntimeError(
                        'ExpertLocalitySampler(strict=True): the plan gives '
                        'a rank no image at all; use strict=False')
                if len(items) < n:
                    extra = rng.choice(items, n - len(items), replace=True)
                    items = np.concatenate([items, extra])
                lists.append(items[:n])
            return lists
        indices = self._padded(indices)
        # Keep each rank's own images up to n; the surplus of the over-full
        # ranks fills the others, in rank order.
        own = self._own_lists(indices)
        surplus = np.concatenate([items[n:] for items in own])
        lists, pos = [], 0
        for items in own:
            items = items[:n]
            need = n - len(items)
            lists.append(np.concatenate([items, surplus[pos:pos + need]]))
            pos += need
        if self.shuffle:
            # spread the moved images over the epoch
            rng = np.random.default_rng([self.seed, self.epoch, 2])
            lists = [rng.permutation(items) for items in lists]
        return lists

    def _padded(self, indices: np.ndarray) -> np.ndarray:
        """The epoch's list with :class:`UODBSampler`'s round-up padding."""
        total = self.num_samples * self.world_size
        if total > len(indices):
            indices = np.tile(indices, -(-total // len(indices)))[:total]
        return indices

    def rank_indices(self) -> np.ndarray:
        """This rank's indices of the current epoch, in order.

        Returns:
            np.ndarray: int64 dataset indices.
        """
        return self._rank_lists()[self.rank].astype(np.int64)

    def expected_moved_fraction(self) -> float:
        """Share of this epoch's draws whose expert is on another rank.

        Returns:
            float: 0 in strict mode.
        """
        lists = self._rank_lists()
        ep_size = self.expert_parallel_size
        moved = sum(
            int((self.owner_ep_rank(items) != r % ep_size).sum())
            for r, items in enumerate(lists))
        return moved / float(sum(len(items) for items in lists))

    # ------------------------------------------------------------------
    # what the split does to the data mix
    # ------------------------------------------------------------------
    def distortion(self, batch_size: Optional[int] = None) -> Dict:
        """Measure how this epoch's split differs from the planned epoch.

        The planned epoch is :class:`UODBSampler`'s (every image of the
        epoch's draw once, with its round-up padding); the split is the
        concatenation of every rank's list.

        Args:
            batch_size (int, optional): Also report, per rank, the share of
                its batches (consecutive ``batch_size`` draws) that hold a
                single dataset.

        Returns:
            dict: ``dropped_share`` (draws of the planned epoch no rank
            makes), ``repeated_share`` (draws beyond the planned ones),
            ``planned_shares`` and ``drawn_shares`` (per dataset),
            ``max_share_diff`` (largest absolute per-dataset difference) and
            ``max_share_diff_dataset``, ``rank_datasets`` (datasets each rank
            draws) and, with ``batch_size``, ``single_dataset_batch_share``
            per rank.
        """
        planned = self._padded(self._global_indices())
        lists = self._rank_lists()
        drawn = np.concatenate(lists)
        size = len(self._ids)
        planned_counts = np.bincount(planned, minlength=size)
        drawn_counts = np.bincount(drawn, minlength=size)
        missing = np.clip(planned_counts - drawn_counts, 0, None).sum()
        extra = np.clip(drawn_counts - planned_counts, 0, None).sum()
        k = len(self.uodb.dataset_names)
        planned_shares = np.bincount(self._ids[planned], minlength=k) / len(planned)
        drawn_shares = np.bincount(self._ids[drawn], minlength=k) / len(drawn)
        diff = np.abs(drawn_shares - planned_shares)
        worst = int(np.argmax(diff))
        names = self.uodb.dataset_names
        result = dict(
            dropped_share=float(missing / len(planned)),
            repeated_share=float(extra / len(drawn)),
            planned_shares=planned_shares,
            drawn_shares=drawn_shares,
            max_share_diff=float(diff[worst]),
            max_share_diff_dataset=names[worst],
            rank_datasets=[
                [names[d] for d in np.unique(self._ids[items])]
                for items in lists
            ])
        if batch_size is not None:
            shares = []
            for items in lists:
                ids = self._ids[items]
                batches = [ids[i:i + batch_size]
                           for i in range(0, len(ids), batch_size)]
                single = sum(len(np.unique(b)) == 1 for b in batches)
                shares.append(single / max(1, len(batches)))
            result['single_dataset_batch_share'] = shares
        return result

    def distortion_message(self) -> str:
        """A warning text with :meth:`distortion`'s figures.

        Returns:
            str: The message.
        """
        d = self.distortion()
        names = self.uodb.dataset_names
        changes = ', '.join(
            f'{n} {100 * p:.1f}% -> {100 * q:.1f}%'
            for n, p, q in zip(names, d['planned_shares'], d['drawn_shares'])
            if abs(p - q) >= 0.0005)
        single = [r for r, ds in enumerate(d['rank_datasets']) if len(ds) == 1]
        text = (
            f'ExpertLocalitySampler(strict=True) changes the planned data mix: '
            f'this epoch drops {100 * d["dropped_share"]:.1f}% of its images '
            f'and repeats {100 * d["repeated_share"]:.1f}%; per-dataset '
            f'shares (planned -> drawn): {changes or "unchanged"}; largest '
            f'difference {100 * d["max_share_diff"]:.1f} points '
            f'({d["max_share_diff_dataset"]}).')
        if single:
            text += (f' Ranks {single} draw from a single dataset.')
        return text + (' strict=False (the default) keeps every image once '
                       'per epoch and moves only the surplus.')


def default_sampler_moved_fraction(owners: np.ndarray, world_size: int,
                                   ep_size: int) -> float:
    """Share of images a stride split (``UODBSampler``/``DefaultSampler``)
    places on a rank that does not hold their expert.

    Args:
        owners (np.ndarray): EP rank of the expert of each image of the
            epoch's global (padded) index list, in order.
        world_size (int): Number of ranks.
        ep_size (int): Expert-parallel size.

    Returns:
        float: Moved share of the images.
    """
    ranks = np.arange(len(owners)) % world_size
    return float(np.mean(owners != ranks % ep_size)) if len(owners) else 0.0

