# Copyright (c) mmgem contributors. All rights reserved.
"""The planner's load: expected images of each dataset per epoch."""
from typing import Any, Optional

import numpy as np


def find_uodb_dataset(dataset: Any) -> Any:
    """Find the :class:`UODBDataset` inside (possibly wrapped) ``dataset``.

    Follows ``.dataset`` / ``._dataset`` attributes (mmengine's
    ``_SlicedDataset``, ``RepeatDataset`` and similar wrappers).

    Args:
        dataset (Any): A dataset.

    Returns:
        Any: The first object on the chain with ``dataset_lengths`` and
        ``sample_dataset_ids``.

    Raises:
        TypeError: If there is none.
    """
    seen, obj = set(), dataset
    while obj is not None and id(obj) not in seen:
        if hasattr(obj, 'sample_dataset_ids') and hasattr(
                obj, 'dataset_lengths'):
            return obj
        seen.add(id(obj))
        inner = getattr(obj, 'dataset', None)  # no `or`: bool() is len()
        obj = inner if inner is not None else getattr(obj, '_dataset', None)
    raise TypeError(
        f'{type(dataset).__name__} is not a UODBDataset (nor wraps one): the '
        'UODB samplers need dataset ids')


def expected_images_per_dataset(sampler: Optional[Any],
                                dataset: Any) -> np.ndarray:
    """Images of each dataset one epoch draws, summed over all ranks.

    This is the load ``n_d`` the planner balances over experts.

    Pass the training ``DataLoader`` itself when you have it: with a batch
    sampler, ``DataLoader.sampler`` is torch's ``SequentialSampler``, and the
    real sampler is ``DataLoader.batch_sampler.sampler``; this function
    follows ``batch_sampler`` then ``sampler`` until it finds one that knows
    its load.

    Args:
        sampler (Any, optional): A ``DataLoader``, a UODB sampler or batch
            sampler (anything with ``expected_images_per_dataset()``), a
            batch sampler wrapping one (e.g. mmdet's
            ``AspectRatioBatchSampler``), or None / mmengine's
            ``DefaultSampler`` / ``InfiniteSampler``, for which every image is
            drawn once per epoch.
        dataset (Any): The :class:`UODBDataset` (or a wrapper of it).

    Returns:
        np.ndarray: float64 array of K expected image counts.
    """
    seen = set()
    obj = sampler
    while obj is not None and id(obj) not in seen:
        seen.add(id(obj))
        method = getattr(obj, 'expected_images_per_dataset', None)
        if callable(method):
            return np.asarray(method(), dtype=np.float64)
        inner = getattr(obj, 'batch_sampler', None)
        obj = inner if inner is not None else getattr(obj, 'sampler', None)
    lengths = find_uodb_dataset(dataset).dataset_lengths
    return np.asarray(lengths, dtype=np.float64)
