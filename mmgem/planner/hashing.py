# Copyright (c) mmgem contributors. All rights reserved.
"""The stable image hash that routes an image of a sharded dataset.

GEM's routing rule must give the same expert for an image on every process,
at train and at test time, so it cannot use Python's ``hash()`` of a string
(salted per process). An image's *bucket* is a 63-bit integer taken from a
BLAKE2b digest of ``"<dataset name>\\x1f<image id>"``; its expert is found by
reducing the bucket modulo the dataset's total quota and looking the result
up in the cumulative quota row of the plan::

    r = bucket % quota[d].sum()
    expert = number of e with cumsum(quota[d])[e] <= r

The same integer arithmetic is done on tensors by the MoE layers, so the plan
(numpy) and the model (torch) agree bit for bit.
"""
import hashlib
from typing import Sequence, Union

import numpy as np

ImageId = Union[int, str]


def image_bucket(dataset_name: str, image_id: ImageId) -> int:
    """Return the stable 63-bit bucket of an image.

    Args:
        dataset_name (str): Name of the dataset the image belongs to.
        image_id (int | str): The image's id inside its dataset (the COCO
            ``image_id`` written by the converters).

    Returns:
        int: A non-negative integer below ``2**63``, identical on every
        process and platform.
    """
    key = f'{dataset_name}\x1f{image_id}'.encode('utf-8')
    digest = hashlib.blake2b(key, digest_size=8).digest()
    return int.from_bytes(digest, 'little') >> 1


def route_bucket(quota_row: Sequence[int], bucket: int) -> int:
    """Map a bucket to an expert through one dataset's quota row.

    Args:
        quota_row (Sequence[int]): Images per epoch of the dataset that go to
            each expert (a row of the plan's quota table); must sum to > 0.
        bucket (int): The image's bucket from :func:`image_bucket`.

    Returns:
        int: The expert index.
    """
    row = np.asarray(quota_row, dtype=np.int64)
    total = int(row.sum())
    if total <= 0:
        raise ValueError(f'quota row {row.tolist()} routes no image (sum 0)')
    rest = bucket % total
    return int(np.count_nonzero(np.cumsum(row) <= rest))
