# Copyright (c) mmgem contributors. All rights reserved.
"""Unseen domains: mini-UODB v2 with one domain held out of training.

The ``*_loo-watercolor.py`` configs train on the ten other v2 domains and
test on watercolor with the dataset unknown: the model, its label space and
GEM's plan cover the ten; the metric matches the held-out domain's classes
to the ten's unified label space by name; GEM routes a held-out image
through the plan row of the domain classifier's top prediction.
"""
import copy
import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from mmdet.registry import DATASETS, MODELS
from mmengine.config import Config
from mmengine.dataset import pseudo_collate
from mmengine.evaluator import Evaluator
from mmengine.registry import init_default_scope
from mmengine.runner import Runner

import mmgem  # noqa: F401
from mmgem.datasets.mini_uodb_v2_meta import MINI_UODB_V2_CLASSES, MINI_UODB_V2_DATASETS
from mmgem.engine import GEMPlannerHook, MoERoutingVisualizationHook
from mmgem.engine.planning import PlanningService
from mmgem.evaluation import UODBMetric
from tools.benchmark import mini_uodb_loo as loo

REPO = Path(__file__).resolve().parents[2]
HOLDOUT = 'watercolor'
TEN = [n for n in MINI_UODB_V2_DATASETS if n != HOLDOUT]
LOO = {m: REPO / 'configs' / 'gem' / f'{stem}-tiny_r18_mini-uodb-v2_loo-watercolor.py'
       for m, (_, stem) in loo.METHODS.items()}


def _cfg(method: str, root=None) -> Config:
    cfg = Config.fromfile(str(LOO[method]))
    if root is not None:
        for name in ('train_dataloader', 'val_dataloader', 'test_dataloader'):
            cfg[name].dataset.data_root = f'{root}/'
    return cfg


@pytest.mark.parametrize('method', list(LOO))
def test_loo_configs_change_only_the_held_out_domain(method):
    cfg = _cfg(method)
    unknown = Config.fromfile(str(LOO[method]).replace('_loo-watercolor', '_dataset-unknown'))
    offsets = np.cumsum([0] + [len(MINI_UODB_V2_CLASSES[n]) for n in TEN]).tolist()
    assert cfg.train_dataloader.dataset.select == TEN
    for split in ('val', 'test'):
        assert cfg[f'{split}_dataloader'].dataset.select == [HOLDOUT]
        evaluator = cfg[f'{split}_evaluator']
        assert evaluator.label_mapping == 'name'
        assert evaluator.model_dataset_names == TEN
        assert [list(c) for c in evaluator.model_dataset_classes] == [
            list(MINI_UODB_V2_CLASSES[n]) for n in TEN]
    model, other = cfg.model.to_dict(), unknown.model.to_dict()
    assert model.pop('num_datasets') == 10 and model.pop('label_offsets') == offsets
    assert [list(c) for c in model.pop('dataset_classes')] == [
        list(MINI_UODB_V2_CLASSES[n]) for n in TEN]
    assert model['bbox_head'].pop('num_classes') == offsets[-1]
    assert model['test_dataset_known'] is False
    for key in ('num_datasets', 'label_offsets', 'dataset_classes'):
        other.pop(key)
    other['bbox_head'].pop('num_classes')
    assert model == other
    # the benchmark's overrides for another held-out domain agree with the config
    cfg.merge_from_dict(loo.loo_overrides(str(LOO[method]), HOLDOUT))
    plain = [json.loads(json.dumps(c.to_dict())) for c in (cfg, _cfg(method))]
    assert plain[0] == plain[1]


def test_held_out_domain_has_no_training_image_and_the_plan_covers_the_ten(
        mini_uodb_v2_root):
    init_default_scope('mmdet')
    cfg = _cfg('gem', mini_uodb_v2_root)
    loader_cfg = copy.deepcopy(cfg.train_dataloader)
    loader_cfg.update(num_workers=0, persistent_workers=False)
    loader = Runner.build_dataloader(loader_cfg, seed=0)
    dataset = loader.dataset
    dataset.full_init()
    assert list(dataset.dataset_names) == TEN
    assert len(dataset.dataset_lengths) == 10 and min(dataset.dataset_lengths) > 0
    paths = [dataset.get_data_info(i)['img_path'] for i in range(len(dataset))]
    assert not [p for p in paths if f'/{HOLDOUT}/' in p]
    assert dataset.label_offsets.tolist() == list(cfg.model.label_offsets)
    model_classes = [list(c) for c in cfg.model.dataset_classes]
    assert [list(dataset.dataset_classes[n]) for n in TEN] == model_classes

    service = PlanningService(dict(similarity=dict(sources=dict(labels=1.0)), solver='ECOS'))
    plan = service.make_plan(loader, num_experts=cfg.model.num_experts)
    assert list(plan.dataset_names) == TEN
    assert plan.quota.shape == (10, cfg.model.num_experts)
    assert (plan.quota.sum(axis=1) > 0).all()


