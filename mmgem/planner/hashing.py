# Copyright (c) mmgem contributors. All rights reserved.
"""The routing rule of a GEM plan: stable image buckets and bucket thresholds.

GEM's routing rule must give the same expert for an image on every process,
at train and at test time, so it cannot use Python's ``hash()`` of a string
(salted per process). An image's *bucket* is an integer in
``[0, 2**63 - 1)`` taken from a BLAKE2b digest of
``"<dataset name>\\x1f<image id>"``.

Each dataset ``d`` owns a non-decreasing row of M *thresholds*
``T[d, 0] <= ... <= T[d, M - 1]``; expert ``e`` serves the buckets in
``[T[d, e - 1], T[d, e])`` (``T[d, -1] = 0``) and an image's expert is::

    expert = number of e with T[d, e] <= bucket

An expert with no quota for ``d`` has an empty range (its threshold equals
its predecessor's), and the last expert with a quota ends at
``BUCKET_END = 2**63 - 1``, above every bucket, so every bucket lands on an
expert with a quota.

**Exact quotas.** When the training image ids of ``d`` are known
(:func:`bucket_thresholds` with ``buckets``), the thresholds cut the sorted
buckets of those images at the cumulative quota, so exactly ``quota[d, e]``
training images (scaled by largest remainder when the dataset has a
different number of images than its load) go to expert ``e``: the realised
per-expert loads equal the quota table, and capacity holds for every epoch,
not only in expectation. Images not seen when planning (test images, new
ids) fall between the same thresholds, deterministically. Without ids the
thresholds are the quantiles of the uniform bucket range, so the quota is
met in expectation.

The same integer comparison is done on tensors by the model
(:mod:`mmgem.models.layers.plan_routing`), so the plan (numpy) and the model
(torch) agree bit for bit.
"""
import hashlib
from typing import List, Optional, Sequence, Union

import numpy as np

from .rounding import largest_remainder

ImageId = Union[int, str]

#: end of the bucket range: every bucket is below it
BUCKET_END = 2**63 - 1


def image_bucket(dataset_name: str, image_id: ImageId) -> int:
    """Return the stable bucket of an image.

    Args:
        dataset_name (str): Name of the dataset the image belongs to.
        image_id (int | str): The image's id inside its dataset (the COCO
            ``image_id`` written by the converters).

    Returns:
        int: An integer in ``[0, 2**63 - 1)``, identical on every process
        and platform.
    """
    key = f'{dataset_name}\x1f{image_id}'.encode('utf-8')
    digest = hashlib.blake2b(key, digest_size=8).digest()
    # 63 bits, and never BUCKET_END itself (the last range is half open)
    return min(int.from_bytes(digest, 'little') >> 1, BUCKET_END - 1)


def image_buckets(dataset_name: str, image_ids: Sequence[ImageId]) -> np.ndarray:
    """Buckets of many images of one dataset.

    Args:
        dataset_name (str): The dataset's name.
        image_ids (Sequence[int | str]): Image ids.

    Returns:
        np.ndarray: (N,) int64 buckets, in the order of ``image_ids``.
    """
    return np.fromiter((image_bucket(dataset_name, i) for i in image_ids), dtype=np.int64,
                       count=len(image_ids))


def bucket_thresholds(quota_row: Sequence[int],
                      buckets: Optional[Sequence[int]] = None) -> np.ndarray:
    """Thresholds of one dataset's routing row.

    Args:
        quota_row (Sequence[int]): Images per epoch of the dataset for each
            expert (a row of the plan's quota table); must sum to > 0.
        buckets (Sequence[int], optional): Buckets of the dataset's training
            images. With them the thresholds give expert ``e`` exactly
            ``quota_row[e]`` of these images when their number equals the
            row sum (otherwise the largest-remainder share of the row), and
            exactly that whenever the buckets are distinct. Without them the
            thresholds are quantiles of the uniform bucket range.

    Returns:
        np.ndarray: (M,) int64 non-decreasing thresholds, the last expert
        with a quota ending at :data:`BUCKET_END`.
    """
    row = np.asarray(quota_row, dtype=np.int64).reshape(-1)
    total = int(row.sum())
    if total <= 0 or np.any(row < 0):
        raise ValueError(f'quota row {row.tolist()} routes no image (it must be >= 0 with a '
                         'positive sum)')
    cum = np.cumsum(row)
    last = int(np.flatnonzero(row)[-1])
    out = np.empty(row.size, dtype=np.int64)
    if buckets is not None and len(buckets) == 0:
        buckets = None  # no image to cut at: fall back to the quantiles
    if buckets is None:
        # exact integer quantiles of [0, BUCKET_END): floor(BUCKET_END * cum / total)
        for e, c in enumerate(cum.tolist()):
            out[e] = BUCKET_END * int(c) // total
    else:
        sorted_b = np.sort(np.asarray(buckets, dtype=np.int64).reshape(-1), kind='stable')
        n = sorted_b.size
        if n and (sorted_b[0] < 0 or sorted_b[-1] >= BUCKET_END):
            raise ValueError('image buckets must lie in [0, 2**63 - 1)')
        counts = row if n == total else largest_remainder(row, n)
        ends = np.cumsum(counts)
        for e, c in enumerate(ends.tolist()):
            # expert e ends where the next expert's first image begins
            out[e] = 0 if c == 0 else (BUCKET_END if c >= n else int(sorted_b[c]))
    out[last:] = BUCKET_END
    return out


