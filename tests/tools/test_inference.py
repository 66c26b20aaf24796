# Copyright (c) mmgem contributors. All rights reserved.
"""A GEM model without a training run: model.plan_file, get_flops.py, DetInferencer."""
import copy
import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from mmdet.apis import DetInferencer
from mmdet.registry import DATASETS, MODELS
from mmengine.dataset import pseudo_collate
from mmengine.registry import init_default_scope
from tool_utils import GEM_CONFIG, REPO, data_options, run_tool, tiny_gem_config

from mmgem.apis import GEMDetInferencer
from mmgem.planner import PlanError
from mmgem.utils.label_space import UnifiedLabelSpace
from mmgem.utils.mmdet_tools import mmdet_tool_path


def test_model_plan_file_installs_the_plan(mini_uodb_root, tiny_plan_file, tmp_path):
    init_default_scope('mmdet')
    cfg = tiny_gem_config(mini_uodb_root)
    saved = json.loads(tiny_plan_file.read_text())  # what the planner wrote
    def build(**kwargs):  # DINO edits the config it is built from: a copy each time
        return MODELS.build(dict(copy.deepcopy(cfg.model), **kwargs))

    model = build(plan_file=str(tiny_plan_file))
    assert model.has_plan()
    np.testing.assert_array_equal(model.installed_plan_quota(), np.array(saved['quota']))
    assert model.routing_table.plan.hash == saved['hash']  # the plan itself, kept once
    assert model.installed_plan_hash() == saved['hash']
    assert tuple(model.installed_dataset_names()) == tuple(saved['dataset_names'])
    assert not build().has_plan()  # without it, no plan

    with pytest.raises(ValueError, match=rf'plan_file={str(tiny_plan_file)!r} holds .*6 datasets'
                                         r'.*x 4 experts.*num_experts=2'):
        build(plan_file=str(tiny_plan_file), num_experts=2)
    with pytest.raises(PlanError, match='missing.json'):
        build(plan_file=str(tmp_path / 'missing.json'))


def test_mmdet_get_flops_runs_with_a_plan_file(mini_uodb_root, tiny_plan_file, tmp_path):
    out = run_tool([mmdet_tool_path('analysis_tools/get_flops.py'), str(REPO / GEM_CONFIG),
                    '--num-images', '1', '--cfg-options', f'model.plan_file={tiny_plan_file}',
                    *data_options(mini_uodb_root)], cwd=tmp_path)
    flops = next(line for line in out.splitlines() if line.startswith('Flops:'))
    assert flops.endswith('G'), flops


@pytest.fixture(scope='module')
def inferencer(tiny_gem_checkpoint):
    return GEMDetInferencer(str(REPO / GEM_CONFIG), str(tiny_gem_checkpoint), device='cpu',
                            show_progress=False)


@pytest.fixture(scope='module')
def test_dataset(mini_uodb_root):
    init_default_scope('mmdet')
    return DATASETS.build(tiny_gem_config(mini_uodb_root).test_dataloader.dataset)


def _model_predicts(model, dataset, idx, dataset_known):
    """The model's test step on one sample of the test dataset (the test loop's path)."""
    before = model.test_dataset_known
    model.test_dataset_known = dataset_known
    try:
        with torch.no_grad():
            return model.test_step(pseudo_collate([dataset[idx]]))[0]
    finally:
        model.test_dataset_known = before


def test_inferencer_with_a_given_dataset_predicts_as_the_test_loop(inferencer, test_dataset,
                                                                   tmp_path):
    quota = inferencer.model.installed_plan_quota()
    d = int(np.flatnonzero((quota > 0).sum(1) == 1)[0])  # one expert: no shard hash involved
    name = test_dataset.dataset_names[d]
    idx = int(np.flatnonzero(np.asarray(test_dataset.sample_dataset_ids) == d)[0])
    expected = _model_predicts(inferencer.model, test_dataset, idx, True).pred_instances
    img_path = test_dataset.get_data_info(idx)['img_path']

    result = inferencer(img_path, dataset=name, out_dir=str(tmp_path), no_save_pred=False,
                        pred_score_thr=0.0)
    (pred,) = result['predictions']
    np.testing.assert_allclose(pred['bboxes'], expected.bboxes.numpy(), rtol=1e-5, atol=1e-3)
    np.testing.assert_allclose(pred['scores'], expected.scores.numpy(), rtol=1e-5, atol=1e-6)
    assert pred['labels'] == expected.labels.tolist()
    lo, hi = test_dataset.label_offsets[d], test_dataset.label_offsets[d + 1]
    assert pred['labels'] and all(lo <= label < hi for label in pred['labels'])
    assert pred['dataset_id'] == d and pred['dataset_name'] == name
    assert pred['dataset_predicted'] is False and pred['label_space'] == 'concat'
    assert all(n.startswith(f'{name}/') for n in pred['label_names'])
    base = img_path.rsplit('/', 1)[-1]
    assert (tmp_path / 'vis' / name / base).is_file()
    assert (tmp_path / 'preds' / name / base.replace('.jpg', '.json')).is_file()
    assert inferencer.model.test_dataset_known  # the config's protocol is restored