def _box_sample(img_id, boxes, labels, scores, pred_dataset_id, space='unified'):
    return dict(
        img_id=img_id, dataset_id=0, ori_shape=(100, 100), pred_label_space=space,
        pred_dataset_id=pred_dataset_id,
        pred_instances=dict(bboxes=torch.tensor(boxes, dtype=torch.float32),
                            scores=torch.tensor(scores), labels=torch.tensor(labels)))


def test_held_out_box_of_a_shared_class_scores_by_name(tmp_path):
    # the model's two training domains and their unified space by name:
    # car 0, pedestrian 1, cyclist 2, person 3, dog 4
    model_names = ['street', 'comic']
    model_classes = [('car', 'pedestrian', 'cyclist'), ('person', 'car', 'dog')]
    # the unseen domain, in another class order (dog 0, person 1, cat 2)
    held_out = ('dog', 'person', 'cat')
    gt = [[10, 10, 20, 20], [50, 50, 40, 40], [60, 5, 30, 20]]  # xywh: dog, person, cat
    ann = dict(
        images=[dict(id=1, file_name='a.jpg', width=100, height=100)],
        categories=[dict(id=i + 1, name=c) for i, c in enumerate(held_out)],
        annotations=[dict(id=i + 1, image_id=1, category_id=i + 1, bbox=b, area=b[2] * b[3],
                          iscrowd=0) for i, b in enumerate(gt)])
    ann_file = tmp_path / 'test.json'
    ann_file.write_text(json.dumps(ann))
    metric = UODBMetric(label_mapping='name', voc07=False, table_file=str(tmp_path / 't.md'),
                        model_dataset_names=model_names, model_dataset_classes=model_classes)
    metric.dataset_meta = dict(
        dataset_names=(HOLDOUT, ), dataset_classes={HOLDOUT: held_out},
        label_offsets=(0, 3), ann_files=(str(ann_file), ), dataset_display_names=('Wc', ))
    xyxy = [[x, y, x + w, y + h] for x, y, w, h in gt]
    # dog box as dog (.9): TP; person box as pedestrian (.95): no such class
    # in the held-out domain, dropped; cat box as car (.8): dropped; a false
    # person (.6) ranked above the true person (.3)
    sample = _box_sample(
        1, [xyxy[0], xyxy[1], xyxy[2], [0, 60, 20, 80], xyxy[1]], [4, 1, 0, 3, 3],
        [0.9, 0.95, 0.8, 0.6, 0.3], pred_dataset_id=1)
    metric.process({}, [sample])
    results = metric.compute_metrics(metric.results)
    # per class with ground truth: dog 1, person 0.5 (one FP above the TP: the
    # precision envelope is 1/2 at every recall), cat 0 -> mean 0.5
    assert results['bbox_mAP'] == pytest.approx(0.5)
    assert results['bbox_mAP_50'] == pytest.approx(0.5)
    assert results['watercolor_routed_comic'] == 100.0
    assert 'domain_acc' not in results
    with pytest.raises(ValueError, match='outside the unified space'):
        metric.local_labels(0, np.array([5]), 'unified')  # 5 names in the model's space
    with pytest.raises(ValueError, match='test_dataset_known=False'):
        metric.local_labels(0, np.array([0]), 'concat')  # would have read dataset_id


