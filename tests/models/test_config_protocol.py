# Copyright (c) mmgem contributors. All rights reserved.
"""Every row of the comparison trains dataset-aware and is tested under the
same protocol; the plain-DINO reference configs are mmdet's DINO."""
from pathlib import Path

import pytest
from mmdet.models.detectors import DINO
from mmdet.registry import MODELS
from mmengine.config import Config

import mmgem  # noqa: F401
from mmgem.models import GEMDINO

REPO = Path(__file__).resolve().parents[2]
GEM_CONFIGS = REPO / 'configs' / 'gem'
FAMILIES = ['tiny_r18_mini-uodb', '4scale_r50_8xb2-36e_uodb']
ROWS = ['dino', 'moe-dino', 'damex-dino', 'gem-dino']
# the test protocol and the dataset-aware training: equal in every row
SHARED_KEYS = ('dataset_aware', 'test_dataset_known', 'restrict_test_labels',
               'domain_classifier', 'domain_loss_weight', 'num_datasets',
               'label_offsets', 'dataset_classes', 'label_merge_table',
               'test_label_space')
# what the dense row adds to mmdet's DINO
DENSE_ONLY_KEYS = SHARED_KEYS + ('moe_layers', )


def _cfg(name):
    return Config.fromfile(str(GEM_CONFIGS / name))


@pytest.mark.parametrize('family', FAMILIES)
def test_every_row_trains_and_tests_alike(family):
    rows = {row: _cfg(f'{row}-{family}.py').model for row in ROWS}
    dense = rows['dino']
    assert dense.type == 'GEMDINO' and tuple(dense.moe_layers) == ()
    assert dense.dataset_aware is True
    assert dense.domain_classifier.detach_input is True
    for row, model in rows.items():
        assert model.type == 'GEMDINO', row
        assert model.bbox_head.type == 'DatasetAwareDINOHead', row
        for key in SHARED_KEYS:
            assert model.get(key) == dense.get(key), (row, key)
        if row != 'dino':
            assert tuple(model.moe_layers), row


@pytest.mark.parametrize(
    'path', sorted(GEM_CONFIGS.rglob('*.py')), ids=lambda p: p.name)
def test_every_mmgem_config_is_dataset_aware(path):
    model = Config.fromfile(str(path)).model
    if path.name.startswith('dino-plain-'):
        assert model.type == 'DINO'
        return
    assert model.type == 'GEMDINO'
    assert model.dataset_aware is True
    assert model.bbox_head.type == 'DatasetAwareDINOHead'
    assert model.domain_classifier.detach_input is True


@pytest.mark.parametrize('family', FAMILIES)
def test_plain_dino_reference_is_the_dense_row_without_gem(family):
    plain = _cfg(f'dino-plain-{family}.py')
    dense = _cfg(f'dino-{family}.py')
    # same data, schedule and runtime
    assert {k: v for k, v in plain.items() if k != 'model'} == {
        k: v
        for k, v in dense.items() if k != 'model'
    }
    # the dense row is mmdet's DINO plus the GEMDINO keys
    stripped = dense.model.to_dict()
    for key in DENSE_ONLY_KEYS:
        stripped.pop(key, None)
    stripped.update(type='DINO')
    stripped['bbox_head']['type'] = 'DINOHead'
    expected = plain.model.to_dict()
    for model in (stripped, expected):
        model.pop('_scope_', None)
    assert stripped == expected
    if family.startswith('tiny'):  # the R-50 model is built by test_configs
        model = MODELS.build(plain.model)
        assert type(model) is DINO and not isinstance(model, GEMDINO)
