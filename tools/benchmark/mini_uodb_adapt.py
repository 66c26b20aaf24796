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
- :class:`mmgem.engine.hooks.AlignExpertsHook` then renumbers the experts so that each keeps
  serving the old datasets it was trained on: after the new plan is
  installed it matches new to old experts by the overlap of the datasets
  they serve (Hungarian assignment on the quota tables) and permutes the
  expert weights (and a learned router's rows) accordingly. The plan
  stays exactly as GEM made it; only which trained weights sit at which
  expert index changes.
"""
import copy
import os
import os.path as osp
from typing import Dict, List, Sequence, Tuple

import numpy as np
import torch
from mmdet.registry import MODELS
from mmengine.registry import init_default_scope

from mmgem.engine.hooks.align_experts_hook import AlignExpertsHook, expert_permutation
from mmgem.engine.runner import load_checkpoint_file

#: entries that must start empty in the K-dataset model (re-planned)
FRESH = ('routing_table.', 'label_offsets')


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
    ckpt = load_checkpoint_file(adapt_from['checkpoint'], map_location='cpu')
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
           'placement']  # the last two re-exported from mmgem.engine