def test_gem_routes_held_out_images_through_the_classifiers_known_row(
        mini_uodb_v2_root, monkeypatch, tmp_path):
    init_default_scope('mmdet')
    cfg = _cfg('gem', mini_uodb_v2_root)
    dataset = DATASETS.build(cfg.test_dataloader.dataset)
    assert list(dataset.dataset_names) == [HOLDOUT]
    data = pseudo_collate([dataset[i] for i in range(2)])
    # the held-out images keep their test-set dataset_id 0, which is the
    # model's photo_full: the model may not read it
    assert [s.dataset_id for s in data['data_samples']] == [0, 0]
    torch.manual_seed(0)
    model = MODELS.build(cfg.model)
    model.init_weights()
    expert_of_row = [d % 3 for d in range(10)]
    expert_of_row[TEN.index('comic')] = 3  # the only row on expert 3
    quota = np.zeros((10, model.num_experts), dtype=np.int64)
    quota[np.arange(10), expert_of_row] = 1
    model.install_plan(quota, None, 'test', dataset_names=TEN)
    model.eval()
    routed = []
    original = model._routing

    def spy(*args, **kwargs):
        out = original(*args, **kwargs)
        routed.append(out)
        return out

    monkeypatch.setattr(model, '_routing', spy)
    last = model.domain_classifier.mlp[-1]
    for target in (TEN.index('comic'), TEN.index('crowd')):
        with torch.no_grad():  # the classifier's top prediction is `target`
            last.weight.zero_()
            last.bias.copy_(torch.nn.functional.one_hot(torch.tensor(target), 10) * 10.0)
            routed.clear()
            outputs = model.test_step(copy.deepcopy(data))
        batch = routed[-1]['batch']
        assert routed[-1]['known_dataset_ids'] is None
        assert batch.dataset_ids.tolist() == [target, target]
        assert routed[-1]['domain_logits'].argmax(dim=1).tolist() == [target, target]
        for ffn in model.moe_ffns():
            experts = ffn.routing_stats['token_experts']
            assert (experts == expert_of_row[target]).all()
        assert [o.pred_dataset_id for o in outputs] == [target, target]
        assert all(o.pred_label_space == 'unified' for o in outputs)

    evaluator_cfg = copy.deepcopy(cfg.test_evaluator)
    evaluator_cfg['table_file'] = str(tmp_path / 't.md')
    evaluator = Evaluator(evaluator_cfg)
    evaluator.dataset_meta = dataset.metainfo
    evaluator.process(outputs, data)
    results = evaluator.evaluate(len(outputs))
    assert 0 <= results['uodb/watercolor_bbox_mAP'] <= 1
    assert results['uodb/watercolor_routed_crowd'] == 100.0


def test_hooks_take_a_held_out_test_set(mini_uodb_v2_root):
    init_default_scope('mmdet')
    cfg = _cfg('gem', mini_uodb_v2_root)
    test_set = DATASETS.build(cfg.test_dataloader.dataset)
    loop = SimpleNamespace(dataloader=SimpleNamespace(dataset=test_set))
    runner = SimpleNamespace(_train_loop=None, _val_loop=None, _test_loop=loop,
                             test_dataloader=loop.dataloader)
    # a checkpoint's plan is checked against the test set only when the model
    # reads the test images' dataset ids
    for known, names in ((False, None), (True, (HOLDOUT, ))):
        model = SimpleNamespace(test_dataset_known=known)
        assert GEMPlannerHook._runner_dataset_names(runner, model) == names
    # the routing tally has one row per evaluated dataset, not per model dataset
    runner.model = SimpleNamespace(moe_ffns=lambda: ['layer 0', 'layer 2'], num_datasets=10,
                                   num_experts=4, record_routing=False)
    hook = MoERoutingVisualizationHook()
    hook.before_test_epoch(runner)
    assert hook.tally.counts.shape == (2, 1, 4)
    assert runner.model.record_routing is True


def _cell(ap, ap50=0.0, routed=None):
    metrics = {f'uodb/{HOLDOUT}_bbox_mAP': ap, f'uodb/{HOLDOUT}_bbox_mAP_50': ap50}
    metrics.update({f'uodb/{HOLDOUT}_routed_{n}': v for n, v in (routed or {}).items()})
    return dict(metrics=metrics, iters=2, machine=dict(machine='x86_64', cpus=2, threads=1,
                                                       torch='2'),
                train_names=TEN, lengths=[3] * 10, test_images=[6], train_fingerprint=str(ap),
                train_s=60.0, test_s=6.0, iter_s=30.0, plan=None)


def test_loo_report_reads_cells_and_the_reference(tmp_path):
    from tools.benchmark.cell_store import CellStore
    results, reference = tmp_path / 'loo', tmp_path / 'table'
    CellStore(str(results)).save('gem_s0', _cell(0.20, 0.40, dict(comic=75.0, clipart=25.0)))
    CellStore(str(results)).save('dino_s0', _cell(0.15))
    CellStore(str(results)).save('damex_s0', _cell(0.10))
    CellStore(str(reference)).save('gem_unknown_s0', _cell(0.30))
    CellStore(str(reference)).save('gem_s0', _cell(0.99))  # the unknown row wins
    CellStore(str(reference)).save('dino_s0', _cell(0.25))
    args = loo.parse_args(['--seeds', '0', '--render', '--results-dir', str(results),
                           '--reference', str(reference)])
    lines = loo.render(args).splitlines()
    assert '| GEM | 1 | 20.0 | 40.0 | Comic 75%, Clipart 25% | 30.0 (dataset unknown, 1) |' in lines
    assert '| DINO (mixed) | 1 | 15.0 | 0.0 | - | 25.0 (dataset known, 1) |' in lines
    assert '| DAMEX | 1 | 10.0 | 0.0 | - | - |' in lines
    assert '| GEM − DINO (mixed) | +5.0 (n=1) |' in lines
    assert '| GEM − DAMEX | +10.0 (n=1) |' in lines