def test_inferencer_without_a_dataset_routes_by_the_domain_classifier(inferencer, test_dataset,
                                                                      tmp_path):
    """Unified labels by class name (no dataset decision on labels); the
    domain classifier's guess routes and is reported."""
    names = test_dataset.dataset_names
    unified = UnifiedLabelSpace.from_dataset_meta(test_dataset.metainfo).names
    for d in range(0, len(names), 2):  # three domains keep it short
        idx = int(np.flatnonzero(np.asarray(test_dataset.sample_dataset_ids) == d)[0])
        expected = _model_predicts(inferencer.model, test_dataset, idx, False)
        img = test_dataset.get_data_info(idx)['img_path']
        (pred,) = inferencer(img, out_dir=str(tmp_path), pred_score_thr=0.0)['predictions']
        guess = int(expected.pred_dataset_id)
        assert pred['dataset_id'] == guess and pred['dataset_name'] == names[guess]
        assert pred['dataset_predicted'] is True and pred['label_space'] == 'unified'
        # (the image's shard hash differs from the test loop's: img_path, not the COCO id)
        assert expected.pred_label_space == 'unified'
        assert pred['labels'] and max(pred['labels']) < len(unified)
        assert pred['label_names'] == [unified[label] for label in pred['labels']]
        assert '/' not in ''.join(pred['label_names'])
    assert (tmp_path / 'vis' / Path(img).name).is_file()
    image = np.full((90, 120, 3), 127, np.uint8)  # an array has no path: still routed
    (pred,) = inferencer(image, dataset=None)['predictions']
    assert pred['dataset_name'] in names
    with pytest.raises(ValueError, match=r"unknown dataset 'coco'.*'natural'"):
        inferencer(image, dataset='coco')


def test_inferencer_without_weights_routes_with_plan_file(mini_uodb_root, tiny_plan_file,
                                                          test_dataset):
    cfg = tiny_gem_config(mini_uodb_root)
    cfg.model.plan_file = str(tiny_plan_file)
    inferencer = GEMDetInferencer(cfg, device='cpu', show_progress=False)
    # the config's label space, not mmdet's COCO fallback
    assert inferencer.model.dataset_meta['classes'] == test_dataset.metainfo['classes']
    img = test_dataset.get_data_info(0)['img_path']
    (pred,) = inferencer(img, dataset=0)['predictions']
    assert pred['dataset_name'] == test_dataset.dataset_names[0]


def test_plain_det_inferencer_needs_the_dataset(tiny_gem_checkpoint, test_dataset):
    """Why GEMDetInferencer exists: mmdet's gives the model no dataset_id."""
    plain = DetInferencer(str(REPO / GEM_CONFIG), str(tiny_gem_checkpoint), device='cpu',
                          show_progress=False)
    with pytest.raises(KeyError, match='no dataset_id in its metainfo'):
        plain(test_dataset.get_data_info(0)['img_path'])


def test_image_demo_prints_the_best_boxes_below_the_threshold(mini_uodb_root, tiny_gem_checkpoint,
                                                              tmp_path):
    """A briefly trained model scores below the default 0.3: image_demo.py
    still says what it found, with its score, and which threshold draws it."""
    image = next((mini_uodb_root / 'signs' / 'JPEGImages').glob('*.jpg'))
    args = [str(REPO / 'tools/image_demo.py'), str(image), str(REPO / GEM_CONFIG), '--weights',
            str(tiny_gem_checkpoint), '--dataset', 'signs', '--out-dir', str(tmp_path / 'out'),
            '--cfg-options', *data_options(mini_uodb_root)]
    out = run_tool(args, cwd=tmp_path)
    line = next(x for x in out.splitlines() if x.startswith('image 0 (signs): '))
    scores = [float(s) for s in re.findall(r' (\d\.\d{3}) \[', line)]
    assert len(scores) == 3 and scores == sorted(scores, reverse=True), line
    drawn = int(re.search(r': (\d+) boxes >= 0\.3 drawn', line).group(1))
    assert (drawn == 0) == (scores[0] < 0.3), line
    if drawn == 0:
        assert f'below {scores[0]:.3f}' in line
    # the saved prediction holds the same best score
    pred = json.loads(next((tmp_path / 'out' / 'preds').rglob('*.json')).read_text())
    assert max(pred['scores']) == pytest.approx(scores[0], abs=5e-4)
