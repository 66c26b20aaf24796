# Copyright (c) mmgem contributors. All rights reserved.
"""VOC07 11-point AP50 (UODB's protocol) and UODBMetric's max_dets, checked
against a hand-worked case and against mmdet's independent ``eval_map``."""
import json

import numpy as np
import pytest
import torch
from mmdet.evaluation import CocoMetric
from mmdet.evaluation.functional import eval_map
from mmdet.registry import DATASETS
from mmengine.config import Config
from mmengine.registry import init_default_scope

from mmgem.evaluation import UODBMetric
from mmgem.evaluation.functional import voc07_map


def test_hand_worked_case():
    """One class, 2 positives (+1 difficult). Detections by score: TP on A,
    duplicate on A (FP), on the difficult C (ignored), a miss (FP), TP on B.
    recall/precision: (.5, 1), (.5, .5), (.5, 1/3), (1, .5); the 11 points
    are 1 for t <= .5 (6 points) and .5 for t >= .6 (5 points):
    AP = (6 + 2.5) / 11."""
    gts = [dict(bboxes=np.array([[0, 0, 9, 9]]), labels=np.array([0])),
           dict(bboxes=np.array([[0, 0, 9, 9], [20, 20, 29, 29]]), labels=np.array([0, 0]),
                ignore=np.array([False, True]))]
    dets = [dict(bboxes=np.array([[0, 0, 9, 9], [0, 0, 9, 8]]), scores=np.array([.9, .8]),
                 labels=np.array([0, 0])),
            dict(bboxes=np.array([[20, 20, 29, 29], [50, 50, 60, 60], [1, 0, 9, 9]]),
                 scores=np.array([.7, .6, .5]), labels=np.array([0, 0, 0]))]
    out = voc07_map(dets, gts, num_classes=2)
    assert out['ap'][0] == pytest.approx(8.5 / 11)
    assert out['ap'][1] is None and out['num_gts'] == [2, 0]
    assert out['mAP'] == pytest.approx(8.5 / 11)  # class 1 has no ground truth
    # legacy (+1) widths decide this one: IoU of [0,0,9,9] and [0,0,9,4.2] is
    # 10 * 5.2 / 100 = .52 with +1, 9 * 4.2 / 81 = .467 without
    near = [dict(bboxes=np.array([[0, 0, 9, 4.2]]), scores=np.array([1.]),
                 labels=np.array([0]))]
    one = [gts[0]]
    assert voc07_map(near, one, 1)['mAP'] == pytest.approx(1.0)
    assert voc07_map(near, one, 1, legacy_coordinate=False)['mAP'] == 0.0


def _random_case(rng, num_images=30, num_classes=4):
    dets, gts = [], []
    for _ in range(num_images):
        n = rng.integers(0, 6)
        xy = rng.uniform(0, 80, (n, 2))
        boxes = np.concatenate([xy, xy + rng.uniform(5, 30, (n, 2))], 1)
        labels = rng.integers(0, num_classes, n)
        ignore = rng.random(n) < 0.15
        gts.append(dict(bboxes=boxes, labels=labels, ignore=ignore))
        keep = rng.random(n) < 0.8
        det = boxes[keep] + rng.normal(0, 3, (int(keep.sum()), 4))
        det_labels = np.where(rng.random(int(keep.sum())) < 0.85, labels[keep],
                              rng.integers(0, num_classes, int(keep.sum())))
        m = rng.integers(0, 4)  # false positives
        fxy = rng.uniform(0, 90, (m, 2))
        det = np.concatenate([det, np.concatenate([fxy, fxy + rng.uniform(5, 20, (m, 2))], 1)])
        det_labels = np.concatenate([det_labels, rng.integers(0, num_classes, m)])
        dets.append(dict(bboxes=det, scores=rng.uniform(0, 1, len(det)), labels=det_labels))
    return dets, gts


def _mmdet_eval_map(dets, gts, num_classes):
    det_results = [[np.concatenate([d['bboxes'][d['labels'] == c],
                                    d['scores'][d['labels'] == c][:, None]], 1)
                    for c in range(num_classes)] for d in dets]
    annotations = [dict(bboxes=g['bboxes'][~g['ignore']], labels=g['labels'][~g['ignore']],
                        bboxes_ignore=g['bboxes'][g['ignore']],
                        labels_ignore=g['labels'][g['ignore']]) for g in gts]
    mean_ap, results = eval_map(det_results, annotations, iou_thr=0.5, eval_mode='11points',
                                use_legacy_coordinate=True, nproc=1, logger='silent')
    return mean_ap, [r['ap'] if r['num_gts'] else None for r in results]


@pytest.mark.parametrize('seed', [0, 1, 2])
def test_equals_mmdet_eval_map_11points(seed):
    dets, gts = _random_case(np.random.default_rng(seed))
    ours = voc07_map(dets, gts, 4)
    ref_map, ref_ap = _mmdet_eval_map(dets, gts, 4)
    assert ours['mAP'] == pytest.approx(ref_map, abs=1e-6)
    for a, b in zip(ours['ap'], ref_ap):
        assert (a is None) == (b is None)
        if a is not None:
            assert a == pytest.approx(float(b), abs=1e-6)
    assert 0.1 < ours['mAP'] < 0.95  # a non-trivial case


