# Copyright (c) mmgem contributors. All rights reserved.
"""What a plan for a dataloader must be made of, and how a plan differs from it."""
from typing import Any, Dict, List, Optional, Sequence

import numpy as np

from mmgem.datasets import expected_images_per_dataset, find_uodb_dataset
from mmgem.planner import GEMPlan, image_buckets, image_id_digest
from mmgem.planner.planner import check_loads

#: the largest share by which a sampler's round-up padding can scale an
#: epoch (``ceil(E / W) * W / E - 1`` is under 0.1 for E >= 10 W images)
PADDING_TOLERANCE = 0.1


def training_image_ids(dataset) -> Dict[str, List[Any]]:
    """The image ids of every dataset of a UODBDataset, as the model sees them.

    The id of an image is its data info's ``img_id`` (``img_path`` when it
    has none), the same value :func:`mmgem.models.detectors.routing_info.
    image_buckets_from_samples` hashes at train and test time.

    Args:
        dataset: A :class:`UODBDataset` (or a wrapper of one).

    Returns:
        dict[str, list]: Per dataset name, the ids of its samples (after
        ``select``, ``dataset_indices``, ``indices`` and filtering).
    """
    uodb = find_uodb_dataset(dataset)
    names = uodb.dataset_names
    ids: Dict[str, List[Any]] = {n: [] for n in names}
    for idx, d in enumerate(np.asarray(uodb.sample_dataset_ids).tolist()):
        info = uodb.get_data_info(idx)
        ids[names[d]].append(info.get('img_id', info.get('img_path')))
    return ids


def same_mix(plan_loads: Sequence[float], loads: Sequence[float],
             tolerance: float = PADDING_TOLERANCE) -> bool:
    """Whether two load vectors differ only by a sampler's padding.

    A sampler that pads every epoch to a multiple of the world size scales
    every dataset's load by one factor (``total_size / epoch_length``), which
    changes with the number of GPUs: a plan made by ``gem_plan.py`` in one
    process, or a run resumed on another number of GPUs, sees loads a few
    images per rank apart. Such loads are the same data mix (the thresholds
    are cut at the image ids, not at the padded counts). A change of any one
    dataset's share (a cut, other sampler ratios) or of the epoch's size
    beyond padding (twice the images, another ``epoch_length``) is not.

    Args:
        plan_loads (Sequence[float]): The plan's loads.
        loads (Sequence[float]): The current loads.
        tolerance (float): Largest ``|factor - 1|`` taken for padding.
            Defaults to :data:`PADDING_TOLERANCE`.

    Returns:
        bool: True if ``loads == factor * plan_loads`` for one factor with
        ``|factor - 1| <= tolerance``.
    """
    a = np.asarray(plan_loads, dtype=np.float64)
    b = np.asarray(loads, dtype=np.float64)
    if a.shape != b.shape or not np.all(a > 0) or not np.all(b > 0):
        return False
    ratio = b / a
    return bool(np.all(np.abs(ratio - ratio[0]) <= 1e-9 * ratio[0])
                and abs(ratio[0] - 1.0) <= tolerance)


def training_inputs(dataloader, num_experts: Optional[int], capacity_factor: Optional[float],
                    beta: float, similarity_spec: Dict[str, Any]) -> Dict[str, Any]:
    """What a plan for this dataloader and these settings must be made of.

    Args:
        dataloader: The training dataloader (its sampler gives the loads).
        num_experts (int, optional): Experts per MoE layer.
        capacity_factor (float, optional): The capacity factor.
        beta (float): The fairness exponent.
        similarity_spec (dict): How ``S`` is built.

    Returns:
        dict: ``dataset_names``, ``loads``, ``images``, ``image_ids``,
        ``id_digests``, ``num_experts``, ``capacity_factor``, ``beta``,
        ``similarity_spec``.
    """
    dataset = find_uodb_dataset(dataloader.dataset)
    names = list(dataset.dataset_names)
    loads = expected_images_per_dataset(dataloader, dataset)
    ids = training_image_ids(dataset)
    return dict(dataset_names=names, loads=loads, images=check_loads(names, loads),
                image_ids=ids,
                id_digests=[image_id_digest(image_buckets(n, ids[n])) for n in names],
                num_experts=num_experts, capacity_factor=capacity_factor, beta=beta,
                similarity_spec=similarity_spec)


def plan_mismatches(plan: GEMPlan, current: Dict[str, Any], with_ids: bool = True,
                    skip_unknown: bool = True) -> List[str]:
    """The fields of ``plan`` that differ from :func:`training_inputs`.

    Args:
        plan (GEMPlan): A restored or given plan.
        current (dict): :func:`training_inputs`.
        with_ids (bool): Compare the training image-id digests too.
            Defaults to True.
        skip_unknown (bool): Leave out the fields that are None in
            ``current``. Defaults to True.

    Returns:
        list[str]: One line per differing field.
    """
    keys = ('dataset_names', 'images', 'num_experts', 'capacity_factor', 'beta',
            'similarity_spec') + (('id_digests', ) if with_ids else ())
    fields = {k: current[k] for k in keys if not skip_unknown or current[k] is not None}
    if same_mix(plan.loads, current['loads']):
        fields['images'] = plan.images  # the same mix (e.g. another world size's padding)
    return plan.mismatches(**fields)