def threshold_errors(quota: np.ndarray, thresholds: np.ndarray,
                     names: Optional[Sequence[str]] = None) -> List[str]:
    """Why a threshold table does not fit a quota table (empty when it does).

    Every row must be non-decreasing in ``[0, BUCKET_END]``, an expert without
    quota must have an empty bucket range and the last expert with a quota
    must end at ``BUCKET_END`` (so every bucket lands on an expert with a
    quota).

    Args:
        quota (np.ndarray): (K, M) quota table.
        thresholds (np.ndarray): (K, M) thresholds.
        names (Sequence[str], optional): Dataset names for the messages.

    Returns:
        list[str]: Problems, naming the dataset.
    """
    quota = np.asarray(quota, dtype=np.int64)
    t = np.asarray(thresholds, dtype=np.int64)
    k, m = quota.shape
    if t.shape != (k, m):
        return [f'thresholds have shape {t.shape}; expected ({k}, {m})']
    names = [f'dataset {d}' for d in range(k)] if names is None else [
        f'dataset {n!r}' for n in names]
    out = []
    for d in range(k):
        row, q = t[d], quota[d]
        if not q.any():
            continue
        prev = np.concatenate([[0], row[:-1]])
        if np.any(row < 0) or np.any(np.diff(row) < 0):
            out.append(f'{names[d]}: thresholds must be non-decreasing in [0, 2**63 - 1]')
            continue
        if np.any((q == 0) & (row != prev)):
            out.append(f'{names[d]}: an expert without quota has images (quota {q.tolist()})')
        last = int(np.flatnonzero(q)[-1])
        if row[last] != BUCKET_END:
            out.append(f'{names[d]}: the last expert with a quota (e{last}) does not take the '
                       'end of the bucket range')
    return out


def expert_of_bucket(thresholds_row: Sequence[int], bucket: int) -> int:
    """Map a bucket to an expert through one dataset's threshold row.

    Args:
        thresholds_row (Sequence[int]): The dataset's row of the plan's
            thresholds (:func:`bucket_thresholds`).
        bucket (int): The image's bucket from :func:`image_bucket`.

    Returns:
        int: The expert index: the number of thresholds ``<= bucket``.
    """
    row = np.asarray(thresholds_row, dtype=np.int64)
    return int(np.count_nonzero(row <= np.int64(bucket)))


def experts_of_buckets(thresholds_row: Sequence[int], buckets: Sequence[int]) -> np.ndarray:
    """Vectorised :func:`expert_of_bucket`.

    Args:
        thresholds_row (Sequence[int]): One dataset's threshold row.
        buckets (Sequence[int]): Buckets of images of that dataset.

    Returns:
        np.ndarray: int64 expert of each bucket.
    """
    row = np.asarray(thresholds_row, dtype=np.int64)
    b = np.asarray(buckets, dtype=np.int64)
    # thresholds are sorted: the count of those <= b is a right-side search
    return np.searchsorted(row, b, side='right').astype(np.int64)


def route_bucket(quota_row: Sequence[int], bucket: int) -> int:
    """The expert of a bucket under a quota row alone (no image ids).

    The routing of a plan made from counts only: the thresholds are the
    quantiles of the bucket range (:func:`bucket_thresholds` without
    buckets), so the quota is met in expectation.

    Args:
        quota_row (Sequence[int]): One dataset's quota row (sum > 0).
        bucket (int): The image's bucket.

    Returns:
        int: The expert index.
    """
    return expert_of_bucket(bucket_thresholds(quota_row), bucket)
