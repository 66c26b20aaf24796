# Copyright (c) mmgem contributors. All rights reserved.
"""Tests of UODBMetric: per-dataset COCO AP equals mmdet's CocoMetric."""
import copy
import json
import re

import numpy as np
import pytest
import torch
from mmdet.evaluation import CocoMetric
from mmdet.registry import DATASETS, METRICS
from mmengine.config import Config
from mmengine.logging import MMLogger
from mmengine.registry import init_default_scope

from mmgem.evaluation import UODBMetric, format_uodb_table


@pytest.fixture(scope='module')
def test_dataset(repo_root, mini_uodb_root):
    init_default_scope('mmdet')
    cfg = Config.fromfile(
        str(repo_root / 'configs/_base_/datasets/mini_uodb.py'))
    cfg.test_dataloader.dataset.data_root = str(mini_uodb_root)
    return DATASETS.build(cfg.test_dataloader.dataset)


def _predictions(dataset, seed=0):
    """Noisy local-label predictions per image, from the ground truth."""
    rng = np.random.default_rng(seed)
    preds = []
    for idx in range(len(dataset)):
        info = dataset.get_data_info(idx)
        d = info['dataset_id']
        n_cls = len(dataset.dataset_classes[info['dataset_name']])
        off = dataset.label_offsets[d]
        boxes, labels = [], []
        for inst in info['instances']:
            if rng.random() < 0.8:
                x1, y1, x2, y2 = inst['bbox']
                jitter = rng.normal(0, 0.08 * (x2 - x1 + y2 - y1) / 2, 4)
                boxes.append([x1, y1, x2, y2] + jitter)
                labels.append(inst['bbox_label'] - off if rng.random() < 0.85
                              else rng.integers(n_cls))
        for _ in range(rng.integers(0, 3)):  # false positives
            x, y = rng.uniform(0, 100, 2)
            boxes.append([x, y, x + rng.uniform(5, 40), y + rng.uniform(5, 40)])
            labels.append(rng.integers(n_cls))
        local = dict(
            bboxes=torch.tensor(np.array(boxes).reshape(-1, 4),
                                dtype=torch.float32),
            scores=torch.tensor(rng.uniform(0.05, 1, len(boxes)),
                                dtype=torch.float32),
            labels=torch.tensor(labels, dtype=torch.int64))
        preds.append((info, local))
    return preds


def _uodb_sample(dataset, info, local, rng, pred_dataset_id=None):
    """The model's output in the concatenated label space, with extra
    high-scoring boxes labelled with other datasets' classes."""
    d = info['dataset_id']
    lo, hi = dataset.label_offsets[d], dataset.label_offsets[d + 1]
    total = dataset.label_offsets[-1]
    foreign = np.array([i for i in range(total) if not lo <= i < hi])
    n_extra = 3
    bboxes = torch.cat([local['bboxes'], local['bboxes'][:1].repeat(
        n_extra, 1) if len(local['bboxes']) else torch.zeros(n_extra, 4)])
    sample = dict(
        img_id=info['img_id'],
        ori_shape=(info['height'], info['width']),
        dataset_id=d,
        dataset_name=info['dataset_name'],
        pred_instances=dict(
            bboxes=bboxes,
            scores=torch.cat([local['scores'], torch.ones(n_extra)]),
            labels=torch.cat([
                local['labels'] + int(lo),
                torch.tensor(rng.choice(foreign, n_extra))
            ])))
    if pred_dataset_id is not None:
        sample['pred_dataset_id'] = torch.tensor(pred_dataset_id)
    return sample


def _reference(dataset, preds):
    """mmdet's CocoMetric on each dataset alone, in its own label space."""
    ref = {}
    for d, name in enumerate(dataset.dataset_names):
        metric = CocoMetric(ann_file=dataset.metainfo['ann_files'][d],
                            metric='bbox', proposal_nums=(1, 10, 100))  # DAMEX's maxDets
        metric.dataset_meta = dict(classes=dataset.dataset_classes[name])
        metric.process({}, [
            dict(img_id=info['img_id'],
                 ori_shape=(info['height'], info['width']),
                 pred_instances=local)
            for info, local in preds if info['dataset_id'] == d
        ])
        ref[name] = metric.evaluate(len(metric.results))
    return ref


