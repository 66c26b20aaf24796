# Copyright (c) mmgem contributors. All rights reserved.
"""Per-image routing information read from ``DetDataSample.metainfo``.

:class:`mmgem.datasets.UODBDataset` puts ``dataset_id``, ``dataset_name``
and ``img_id`` in every sample's metainfo (``PackDetInputs`` must list
``dataset_id`` and ``dataset_name`` in its ``meta_keys``). GEM routes an
image by its dataset id and its *bucket*, a stable hash of
``(dataset_name, img_id)`` (:func:`mmgem.planner.hashing.image_bucket`): the
bucket is a property of the image, the dataset id (given or predicted)
selects the plan row it is looked up in.
"""
from typing import List, Optional, Sequence

import torch
from mmdet.structures import SampleList
from torch import Tensor

from mmgem.planner.hashing import image_bucket

METAINFO_HINT = (
    'Use UODBDataset (it adds dataset_id/dataset_name to each sample) and '
    "list 'dataset_id' and 'dataset_name' in PackDetInputs' meta_keys.")


def _where(metainfo: dict) -> str:
    return str(metainfo.get('img_path', metainfo.get('img_id', '?')))


def dataset_ids_from_samples(batch_data_samples: SampleList,
                             num_datasets: int,
                             device: Optional[torch.device] = None) -> Tensor:
    """Dataset index of each image from ``metainfo['dataset_id']``.

    A model with a single dataset (``num_datasets == 1``) accepts samples
    without ``dataset_id`` (plain mmdet datasets) and uses 0.

    Args:
        batch_data_samples (list[DetDataSample]): The batch.
        num_datasets (int): Number of datasets the model knows.
        device (torch.device, optional): Device of the result.

    Returns:
        Tensor: ``(B,)`` int64 dataset ids.

    Raises:
        KeyError: If a sample lacks ``dataset_id`` and the model has several
            datasets.
        ValueError: If a dataset id is outside ``[0, num_datasets)``.
    """
    ids: List[int] = []
    for sample in batch_data_samples:
        meta = sample.metainfo
        if 'dataset_id' not in meta:
            if num_datasets == 1:
                ids.append(0)
                continue
            raise KeyError(
                f'image {_where(meta)} has no dataset_id in its metainfo, '
                f'which a model of {num_datasets} datasets needs. '
                f'{METAINFO_HINT} For images of unknown dataset, test with '
                'model.test_dataset_known=False (the domain classifier '
                'predicts it).')
        dataset_id = int(meta['dataset_id'])
        if not 0 <= dataset_id < num_datasets:
            raise ValueError(
                f'image {_where(meta)} has dataset_id {dataset_id}, outside '
                f'the model\'s {num_datasets} datasets (num_datasets)')
        ids.append(dataset_id)
    return torch.tensor(ids, dtype=torch.long, device=device)


def image_buckets_from_samples(batch_data_samples: SampleList,
                               device: Optional[torch.device] = None,
                               dataset_names: Optional[Sequence[str]] = None,
                               read_metainfo_dataset: bool = True) -> Tensor:
    """Stable bucket of each image, from a dataset name and its image id.

    Args:
        batch_data_samples (list[DetDataSample]): The batch; each metainfo
            should have ``img_id``.
        device (torch.device, optional): Device of the result.
        dataset_names (Sequence[str], optional): The name of the dataset each
            image is routed as (the plan's name of its true or predicted
            dataset). None reads ``dataset_name`` from the metainfo
            (``''`` when absent, as for single-dataset models).
        read_metainfo_dataset (bool): Whether the image's own dataset may be
            read from its metainfo: its ``dataset_name`` when
            ``dataset_names`` is None, and its ``img_path`` when it has no
            ``img_id``. False (a dataset-unknown test) reads neither: a
            missing ``img_id`` gives bucket 0. Defaults to True.

    Returns:
        Tensor: ``(B,)`` int64 buckets.

    Raises:
        KeyError: If a sample has neither ``img_id`` nor ``img_path`` (with
            ``read_metainfo_dataset``).
        ValueError: If ``dataset_names`` is None without
            ``read_metainfo_dataset``, or has the wrong length.
    """
    if dataset_names is None and not read_metainfo_dataset:
        raise ValueError('the dataset name of every image is needed when its '
                         'metainfo may not be read')
    if dataset_names is not None and len(dataset_names) != len(
            batch_data_samples):
        raise ValueError(f'{len(dataset_names)} dataset names for '
                         f'{len(batch_data_samples)} images')
    buckets = []
    for i, sample in enumerate(batch_data_samples):
        meta = sample.metainfo
        if dataset_names is None:
            name = str(meta.get('dataset_name', ''))
        else:
            name = str(dataset_names[i])
        if 'img_id' in meta:
            buckets.append(image_bucket(name, meta['img_id']))
        elif not read_metainfo_dataset:
            buckets.append(0)
        elif meta.get('img_path') is not None:
            buckets.append(image_bucket(name, meta['img_path']))
        else:
            raise KeyError(
                'an image has neither img_id nor img_path in its metainfo; '
                'GEM needs one of them to hash the image to its expert shard')
    return torch.tensor(buckets, dtype=torch.long, device=device)