@pytest.fixture(scope='module')
def test_dataset(repo_root, mini_uodb_root):
    init_default_scope('mmdet')
    cfg = Config.fromfile(str(repo_root / 'configs/_base_/datasets/mini_uodb.py'))
    cfg.test_dataloader.dataset.data_root = str(mini_uodb_root)
    return DATASETS.build(cfg.test_dataloader.dataset)


def _samples(dataset, rng, many: int = 0):
    """Noisy predictions in the concatenated label space; ``many`` extra
    false positives per image of the dataset's first class, scored above the
    true boxes (so keeping 100 or 300 detections per class changes AP)."""
    samples = []
    for idx in range(len(dataset)):
        info = dataset.get_data_info(idx)
        d = info['dataset_id']
        lo = dataset.label_offsets[d]
        boxes, labels = [], []
        for inst in info['instances']:
            if rng.random() < 0.85:
                x1, y1, x2, y2 = inst['bbox']
                boxes.append(np.array([x1, y1, x2, y2]) + rng.normal(0, 1.5, 4))
                labels.append(inst['bbox_label'])
        scores = list(rng.uniform(0.05, 0.5, len(boxes)))
        for _ in range(many):
            x, y = rng.uniform(0, 120, 2)
            boxes.append(np.array([x, y, x + 12, y + 12]))
            labels.append(lo)
            scores.append(rng.uniform(0.5, 1))
        samples.append(dict(
            img_id=info['img_id'], ori_shape=(info['height'], info['width']), dataset_id=d,
            dataset_name=info['dataset_name'],
            pred_instances=dict(
                bboxes=torch.tensor(np.array(boxes).reshape(-1, 4), dtype=torch.float32),
                scores=torch.tensor(scores, dtype=torch.float32),
                labels=torch.tensor(labels, dtype=torch.int64))))
    return samples


def _independent_voc07(dataset, samples, d):
    """mmdet's eval_map on dataset d, ground truth read from its JSON."""
    coco = json.loads(open(dataset.metainfo['ann_files'][d]).read())
    label = {c['id']: i for i, c in enumerate(coco['categories'])}
    n = len(coco['categories'])
    by_image = {}
    for a in coco['annotations']:
        by_image.setdefault(a['image_id'], []).append(a)
    off = dataset.label_offsets[d]
    det_results, annotations = [], []
    for s in samples:
        if s['dataset_id'] != d:
            continue
        p = s['pred_instances']
        lab = p['labels'].numpy() - off
        det = np.concatenate([p['bboxes'].numpy(), p['scores'].numpy()[:, None]], 1)
        det_results.append([det[lab == c] for c in range(n)])
        anns = by_image.get(s['img_id'], [])
        box = np.array([[a['bbox'][0], a['bbox'][1], a['bbox'][0] + a['bbox'][2],
                         a['bbox'][1] + a['bbox'][3]] for a in anns]).reshape(-1, 4)
        lbl = np.array([label[a['category_id']] for a in anns], dtype=np.int64)
        crowd = np.array([bool(a['iscrowd']) for a in anns], dtype=bool)
        annotations.append(dict(bboxes=box[~crowd], labels=lbl[~crowd],
                                bboxes_ignore=box[crowd], labels_ignore=lbl[crowd]))
    return eval_map(det_results, annotations, iou_thr=0.5, eval_mode='11points',
                    use_legacy_coordinate=True, nproc=1, logger='silent')[0]