def test_metric_equals_coco_metric_per_dataset(test_dataset, tmp_path):
    init_default_scope('mmdet')
    preds = _predictions(test_dataset)
    rng = np.random.default_rng(1)
    metric = METRICS.build(dict(type='UODBMetric',
                                table_file=str(tmp_path / 'table.md')))
    metric.dataset_meta = test_dataset.metainfo
    samples = [_uodb_sample(test_dataset, info, local, rng)
               for info, local in preds]
    for i in range(0, len(samples), 4):  # batches of 4, datasets mixed
        metric.process({}, samples[i:i + 4])
    results = metric.evaluate(len(samples))
    ref = _reference(test_dataset, preds)
    aps, ap50s = [], []
    for name in test_dataset.dataset_names:
        assert results[f'uodb/{name}_bbox_mAP'] == \
            ref[name]['coco/bbox_mAP']
        assert results[f'uodb/{name}_bbox_mAP_50'] == \
            ref[name]['coco/bbox_mAP_50']
        aps.append(ref[name]['coco/bbox_mAP'])
        ap50s.append(ref[name]['coco/bbox_mAP_50'])
    assert 0 < min(aps) and max(aps) < 1  # a non-trivial comparison
    assert len(set(aps)) > 1
    assert results['uodb/bbox_mAP'] == pytest.approx(np.mean(aps))
    assert results['uodb/bbox_mAP_50'] == pytest.approx(np.mean(ap50s))
    assert 'uodb/domain_acc' not in results
    # the mean first (save_best='auto' takes the first key), one '/' per key
    # (mmdet's analyze_logs keeps what follows the last '/')
    assert list(results)[:2] == ['uodb/bbox_mAP', 'uodb/bbox_mAP_50']
    assert all(key.count('/') == 1 for key in results)
    assert len({key.split('/')[-1] for key in results}) == len(results)

    table = (tmp_path / 'table.md').read_text()
    assert table == metric.last_table
    header, rule, ap_row, ap50_row, voc07_row = table.strip().split('\n')
    titles = list(test_dataset.metainfo['dataset_display_names'])
    assert [c.strip() for c in header.strip('|').split('|')] == [
        'Metric (AP, AP50: COCO box AP@[.5:.95] and @.5, maxDets=100; VOC07 AP50: '
        '11-point AP@.5)', *titles, 'Mean']
    cells = [c.strip() for c in ap_row.strip('|').split('|')]
    assert cells[0] == 'AP'
    assert cells[1:] == [f'{100 * v:.1f}' for v in aps] + \
        [f'{100 * np.mean(aps):.1f}']
    assert ap50_row.startswith('| AP50 |')


def test_foreign_labels_are_dropped_not_counted(test_dataset):
    """Predictions only in other datasets' label ranges give AP 0."""
    init_default_scope('mmdet')
    metric = UODBMetric()
    metric.dataset_meta = test_dataset.metainfo
    rng = np.random.default_rng(2)
    d = test_dataset.dataset_names.index('medical')
    preds = [(info, local) for info, local in _predictions(test_dataset)
             if info['dataset_id'] == d]
    for info, local in preds:
        sample = _uodb_sample(test_dataset, info, local, rng)
        gt_box = torch.tensor(
            [inst['bbox'] for inst in info['instances']][:1],
            dtype=torch.float32).reshape(-1, 4)
        sample['pred_instances'] = dict(  # exact boxes, foreign labels
            bboxes=gt_box, scores=torch.ones(len(gt_box)),
            labels=torch.zeros(len(gt_box), dtype=torch.int64))
        metric.process({}, [sample])
    results = metric.evaluate(len(preds))
    assert results == {'uodb/medical_bbox_mAP': 0.0,
                       'uodb/medical_bbox_mAP_50': 0.0,
                       'uodb/medical_voc07_AP50': 0.0, 'uodb/voc07_AP50': 0.0,
                       'uodb/bbox_mAP': 0.0, 'uodb/bbox_mAP_50': 0.0}


