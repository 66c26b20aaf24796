# Copyright (c) mmgem contributors. All rights reserved.
"""Renumber the experts of a model adapted from one with a dataset fewer."""
import json
import os.path as osp
from typing import Sequence

import numpy as np
import torch
from mmdet.registry import HOOKS
from mmengine.hooks import Hook
from mmengine.model import is_model_wrapper
from scipy.optimize import linear_sum_assignment

from mmgem.datasets import find_uodb_dataset
from mmgem.utils import atomic_write


def expert_permutation(new_quota: np.ndarray, old_quota: np.ndarray) -> np.ndarray:
    """Which old expert each new expert should take the weights of.

    Args:
        new_quota (np.ndarray): ``(K - 1, M)`` rows of the new plan for the
            old datasets (in the old order).
        old_quota (np.ndarray): ``(K - 1, M)`` old plan.

    Returns:
        np.ndarray: ``src`` with ``src[e]`` the old expert whose weights new
        expert ``e`` takes; maximises the summed overlap
        ``sum_d new_share[d, e] * old_share[d, src[e]]`` (ties: lowest
        indices, scipy's Hungarian).
    """
    new_share = new_quota / np.maximum(new_quota.sum(1, keepdims=True), 1)
    old_share = old_quota / np.maximum(old_quota.sum(1, keepdims=True), 1)
    overlap = new_share.T @ old_share
    rows, cols = linear_sum_assignment(-overlap)
    src = np.empty(overlap.shape[0], dtype=np.int64)
    src[rows] = cols
    return src


@HOOKS.register_module()
class AlignExpertsHook(Hook):
    """Renumber the experts of a model started from a K - 1 dataset one.

    For fine-tuning a trained GEM / DAMEX model with a new dataset appended
    (``tools/benchmark/mini_uodb_adapt.py`` expands the checkpoint): the
    re-made plan may number its experts differently from the old one, so
    each expert's trained weights are moved to the new expert that serves
    the same old datasets. The plan itself is not changed.

    Runs after ``GEMPlannerHook`` (priority ``HIGH`` vs ``VERY_HIGH``) in
    ``before_train``: reads the installed plan, matches it to the old plan
    (:func:`expert_permutation`) and permutes, in every MoE layer, each
    parameter whose first axis is the expert axis. Writes the permutation
    to ``<work_dir>/expert_alignment.json``.

    Args:
        old_plan (dict): ``dataset_names`` and ``quota`` of the old plan.
    """

    priority = 'HIGH'

    def __init__(self, old_plan: dict) -> None:
        self.old_names = list(old_plan['dataset_names'])
        self.old_quota = np.asarray(old_plan['quota'], dtype=np.float64)

    def before_train(self, runner) -> None:
        model = runner.model.module if is_model_wrapper(runner.model) else runner.model
        names = list(find_uodb_dataset(runner.train_dataloader.dataset).dataset_names)
        src = self.align(model, names)
        runner.logger.info(f'AlignExpertsHook: new expert e takes old expert {src.tolist()}[e]')
        atomic_write(osp.join(runner.work_dir, 'expert_alignment.json'),
                     json.dumps(dict(source_expert=src.tolist(), datasets=names)))

    def align(self, model, names: Sequence[str]) -> np.ndarray:
        """Permute the experts of ``model`` (with its plan installed).

        Args:
            model: A GEM-DINO (``moe_ffns()``, ``installed_plan_quota()``).
            names (Sequence[str]): Its training datasets, in plan order.

        Returns:
            np.ndarray: The permutation (:func:`expert_permutation`).
        """
        names = list(names)
        missing = [n for n in self.old_names if n not in names]
        if missing:
            raise ValueError(f'AlignExpertsHook: old datasets {missing} are not trained now '
                             f'({names})')
        quota = np.asarray(model.installed_plan_quota(), dtype=np.float64)
        src = expert_permutation(quota[[names.index(n) for n in self.old_names]],
                                 self.old_quota)
        index = torch.as_tensor(src)
        with torch.no_grad():
            for ffn in model.moe_ffns():
                for _, param in ffn.named_parameters():
                    if param.dim() >= 1 and param.shape[0] == ffn.num_experts:
                        param.copy_(param[index].clone())
        return src
