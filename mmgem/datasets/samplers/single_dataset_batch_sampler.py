# Copyright (c) mmgem contributors. All rights reserved.
"""A batch sampler whose every batch comes from a single dataset."""
from typing import Iterator, List

import numpy as np
from mmdet.registry import DATA_SAMPLERS
from torch.utils.data import BatchSampler, Sampler

from .expected_images import expected_images_per_dataset, uodb_index_map


@DATA_SAMPLERS.register_module()
class SingleDatasetBatchSampler(BatchSampler):
    """Fill each batch from one dataset only (the UODB paper's scheme).

    Indices from ``sampler`` are put in one bucket per dataset (and, with
    ``aspect_ratio_grouping``, per orientation ``w < h`` / ``w >= h`` as in
    mmdet's ``AspectRatioBatchSampler``); a bucket is yielded when it holds
    ``batch_size`` indices. At the end of the epoch, the partly filled buckets
    are yielded as smaller batches (still single-dataset) unless
    ``drop_last``. So the sampler decides how often each dataset is seen and
    this class only groups, in mmdet's batch-sampler style.

    Args:
        sampler (Sampler): The index sampler, e.g. :class:`UODBSampler` or
            mmengine's ``DefaultSampler``, over a :class:`UODBDataset` (or a
            ``RepeatDataset`` / ``ClassBalancedDataset`` of one: indices
            are grouped by the dataset of the sample they read).
        batch_size (int): Images per batch.
        drop_last (bool): Drop the partly filled batches at the end of the
            epoch. Defaults to False.
        aspect_ratio_grouping (bool): Also keep portrait and landscape images
            apart. Defaults to False.
    """

    def __init__(self,
                 sampler: Sampler,
                 batch_size: int,
                 drop_last: bool = False,
                 aspect_ratio_grouping: bool = False) -> None:
        if not isinstance(sampler, Sampler):
            raise TypeError('sampler should be an instance of ``Sampler``, '
                            f'but got {sampler}')
        if not isinstance(batch_size, int) or batch_size <= 0:
            raise ValueError('batch_size should be a positive integer value, '
                             f'but got batch_size={batch_size}')
        self.sampler = sampler
        self.batch_size = batch_size
        self.drop_last = drop_last
        self.aspect_ratio_grouping = aspect_ratio_grouping
        self.uodb, index, _ = uodb_index_map(sampler.dataset)
        self._ids = np.asarray(self.uodb.sample_dataset_ids)
        if index is not None:
            self._ids = self._ids[index]
        self._portrait = None
        if aspect_ratio_grouping:
            portrait = np.array([
                info['width'] < info['height'] for info in (
                    self.uodb.get_data_info(i)
                    for i in range(len(self.uodb)))
            ])
            self._portrait = portrait if index is None else portrait[index]

    def _bucket(self, idx: int) -> int:
        key = int(self._ids[idx]) * 2
        if self._portrait is not None:
            key += int(self._portrait[idx])
        return key

    def __iter__(self) -> Iterator[List[int]]:
        buckets = {}
        for idx in self.sampler:
            bucket = buckets.setdefault(self._bucket(idx), [])
            bucket.append(idx)
            if len(bucket) == self.batch_size:
                yield bucket[:]
                del bucket[:]
        if not self.drop_last:
            for key in sorted(buckets):
                if buckets[key]:
                    yield buckets[key][:]

    def __len__(self) -> int:
        """The number of batches of the current epoch.

        Counted exactly from the sampler's indices when it is finite (its
        ``__iter__`` is deterministic per epoch); otherwise mmdet's estimate.
        """
        try:
            indices = np.fromiter(iter(self.sampler), dtype=np.int64,
                                  count=len(self.sampler))
        except (TypeError, ValueError):
            n = len(self.sampler)
            return n // self.batch_size if self.drop_last else \
                -(-n // self.batch_size)
        keys = self._ids[indices] * 2
        if self._portrait is not None:
            keys = keys + self._portrait[indices]
        sizes = np.bincount(keys)
        full = sizes // self.batch_size
        if self.drop_last:
            return int(full.sum())
        return int(full.sum() + np.count_nonzero(sizes % self.batch_size))

    def expected_images_per_dataset(self) -> np.ndarray:
        """The sampler's expected images per dataset per epoch (all ranks).

        With ``drop_last`` each rank drops fewer than ``batch_size`` images
        per bucket and epoch, which this does not subtract.

        Returns:
            np.ndarray: float64 array of length K.
        """
        return expected_images_per_dataset(self.sampler, self.sampler.dataset)
