# Copyright (c) mmgem contributors. All rights reserved.
"""The leave-one-domain-out configs are their dataset-unknown siblings but
for the held-out domain.

``configs/gem/<stem>-tiny_r18_mini-uodb-v2_loo-watercolor.py`` resolves to
``<stem>-tiny_r18_mini-uodb-v2_dataset-unknown.py`` with exactly the keys the
scenario changes (training selects the ten other domains, the model's label
space covers them, val / test select watercolor and the evaluators read the
model's ten) and the leave-one-out base's own ``mini_uodb_v2_loo_*`` keys
added. Compared leaf by leaf, so a change anywhere else in either config (a
key the LOO base overrode by accident, or one it forgot) fails here.
"""
import json
from pathlib import Path

import numpy as np
import pytest
from mmengine.config import Config

from mmgem.datasets.mini_uodb_v2_meta import MINI_UODB_V2_CLASSES, MINI_UODB_V2_DATASETS

CONFIGS = Path(__file__).resolve().parents[2] / 'configs' / 'gem'
STEMS = ('dino', 'damex-dino', 'gem-dino')
HOLDOUT = 'watercolor'
TEN = [n for n in MINI_UODB_V2_DATASETS if n != HOLDOUT]
#: the LOO base's names (it is a second base beside the v1 config)
LOO_KEYS = {f'mini_uodb_v2_loo_{k}' for k in (
    'holdout', 'train_names', 'train_classes', 'label_offsets', 'model', 'train_dataloader',
    'test_dataloader', 'evaluator')}


def _resolved(stem: str, scenario: str) -> dict:
    """The config ``<stem>-tiny_r18_mini-uodb-v2_<scenario>.py`` as plain JSON data."""
    cfg = Config.fromfile(str(CONFIGS / f'{stem}-tiny_r18_mini-uodb-v2_{scenario}.py'))
    return json.loads(json.dumps(cfg.to_dict()))


def _leaves(node, prefix: str = '') -> dict:
    """Dotted path -> value of every leaf of nested dicts (lists are leaves)."""
    if not isinstance(node, dict):
        return {prefix: node}
    out = {}
    for key, value in node.items():
        out.update(_leaves(value, f'{prefix}.{key}' if prefix else key))
    return out


@pytest.mark.parametrize('stem', STEMS)
def test_loo_config_is_its_dataset_unknown_sibling_but_for_the_held_out_domain(stem):
    loo, sibling = _resolved(stem, 'loo-watercolor'), _resolved(stem, 'dataset-unknown')
    assert set(loo) - set(sibling) == LOO_KEYS and set(sibling) <= set(loo)
    ours, theirs = _leaves({k: loo[k] for k in sibling}), _leaves(sibling)
    missing = object()
    changed = {k: ours.get(k, missing) for k in ours.keys() | theirs.keys()
               if ours.get(k, missing) != theirs.get(k, missing)}
    classes = [list(MINI_UODB_V2_CLASSES[n]) for n in TEN]
    offsets = np.cumsum([0] + [len(c) for c in classes]).tolist()
    assert changed == {
        'train_dataloader.dataset.select': TEN,
        'val_dataloader.dataset.select': [HOLDOUT],
        'test_dataloader.dataset.select': [HOLDOUT],
        'model.num_datasets': len(TEN),
        'model.label_offsets': offsets,
        'model.dataset_classes': classes,
        'model.bbox_head.num_classes': offsets[-1],
        'val_evaluator.model_dataset_names': TEN,
        'val_evaluator.model_dataset_classes': classes,
        'test_evaluator.model_dataset_names': TEN,
        'test_evaluator.model_dataset_classes': classes,
    }
    assert (loo['mini_uodb_v2_loo_holdout'], loo['mini_uodb_v2_loo_train_names'],
            loo['mini_uodb_v2_loo_train_classes'], loo['mini_uodb_v2_loo_label_offsets']) == (
                HOLDOUT, TEN, classes, offsets)