def test_domain_accuracy_and_work_dir_table(test_dataset, tmp_path):
    init_default_scope('mmdet')
    work_dir = tmp_path / 'work'
    (work_dir / '20260101_000000').mkdir(parents=True)  # as the Runner does
    MMLogger.get_instance(
        'uodb_metric_test',
        log_file=str(work_dir / '20260101_000000' / '20260101_000000.log'))
    metric = UODBMetric(method_name='GEM')
    metric.dataset_meta = test_dataset.metainfo
    rng = np.random.default_rng(3)
    preds = _predictions(test_dataset)
    k = len(test_dataset.dataset_names)
    guesses = [(info['dataset_id'] + (1 if i % 4 == 0 else 2 if i % 7 == 0 else 0)) % k
               for i, (info, _) in enumerate(preds)]
    metric.process({}, [
        _uodb_sample(test_dataset, info, local, rng, guess)
        for (info, local), guess in zip(preds, guesses)
    ])
    results = metric.evaluate(len(preds))
    truth = [info['dataset_id'] for info, _ in preds]
    # percent, as GEMDINO's training-time domain_acc
    assert results['uodb/domain_acc'] == pytest.approx(
        100 * np.mean(np.array(guesses) == np.array(truth)), abs=0.005)
    counts = {}  # (true, predicted) -> images, counted here by hand
    for t, g in zip(truth, guesses):
        counts[t, g] = counts.get((t, g), 0) + 1
    names = test_dataset.dataset_names
    for d, name in enumerate(names):
        n_d = sum(v for (t, _), v in counts.items() if t == d)
        assert results[f'uodb/{name}_domain_acc'] == pytest.approx(
            100 * counts.get((d, d), 0) / n_d, abs=0.005)
    accs = [results[f'uodb/{name}_domain_acc'] for name in names]
    assert len(set(accs)) > 1 and max(accs) < 100  # a non-trivial comparison
    balanced = np.mean([counts.get((d, d), 0) / sum(v for (t, _), v in counts.items() if t == d)
                        for d in range(len(names))])
    assert results['uodb/domain_balanced_acc'] == pytest.approx(100 * balanced, abs=0.005)
    domain_keys = [key for key in results if 'domain_' in key and key.endswith('_acc')]
    assert list(results)[-len(domain_keys):] == domain_keys  # after the APs
    table = (work_dir / 'uodb_table.md').read_text()
    assert table == metric.last_table
    assert table.startswith('| Method (AP, AP50: COCO box AP@[.5:.95] and @.5, maxDets=100; '
                            'VOC07 AP50: 11-point AP@.5) | Natural |')
    assert re.search(r'^\| GEM AP \| ', table, re.M)
    assert re.search(r'^\| GEM AP50 \| ', table, re.M)
    titles = test_dataset.metainfo['dataset_display_names']
    for d, title in enumerate(titles):
        row = re.search(rf'^\| {title} \| ([^\n]*)$', table, re.M).group(1)
        cells = [c.strip() for c in row.strip(' |').split('|')]
        assert cells[:k] == [str(counts.get((d, g), 0)) for g in range(k)], row
        assert int(cells[k]) == sum(counts.get((d, g), 0) for g in range(k))
    MMLogger.get_instance('uodb_metric_test_done')  # no log file is current


