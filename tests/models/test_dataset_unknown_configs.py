# Copyright (c) mmgem contributors. All rights reserved.
"""Every shipped tiny config runs the dataset-unknown test.

The model of each ``configs/gem/*tiny*`` config (untrained, GEM with a
one-expert-per-dataset plan) predicts one test image of every domain with
``test_dataset_known=False`` and the images' ``dataset_id`` removed from
what the model sees; the config's ``UODBMetric`` with
``label_mapping='name'`` scores them per dataset.
"""
import copy
from pathlib import Path

import numpy as np
import pytest
import torch
from mmdet.registry import DATASETS, MODELS
from mmengine.config import Config
from mmengine.dataset import pseudo_collate
from mmengine.evaluator import Evaluator
from mmengine.registry import init_default_scope

import mmgem  # noqa: F401
from mmgem.utils.label_space import UnifiedLabelSpace

REPO = Path(__file__).resolve().parents[2]
CONFIGS = sorted(p for p in (REPO / 'configs' / 'gem').glob('*tiny*.py')
                 if not p.name.startswith('dino-plain-'))
UNKNOWN_SUFFIX = '_dataset-unknown.py'
# a config with a dataset-unknown sibling is tested through the sibling,
# whose difference is checked to be the test protocol only; the unseen-domain
# configs (*_loo-<domain>.py, test set = a domain the model was not trained
# on) are tested in tests/models/test_unseen_domain.py
RUN = [p for p in CONFIGS if (p.name.endswith(UNKNOWN_SUFFIX)
                              or not p.with_name(p.stem + UNKNOWN_SUFFIX).exists())
       and '_loo-' not in p.name]
TEST_KEYS = ('test_evaluator', 'val_evaluator')
LOADERS = ('train_dataloader', 'val_dataloader', 'test_dataloader')


def test_there_are_tiny_configs_of_every_row_and_version():
    names = {p.name for p in CONFIGS}
    for stem in ('dino', 'moe-dino', 'damex-dino', 'gem-dino'):
        for version in ('', '-v2'):
            assert f'{stem}-tiny_r18_mini-uodb{version}.py' in names
            assert f'{stem}-tiny_r18_mini-uodb{version}_dataset-unknown.py' in names


@pytest.mark.parametrize('path', [p for p in CONFIGS if p.name.endswith(UNKNOWN_SUFFIX)],
                         ids=lambda p: p.name)
def test_dataset_unknown_configs_change_only_the_test_protocol(path):
    unknown = Config.fromfile(str(path))
    known = Config.fromfile(str(path.with_name(path.name.replace(UNKNOWN_SUFFIX, '.py'))))
    assert known.model.get('test_dataset_known', True) is True
    assert unknown.model.pop('test_dataset_known') is False
    known.model.pop('test_dataset_known', None)
    assert unknown.model == known.model
    for key in TEST_KEYS:
        assert unknown[key].pop('label_mapping') == 'name'
        assert unknown[key] == known[key]
    assert {k: v for k, v in unknown.items() if k not in TEST_KEYS + ('model', )} == {
        k: v for k, v in known.items() if k not in TEST_KEYS + ('model', )}


@pytest.mark.parametrize('path', RUN, ids=lambda p: p.name)
def test_tiny_config_runs_the_dataset_unknown_test(path, request):
    _run_dataset_unknown_test(path, request)


def test_gem_soft_routing_runs_the_dataset_unknown_test(request):
    """The benchmark's 'gem_soft_unknown' row: top-2 plan rows, fused."""
    path = REPO / 'configs' / 'gem' / 'gem-dino-tiny_r18_mini-uodb-v2_dataset-unknown.py'
    _run_dataset_unknown_test(path, request, soft_routing=dict(topk=2))


def _run_dataset_unknown_test(path, request, **model_options):
    init_default_scope('mmdet')
    cfg = Config.fromfile(str(path))
    cfg.model.update(model_options)
    root = request.getfixturevalue(
        'mini_uodb_v2_root' if '-v2' in path.name else 'mini_uodb_root')
    dataset_cfg = copy.deepcopy(cfg.test_dataloader.dataset)
    dataset_cfg.data_root = f'{root}/'
    dataset = DATASETS.build(dataset_cfg)
    first = [int(np.flatnonzero(dataset.sample_dataset_ids == d)[0])
             for d in range(dataset.num_datasets)]
    data = pseudo_collate([dataset[i] for i in first])
    for sample in data['data_samples']:  # the model may not read it
        del sample.dataset_id

    cfg.model.test_dataset_known = False
    torch.manual_seed(0)
    model = MODELS.build(cfg.model)
    model.init_weights()
    if model.routing == 'gem':
        quota = np.zeros((model.num_datasets, model.num_experts), dtype=np.int64)
        quota[np.arange(model.num_datasets), np.arange(model.num_datasets) % model.num_experts] = 1
        model.install_plan(quota, None, 'test', dataset_names=dataset.dataset_names)
    model.eval()
    with torch.no_grad():
        outputs = model.test_step(data)

    space = UnifiedLabelSpace.from_dataset_meta(dataset.metainfo)
    assert model.unified_class_names() == space.names  # model and metric agree
    for out in outputs:
        assert out.pred_label_space == 'unified'
        labels = out.pred_instances.labels
        assert len(labels) and int(labels.max()) < space.num_unified
    for out, i in zip(outputs, first):  # the metric gets the true dataset back
        out.set_metainfo(dict(dataset_id=dataset.get_data_info(i)['dataset_id']))

    evaluator_cfg = copy.deepcopy(cfg.test_evaluator)
    evaluator_cfg['label_mapping'] = 'name'
    evaluator_cfg['table_file'] = str(request.getfixturevalue('tmp_path') / 't.md')
    evaluator = Evaluator(evaluator_cfg)
    evaluator.dataset_meta = dataset.metainfo
    evaluator.process(outputs, data)
    results = evaluator.evaluate(len(outputs))
    for name in dataset.dataset_names:
        assert 0 <= results[f'uodb/{name}_bbox_mAP'] <= 1
        assert f'uodb/{name}_domain_acc' in results
