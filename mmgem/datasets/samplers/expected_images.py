# Copyright (c) mmgem contributors. All rights reserved.
"""The planner's load: expected images of each dataset per epoch.

Dataset wrappers change what an epoch draws: mmengine's ``RepeatDataset``
repeats every index ``times`` times and ``ClassBalancedDataset`` repeats the
images of rare classes. :func:`uodb_index_map` follows such wrappers to the
:class:`UODBDataset` inside and returns, for every index of the outermost
dataset, the UODB index it reads, so samplers and loads can count datasets
in the index space the loader really uses. A wrapper that does not say
which inner sample an index reads is refused with an error naming it.
"""
from typing import Any, List, Optional, Tuple

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
        if _is_uodb(obj):
            return obj
        seen.add(id(obj))
        inner = getattr(obj, 'dataset', None)  # no `or`: bool() is len()
        obj = inner if inner is not None else getattr(obj, '_dataset', None)
    raise TypeError(
        f'{type(dataset).__name__} is not a UODBDataset (nor wraps one): the '
        'UODB samplers need dataset ids')


def _is_uodb(obj: Any) -> bool:
    return hasattr(obj, 'sample_dataset_ids') and hasattr(obj, 'dataset_lengths')


def _wrapper_map(wrapper: Any, inner_len: int) -> np.ndarray:
    """For every index of ``wrapper``, the index of its inner dataset."""
    name = type(wrapper).__name__
    if hasattr(wrapper, 'full_init'):
        wrapper.full_init()
    repeat = getattr(wrapper, 'repeat_indices', None)  # ClassBalancedDataset
    if repeat is not None:
        return np.asarray(repeat, dtype=np.int64)
    times = getattr(wrapper, 'times', None)  # RepeatDataset
    if isinstance(times, int) and len(wrapper) == times * inner_len:
        return np.tile(np.arange(inner_len, dtype=np.int64), times)
    indices = getattr(wrapper, 'indices', None)  # torch.utils.data.Subset
    if indices is not None and not callable(indices):
        return np.asarray(indices, dtype=np.int64)
    raise TypeError(
        f'{name} wraps a UODBDataset but mmgem cannot tell which of its samples each of '
        f'its indices reads (known: RepeatDataset, ClassBalancedDataset, Subset); the UODB '
        f'samplers and the planner\'s loads would be wrong, so {name} is refused. Wrap the '
        'sub-datasets inside UODBDataset instead, or drop the wrapper.')


def uodb_index_map(dataset: Any) -> Tuple[Any, Optional[np.ndarray], List[str]]:
    """Follow dataset wrappers to the :class:`UODBDataset` inside.

    Args:
        dataset (Any): A UODBDataset, or a wrapper of one (mmengine's
            ``RepeatDataset`` / ``ClassBalancedDataset``, torch's
            ``Subset``, nested).

    Returns:
        tuple: The UODBDataset; for every index of ``dataset`` the UODB
        index it reads (int64), or None when ``dataset`` is the UODBDataset
        itself; the wrapper class names, outermost first.

    Raises:
        TypeError: If there is no UODBDataset inside, or a wrapper on the
            way is not one whose index map is known (it is named).
    """
    chain, obj = [], dataset
    while not _is_uodb(obj):
        inner = getattr(obj, 'dataset', None)
        if inner is None:
            inner = getattr(obj, '_dataset', None)
        if inner is None:
            find_uodb_dataset(dataset)  # raises the usual error
        chain.append(obj)
        obj = inner
    uodb = obj
    if not chain:
        return uodb, None, []
    index = None
    inner_len = len(uodb)
    for wrapper in reversed(chain):
        step = _wrapper_map(wrapper, inner_len)
        if step.size and (step.min() < 0 or step.max() >= inner_len):
            raise TypeError(f'{type(wrapper).__name__}: its index map points outside its '
                            f'dataset of {inner_len} samples')
        index = step if index is None else index[step]
        inner_len = len(index)
    return uodb, index, [type(w).__name__ for w in chain]


def dataset_ids_of(dataset: Any) -> np.ndarray:
    """The dataset id of every index of a (possibly wrapped) UODBDataset.

    Args:
        dataset (Any): See :func:`uodb_index_map`.

    Returns:
        np.ndarray: int64 dataset id per index of ``dataset``.
    """
    uodb, index, _ = uodb_index_map(dataset)
    ids = np.asarray(uodb.sample_dataset_ids)
    return ids if index is None else ids[index]


#: Samplers that draw every index of their dataset once per epoch.
UNIFORM_SAMPLERS = ('DefaultSampler', 'InfiniteSampler', 'SequentialSampler')


def expected_images_per_dataset(sampler: Optional[Any],
                                dataset: Any) -> np.ndarray:
    """Images of each dataset one epoch draws, summed over all ranks.

    This is the load ``n_d`` the planner balances over experts.

    Pass the training ``DataLoader`` itself when you have it: with a batch
    sampler, ``DataLoader.sampler`` is torch's ``SequentialSampler``, and the
    real sampler is ``DataLoader.batch_sampler.sampler``; this function
    follows ``batch_sampler`` then ``sampler`` until it finds one that knows
    its load. For mmengine's ``DefaultSampler`` / ``InfiniteSampler`` (every
    index once per epoch), it counts the datasets over the indices of the
    loader's (or sampler's) own dataset, through its wrappers (a
    ``RepeatDataset(times=3)`` triples every load; ``ClassBalancedDataset``
    counts its repeats), scaled for ``DefaultSampler``'s ``round_up``
    padding.

    Args:
        sampler (Any, optional): A ``DataLoader``, a UODB sampler or batch
            sampler (anything with ``expected_images_per_dataset()``), a
            batch sampler wrapping one (e.g. mmdet's
            ``AspectRatioBatchSampler``), or None / mmengine's
            ``DefaultSampler`` / ``InfiniteSampler``, for which every index
            of the dataset is drawn once per epoch.
        dataset (Any): The :class:`UODBDataset` (or a wrapper of it); used
            when the sampler chain names no dataset of its own.

    Returns:
        np.ndarray: float64 array of K expected image counts.

    Raises:
        TypeError: A sampler that is not known to draw uniformly and does
            not report its load (it is named), or a wrapper whose index map
            is unknown.
    """
    seen = set()
    obj = sampler
    outer = None  # the dataset the loader / sampler really indexes
    last = None
    while obj is not None and id(obj) not in seen:
        seen.add(id(obj))
        method = getattr(obj, 'expected_images_per_dataset', None)
        if callable(method):
            return np.asarray(method(), dtype=np.float64)
        if outer is None and getattr(obj, 'dataset', None) is not None:
            outer = obj.dataset
        last = obj
        inner = getattr(obj, 'batch_sampler', None)
        obj = inner if inner is not None else getattr(obj, 'sampler', None)
    if last is not None and type(last).__name__ not in UNIFORM_SAMPLERS:
        raise TypeError(
            f'expected_images_per_dataset: the sampler {type(last).__name__} neither reports '
            'its load (expected_images_per_dataset()) nor is one of the uniform samplers '
            f'{UNIFORM_SAMPLERS}; the planner would balance the wrong loads. Use UODBSampler '
            'or give the sampler an expected_images_per_dataset() method.')
    target = dataset if outer is None else outer
    uodb = find_uodb_dataset(target)
    ids = dataset_ids_of(target)
    counts = np.bincount(ids, minlength=uodb.num_datasets).astype(np.float64)
    total = getattr(last, 'total_size', None)
    if type(last).__name__ == 'DefaultSampler' and total and len(ids):
        counts *= total / len(ids)
    return counts