def test_missing_dataset_id_and_unseen_datasets(test_dataset):
    init_default_scope('mmdet')
    metric = UODBMetric()
    metric.dataset_meta = test_dataset.metainfo
    info, local = _predictions(test_dataset)[0]
    sample = _uodb_sample(test_dataset, info, local,
                          np.random.default_rng(0))
    bad = copy.copy(sample)
    del bad['dataset_id']
    with pytest.raises(KeyError, match="'dataset_id' to PackDetInputs"):
        metric.process({}, [bad])
    metric.process({}, [sample])
    results = metric.evaluate(1)
    name = info['dataset_name']
    assert set(results) == {f'uodb/{name}_bbox_mAP',
                            f'uodb/{name}_bbox_mAP_50', 'uodb/bbox_mAP',
                            'uodb/bbox_mAP_50', f'uodb/{name}_voc07_AP50',
                            'uodb/voc07_AP50'}
    assert '| - |' in metric.last_table


def test_table_format():
    table = format_uodb_table(['A', 'B'], {'AP': [0.5, None],
                                           'AP50': [0.25, 0.75]})
    assert table.split('\n')[2] == '| AP | 50.0 | - | 50.0 |'
    assert table.split('\n')[3] == '| AP50 | 25.0 | 75.0 | 50.0 |'
    with pytest.raises(ValueError, match="row 'AP' has 1 values"):
        format_uodb_table(['A', 'B'], {'AP': [0.5]})


# ----------------------------------------------------------------------
# dataset unknown: labels mapped by class name
# ----------------------------------------------------------------------
NAME_CLASSES = dict(a=('person', 'car'), b=('car', 'Person', 'dog'))
# unified: person 0, car 1, dog 2; concatenated: a/person 0, a/car 1,
# b/car 2, b/Person 3, b/dog 4
A_CAR = [10., 10., 50., 40.]
B_PERSONS = ([5., 5., 25., 45.], [60., 20., 90., 70.])
B_FALSE = [30., 60., 50., 90.]


def _name_meta(tmp_path):
    """Two one-image COCO datasets: a (one car), b (two persons)."""
    files = []
    for name, boxes in (('a', [('car', A_CAR)]),
                        ('b', [('Person', b) for b in B_PERSONS])):
        classes = NAME_CLASSES[name]
        cats = [dict(id=i + 1, name=c) for i, c in enumerate(classes)]
        anns = [dict(id=k + 1, image_id=1, category_id=classes.index(c) + 1,
                     bbox=[x1, y1, x2 - x1, y2 - y1], area=(x2 - x1) * (y2 - y1),
                     iscrowd=0) for k, (c, (x1, y1, x2, y2)) in enumerate(boxes)]
        path = tmp_path / f'{name}.json'
        path.write_text(json.dumps(dict(
            images=[dict(id=1, width=100, height=100, file_name='1.jpg')],
            annotations=anns, categories=cats)))
        files.append(str(path))
    return dict(dataset_names=('a', 'b'), dataset_classes=NAME_CLASSES,
                label_offsets=(0, 2, 5), ann_files=tuple(files))


def _sample(d, boxes, pred_label_space=None):
    sample = dict(
        img_id=1, ori_shape=(100, 100), dataset_id=d,
        pred_instances=dict(
            bboxes=torch.tensor([b for b, _, _ in boxes], dtype=torch.float32),
            scores=torch.tensor([s for _, s, _ in boxes], dtype=torch.float32),
            labels=torch.tensor([u for _, _, u in boxes], dtype=torch.int64)))
    if pred_label_space is not None:
        sample['pred_label_space'] = pred_label_space
    return sample


def _name_results(tmp_path, samples, **kwargs):
    init_default_scope('mmdet')
    metric = METRICS.build(dict(type='UODBMetric', voc07=False,
                                table_file=str(tmp_path / 't.md'), **kwargs))
    metric.dataset_meta = _name_meta(tmp_path)
    metric.process({}, samples)
    return metric, metric.evaluate(len(samples))


# b's image: person (right box, 0.9), a false person (0.8), person (right box,
# 0.7): precision 1 up to recall 0.5, then 2/3 up to recall 1. COCO's 101
# recall points: 51 at precision 1, 50 at 2/3 -> (51 + 50 * 2 / 3) / 101,
# at every IoU threshold (the boxes are exact).
HAND_AP_B = round((51 + 50 * 2 / 3) / 101, 3)  # 0.835