def test_metric_voc07_column_and_max_dets(test_dataset):
    """VOC07 AP50 per dataset equals mmdet's eval_map (11 points, legacy
    coordinates) on the same predictions and ground truth; COCO AP at
    max_dets=100 equals CocoMetric with pycocotools' default maxDets (1, 10,
    100); other max_dets read AP and AP50 at that many detections."""
    from mmgem.evaluation.functional import coco_box_ap
    init_default_scope('mmdet')
    samples = _samples(test_dataset, np.random.default_rng(0), many=120)
    results = {}
    for max_dets in (100, 300):
        metric = UODBMetric(max_dets=max_dets)
        metric.dataset_meta = test_dataset.metainfo
        metric.process({}, samples)
        results[max_dets] = metric.evaluate(len(samples))
        assert metric.last_table.startswith(  # the protocol is named in the header
            f'| Metric (AP, AP50: COCO box AP@[.5:.95] and @.5, maxDets={max_dets}; VOC07 '
            'AP50: 11-point AP@.5) |')
    vocs = []
    for d, name in enumerate(test_dataset.dataset_names):
        ref = _independent_voc07(test_dataset, samples, d)
        assert results[100][f'uodb/{name}_voc07_AP50'] == pytest.approx(round(ref, 3))
        vocs.append(results[100][f'uodb/{name}_voc07_AP50'])
        coco = CocoMetric(ann_file=test_dataset.metainfo['ann_files'][d], metric='bbox',
                          proposal_nums=(1, 10, 100))
        coco.dataset_meta = dict(classes=test_dataset.dataset_classes[name])
        off = test_dataset.label_offsets[d]
        local = [dict(s, pred_instances=dict(
            s['pred_instances'], labels=s['pred_instances']['labels'] - off))
            for s in samples if s['dataset_id'] == d]
        coco.process({}, local)
        ref = coco.evaluate(len(coco.results))
        assert results[100][f'uodb/{name}_bbox_mAP'] == ref['coco/bbox_mAP']
        assert results[100][f'uodb/{name}_bbox_mAP_50'] == ref['coco/bbox_mAP_50']
        preds = [dict(img_id=s['img_id'], **{k: v.numpy() for k, v in
                                            s['pred_instances'].items()}) for s in local]
        assert coco_box_ap(coco._coco_api, preds, coco.cat_ids, 100) == \
            (ref['coco/bbox_mAP'], ref['coco/bbox_mAP_50'])
        assert (results[300][f'uodb/{name}_bbox_mAP'],
                results[300][f'uodb/{name}_bbox_mAP_50']) == \
            coco_box_ap(coco._coco_api, preds, coco.cat_ids, 300)
    assert results[100]['uodb/voc07_AP50'] == pytest.approx(np.mean(vocs))
    # 120 higher-scored false positives of one class per image: at 100
    # detections that class loses its true boxes, at 300 it keeps them
    assert results[100]['uodb/bbox_mAP'] != results[300]['uodb/bbox_mAP']
    assert 0.1 < np.mean(vocs) < 0.99
    with pytest.raises(ValueError, match='max_dets=5 must be >= 10'):
        UODBMetric(max_dets=5)


def test_dataset_without_countable_ground_truth_is_left_out(repo_root, mini_uodb_root, tmp_path):
    """A dataset whose test boxes are all crowd / difficult has no defined
    AP (pycocotools: -1): the key says -1, the table '-', the mean skips it."""
    init_default_scope('mmdet')
    cfg = Config.fromfile(str(repo_root / 'configs/_base_/datasets/mini_uodb.py'))
    ds_cfg = cfg.test_dataloader.dataset
    ds_cfg.data_root = str(mini_uodb_root)
    ds_cfg.select = ['icons', 'medical']
    medical = json.loads((mini_uodb_root / 'medical/annotations/test.json').read_text())
    for ann in medical['annotations']:
        ann['iscrowd'] = 1
    (tmp_path / 'medical_crowd.json').write_text(json.dumps(medical))
    names = list(ds_cfg.dataset_names)
    ds_cfg.datasets[names.index('medical')].ann_file = str(tmp_path / 'medical_crowd.json')
    dataset = DATASETS.build(ds_cfg)
    samples = _samples(dataset, np.random.default_rng(0))
    metric = UODBMetric()
    metric.dataset_meta = dataset.metainfo
    metric.process({}, samples)
    results = metric.evaluate(len(samples))
    assert results['uodb/medical_bbox_mAP'] == -1.0
    assert results['uodb/medical_voc07_AP50'] == -1.0
    assert results['uodb/bbox_mAP'] == results['uodb/icons_bbox_mAP'] > 0
    assert results['uodb/voc07_AP50'] == results['uodb/icons_voc07_AP50'] > 0
    rows = metric.last_table.strip().split('\n')[2:]
    assert all(row.split(' | ')[2] == '-' for row in rows)  # the Medical column


def test_an_iou_of_exactly_the_threshold_is_no_match():
    """VOC's (and UODB's) rule is IoU > 0.5; mmdet's eval_map matches at >=.
    Legacy widths: [0,0,9,4] covers 10 x 5 of the 10 x 10 box, IoU exactly .5."""
    gts = [dict(bboxes=np.array([[0., 0., 9., 9.]]), labels=np.array([0]))]

    def ap(y2):
        det = [dict(bboxes=np.array([[0., 0., 9., y2]]), scores=np.array([1.]),
                    labels=np.array([0]))]
        return voc07_map(det, gts, 1)['mAP']

    assert ap(4.) == 0.0  # IoU .5: a false positive
    assert ap(5.) == pytest.approx(1.0)  # IoU .6


def test_a_recall_of_three_fifths_misses_the_point_six_threshold():
    """As VOC's code (float64, thresholds ``np.arange(0, 1.1, .1)``): 3 of 5
    found at precision 1 gives recall .6 < .6000000000000001, so 6 of the 11
    points (a float32 recall, .6000000238, would reach the seventh)."""
    boxes = np.array([[20. * i, 0., 20. * i + 9., 9.] for i in range(5)])
    gts = [dict(bboxes=boxes, labels=np.zeros(5, int))]
    dets = [dict(bboxes=boxes[:3], scores=np.array([.9, .8, .7]), labels=np.zeros(3, int))]
    assert voc07_map(dets, gts, 1)['mAP'] == pytest.approx(6 / 11)
