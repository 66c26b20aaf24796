# Copyright (c) mmgem contributors. All rights reserved.
"""GEM soft routing with the dataset unknown: top-k plan rows, fused.

k = 1 is hard routing bit for bit; k = 2 equals the fusion, computed by hand,
of two single-row runs whose row is forced through the hard routing.
"""
import copy

import numpy as np
import pytest
import torch
from mmdet.registry import MODELS
from mmengine.structures import InstanceData
from test_dataset_aware_gem_dino import CLASSES, DOMAIN, OFFSETS, _batch, _build, _gem_cfg

from mmgem.models.detectors.soft_routing import fuse_detections, soft_routing_rows

#: fixed domain logits of the three test images (rows differ per image)
LOGITS = torch.tensor([[2.0, 1.2, -1.0], [0.0, -1.0, 0.7], [0.3, 1.5, 1.1]])
MAX_PER_IMG = 40


def _model(**kwargs):
    model = _build(_gem_cfg(routing='gem', moe_layers=(1, ), num_experts=3,
                            domain_classifier=DOMAIN, dataset_classes=CLASSES,
                            test_dataset_known=False, **kwargs))
    model.install_plan(np.eye(3, dtype=np.int64), None, 'eye',
                       dataset_names=['set0', 'set1', 'set2'])
    model.eval()
    model.bbox_head.test_cfg['max_per_img'] = MAX_PER_IMG
    return model


def _unknown_batch(model):
    inputs, samples = _batch(model, [0, 1, 2], training=False)
    for s in samples:
        del s.dataset_id
    return inputs, samples


def _predict(model, inputs, samples, logits=None):
    if logits is not None:
        model.domain_classifier.forward = lambda *args: logits
    with torch.no_grad():
        return [r.pred_instances for r in model.predict(inputs, copy.deepcopy(samples))]


def _assert_equal(a, b):
    for x, y in zip(a, b):
        for key in ('bboxes', 'scores', 'labels'):
            assert torch.equal(getattr(x, key), getattr(y, key)), key


@pytest.mark.parametrize('label_space', ['unified', 'dataset'])
def test_top1_soft_routing_is_hard_routing_bit_for_bit(label_space):
    model = _model(test_label_space=label_space)
    inputs, samples = _unknown_batch(model)
    hard = _predict(model, inputs, samples)
    model.soft_routing_topk = 1
    soft = _predict(model, inputs, samples)
    assert sum(len(r) for r in hard) > 0
    _assert_equal(hard, soft)


def test_top2_soft_routing_fuses_two_single_row_runs():
    model = _model(soft_routing=dict(topk=2))
    inputs, samples = _unknown_batch(model)
    calls = []
    for name in ('forward_encoder', 'forward_decoder'):
        real = getattr(model, name)
        setattr(model, name,
                lambda *a, _real=real, _n=name, **k: calls.append(_n) or _real(*a, **k))
    soft = _predict(model, inputs, samples, LOGITS)
    assert calls == ['forward_encoder', 'forward_decoder', 'forward_decoder']

    # the single-row runs: hard routing, the row forced through the logits
    model.soft_routing_topk = 0
    probs = LOGITS.double().softmax(1)
    top2 = [sorted(range(3), key=lambda d: -float(probs[b, d]))[:2] for b in range(3)]
    single = {}
    for row in range(3):
        forced = torch.full((3, 3), -10.0)
        forced[:, row] = 10.0
        single[row] = _predict(model, inputs, samples, forced)
    assert not torch.equal(single[0][0].scores, single[1][0].scores)  # rows route apart

    for b in range(3):
        rows = top2[b]
        total = float(probs[b, rows].sum())
        expected = []
        for row in rows:
            run = single[row][b]
            weight = float(probs[b, row]) / total
            expected += [(float(s) * weight, int(label), box.tolist(), row)
                         for s, label, box in zip(run.scores, run.labels, run.bboxes)]
        expected.sort(key=lambda e: -e[0])
        expected = expected[:MAX_PER_IMG]
        got = soft[b]
        assert len(got) == MAX_PER_IMG
        torch.testing.assert_close(got.scores.double(), torch.tensor([e[0] for e in expected],
                                                                     dtype=torch.double))
        assert got.labels.tolist() == [e[1] for e in expected]
        torch.testing.assert_close(got.bboxes, torch.tensor([e[2] for e in expected]))
        assert {e[3] for e in expected} == set(rows)  # both runs contribute


def test_rows_and_fusion_helpers():
    rows, weights = soft_routing_rows(torch.tensor([[0.0, 2.0, 2.0, -1.0]]), 3)
    assert rows.tolist() == [[1, 2, 0]]  # ties: the lower id first, as argmax
    p = torch.tensor([0.0, 2.0, 2.0, -1.0]).softmax(0)[[1, 2, 0]]
    torch.testing.assert_close(weights[0], p / p.sum())
    a = InstanceData(scores=torch.tensor([0.9, 0.5]), labels=torch.tensor([0, 1]),
                     bboxes=torch.zeros(2, 4))
    b = InstanceData(scores=torch.tensor([0.8]), labels=torch.tensor([2]),
                     bboxes=torch.ones(1, 4))
    fused = fuse_detections([a, b], torch.tensor([0.5, 0.75]), 2)
    torch.testing.assert_close(fused.scores, torch.tensor([0.6, 0.45]))
    assert fused.labels.tolist() == [2, 0]


def test_bad_soft_routing_configs_are_refused():
    with pytest.raises(ValueError, match=r'topk must be an int in \[1, num_datasets=3\]'):
        _model(soft_routing=dict(topk=4))
    with pytest.raises(ValueError, match='unknown key'):
        _model(soft_routing=dict(k=2))
    with pytest.raises(ValueError, match='needs MoE layers'):
        MODELS.build(_gem_cfg(domain_classifier=DOMAIN, soft_routing=dict(topk=2)))
    with pytest.raises(ValueError, match='reads the plan at test time'):
        MODELS.build(_gem_cfg(routing='moe', moe_layers=(1, ), num_experts=3,
                              domain_classifier=DOMAIN, soft_routing=dict(topk=2)))
    assert OFFSETS[-1] == 7
