# Copyright (c) mmgem contributors. All rights reserved.
"""Start a model on K datasets from one trained on the first K - 1.

The adaptation scenario of ``mini_uodb_few_shot.py``: a detector trained on
the old domains is fine-tuned with a new (few-shot) domain added. The new
domain comes *last* in the dataset order, so the old datasets keep their
label offsets and dataset ids, and the new one's classes and id are
appended:

- :func:`expand_state_dict` copies every old weight into the K-dataset
  model; tensors that grew along their first axis (the classification
  layers and the denoising label embedding: one row per class; the domain
  classifier's output: one row per dataset) keep the old rows and take
  the new model's fresh initialisation for the appended ones. The plan
  buffers start empty, so ``GEMPlannerHook`` plans again, now with the new
  domain: the planner puts it on its own expert or with the old domains
  nearest to it;
- :class:`AlignExpertsHook` then renumbers the experts so that each keeps
  serving the old datasets it was trained on: after the new plan is
  installed it matches new to old experts by the overlap of the datasets
  they serve (Hungarian assignment on the quota tables) and permutes the
  expert weights (and a learned router's rows) accordingly. The plan
  stays exactly as GEM made it; only which trained weights sit at which
  expert index changes.
"""
import copy
import json
import os
import os.path as osp
from typing import Dict, List, Sequence, Tuple

import numpy as np
import torch
from mmdet.registry import HOOKS, MODELS
from mmengine.hooks import Hook
from mmengine.model import is_model_wrapper
from mmengine.registry import init_default_scope
from scipy.optimize import linear_sum_assignment

from mmgem.datasets import find_uodb_dataset

#: buffers that must start empty in the K-dataset model (re-planned)
FRESH = ('plan_quota', 'plan_hash', 'label_offsets')


def expand_state_dict(old: Dict[str, torch.Tensor], new: Dict[str, torch.Tensor]
                      ) -> Tuple[Dict[str, torch.Tensor], List[str]]:
    """Old weights in the new model's shapes (rows appended at the end).

    Args:
        old (dict): State dict of the model trained on K - 1 datasets.
        new (dict): State dict of the freshly initialised K-dataset model.

    Returns:
        tuple: The state dict to load and the keys that were expanded.

    Raises:
        ValueError: A key is missing on one side (other than plan buffers)
            or changed shape other than by growing its first axis.
    """
    out, expanded = {}, []
    missing = sorted(set(new) - set(old))
    extra = sorted(set(old) - set(new))
    if missing or extra:
        raise ValueError(f'the checkpoint and the new model differ in keys: missing '
                         f'{missing[:5]}, unexpected {extra[:5]}')
    for key, fresh in new.items():
        value = old[key]
        if any(part in key for part in FRESH):
            out[key] = fresh.clone()
        elif value.shape == fresh.shape:
            out[key] = value.clone()
        elif (value.dim() == fresh.dim() and value.shape[1:] == fresh.shape[1:]
              and value.shape[0] < fresh.shape[0]):
            grown = fresh.clone()
            grown[:value.shape[0]] = value
            out[key] = grown
            expanded.append(key)
        else:
            raise ValueError(f'{key}: shape {tuple(value.shape)} in the checkpoint cannot grow '
                             f'into {tuple(fresh.shape)}')
    return out, expanded


def prepare(cfg, adapt_from: dict) -> str:
    """Write the expanded checkpoint and make ``cfg`` start from it.

    Args:
        cfg (mmengine.Config): The K-dataset training config (its
            ``work_dir`` receives ``start_from_base.pth``).
        adapt_from (dict): ``checkpoint`` (the K - 1 model's) and, for
            planned models, ``plan`` (its plan: ``dataset_names`` and
            ``quota``).

    Returns:
        str: The written checkpoint, now ``cfg.load_from``.
    """
    init_default_scope('mmdet')
    torch.manual_seed(cfg.randomness.get('seed') or 0)  # the appended rows' init
    model = MODELS.build(copy.deepcopy(cfg.model))  # build() edits the dict it gets
    model.init_weights()
    if not osp.isfile(adapt_from['checkpoint']):
        raise FileNotFoundError(
            f'{adapt_from["checkpoint"]}: the base model to adapt is gone; delete its base cell '
            'to train it again')
    ckpt = torch.load(adapt_from['checkpoint'], map_location='cpu', weights_only=False)
    state, expanded = expand_state_dict(ckpt.get('state_dict', ckpt), model.state_dict())
    os.makedirs(cfg.work_dir, exist_ok=True)
    path = osp.join(cfg.work_dir, 'start_from_base.pth')
    tmp = path + '.tmp'
    torch.save(dict(state_dict=state, meta=dict(adapted_from=adapt_from['checkpoint'],
                                                expanded=expanded)), tmp)
    os.replace(tmp, path)
    cfg.load_from = path
    planned = any(h.get('type') == 'GEMPlannerHook' for h in cfg.get('custom_hooks', []))
    if adapt_from.get('plan') and planned:
        cfg.custom_hooks = list(cfg.custom_hooks) + [
            dict(type='AlignExpertsHook', old_plan=adapt_from['plan'])]
    return path


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
        with open(osp.join(runner.work_dir, 'expert_alignment.json'), 'w') as f:
            json.dump(dict(source_expert=src.tolist(), datasets=names), f)

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


def placement(plan: dict, new_domain: str, old_names: Sequence[str]) -> str:
    """Where a plan put the new domain: its own expert(s) or whose.

    Args:
        plan (dict): ``dataset_names`` and ``quota``.
        new_domain (str): The added domain.
        old_names (Sequence[str]): The old domains.

    Returns:
        str: e.g. ``'E3 (own)'`` or ``'E1 (with photo_part, clipart)'``.
    """
    quota = np.asarray(plan['quota'])
    names = list(plan['dataset_names'])
    experts = np.flatnonzero(quota[names.index(new_domain)])
    parts = []
    for e in experts:
        mates = [n for n in old_names if quota[names.index(n), e] > 0]
        parts.append(f'E{e} ' + (f'(with {", ".join(mates)})' if mates else '(own)'))
    return '; '.join(parts)


__all__ = ['expand_state_dict', 'prepare', 'expert_permutation', 'AlignExpertsHook',
           'placement']