@pytest.mark.parametrize('space,person,car,dog', [('unified', 0, 1, 2),
                                                  ('concat', 0, 1, 4)])
def test_name_mapping_scores_a_sibling_datasets_same_named_class(
        tmp_path, space, person, car, dog):
    """b's persons labelled with a's 'person' (unified id, or a's label in
    the concatenated space) score by name; a's 'dog' box, a name a does not
    annotate, is dropped (it would be a first-ranked false car if it were
    mis-mapped to a's classes)."""
    samples = [
        _sample(0, [(A_CAR, 0.5, car), (B_FALSE, 0.9, dog)], space),
        _sample(1, [(list(B_PERSONS[0]), 0.9, person), (B_FALSE, 0.8, person),
                    (list(B_PERSONS[1]), 0.7, person)], space)]
    metric, results = _name_results(tmp_path, samples, label_mapping='name')
    assert HAND_AP_B == 0.835
    assert results['uodb/b_bbox_mAP'] == HAND_AP_B
    assert results['uodb/a_bbox_mAP'] == 1.0
    assert results['uodb/bbox_mAP'] == pytest.approx((1.0 + HAND_AP_B) / 2)
    assert 'labels mapped by class name' in metric.last_table
    # car, dog, person: a's labels 1, dropped, 0; b's 0, 2, 1
    kept = [metric.local_labels(d, np.array([car, dog, person]), space)
            for d in (0, 1)]
    assert kept[0].tolist() == [1, -1, 0]
    assert kept[1].tolist() == [0, 2, 1]


def test_offset_mapping_drops_a_sibling_datasets_same_named_class(tmp_path):
    """The dataset-known protocol: a's 'person' label on b's image scores 0,
    and unified labels are refused."""
    samples = [_sample(0, [(A_CAR, 0.5, 1)]),
               _sample(1, [(list(b), 0.9, 0) for b in B_PERSONS])]
    _, results = _name_results(tmp_path, samples)
    assert results['uodb/b_bbox_mAP'] == 0.0 and results['uodb/a_bbox_mAP'] == 1.0
    with pytest.raises(ValueError, match="need label_mapping='name'"):
        _name_results(tmp_path, [_sample(0, [(A_CAR, 0.5, 1)], 'unified')])
    with pytest.raises(ValueError, match='outside the unified space of 3'):
        _name_results(tmp_path, [_sample(0, [(A_CAR, 0.5, 3)], 'unified')],
                      label_mapping='name')
    with pytest.raises(ValueError, match='label_mapping must be one of'):
        METRICS.build(dict(type='UODBMetric', label_mapping='names'))


def test_name_mapping_keeps_domain_accuracy(tmp_path):
    samples = [_sample(0, [(A_CAR, 0.5, 1)], 'unified'),
               _sample(1, [(list(B_PERSONS[0]), 0.9, 0)], 'unified')]
    samples[0]['pred_dataset_id'] = 1
    samples[1]['pred_dataset_id'] = 1
    metric, results = _name_results(tmp_path, samples, label_mapping='name')
    assert results['uodb/a_domain_acc'] == 0.0
    assert results['uodb/b_domain_acc'] == 100.0
    assert 'Domain classification' in metric.last_table


def test_balanced_domain_accuracy_weighs_every_domain_alike():
    from mmgem.evaluation import domain_accuracy

    # three images of a (all right), one of b (wrong): 75 % of images, but the
    # mean of the per-domain accuracies (100 %, 0 %) is 50 %; c has no image
    res = domain_accuracy(['a', 'b', 'c'], [0, 0, 0, 1], [0, 0, 0, 0])
    assert res['domain_acc'] == 75.0
    assert res['domain_balanced_acc'] == 50.0
    assert 'c_domain_acc' not in res
