# Copyright (c) mmgem contributors. All rights reserved.
"""GEMDINO trained dataset-aware, and one test protocol for every row.

Three datasets share a concatenated label space of 7 classes. Every
classification loss of an image (encoder, each decoder layer, denoising)
ignores the other datasets' classes, the two-stage top-k ranks by the
image's dataset, and with one dataset the model is mmdet's DINO. At test
time every row (dense, moe, damex, gem) restricts labels to the known
dataset alike, and with the dataset unknown labels in the unified space by
class name (or, ``test_label_space='dataset'``, in the predicted dataset).
"""
import copy
from pathlib import Path

import numpy as np
import pytest
import torch
from mmdet.registry import MODELS
from mmdet.structures import DetDataSample
from mmengine.config import Config
from mmengine.structures import InstanceData

import mmgem  # noqa: F401

REPO = Path(__file__).resolve().parents[2]
NUM_CLASSES = 7
OFFSETS = [0, 2, 5, 7]  # labels 0-1, 2-4, 5-6
NUM_QUERIES = 30
DOMAIN = dict(type='DomainClassifier', hidden_dims=32, detach_input=True)
# names shared across datasets: person (0, 2), car (1, 5)
CLASSES = [('person', 'car'), ('Person', 'dog', 'cat'), ('car', 'bus')]
UNIFIED = ['person', 'car', 'dog', 'cat', 'bus']


def _dino_cfg(num_classes=NUM_CLASSES):
    cfg = Config.fromfile(str(REPO / 'configs/_base_/models/dino_tiny.py'))
    model = copy.deepcopy(cfg.model)
    model.num_queries = NUM_QUERIES
    model.dn_cfg.group_cfg.num_dn_queries = 20
    model.bbox_head.num_classes = num_classes
    return model


def _gem_cfg(num_datasets=3, **kwargs):
    cfg = _dino_cfg(OFFSETS[-1] if num_datasets == 3 else NUM_CLASSES)
    cfg.type = 'GEMDINO'
    cfg.bbox_head.type = 'DatasetAwareDINOHead'
    cfg.moe_layers = ()
    cfg.num_datasets = num_datasets
    if num_datasets == 3:
        cfg.label_offsets = OFFSETS
    cfg.update(kwargs)
    return cfg


def _build(cfg, seed=0):
    torch.manual_seed(seed)
    model = MODELS.build(cfg)
    model.init_weights()
    return model


def _batch(model, dataset_ids, training, seed=0):
    """Images of the given datasets, two boxes each, labels in the range."""
    gen = torch.Generator().manual_seed(seed)
    inputs, samples = [], []
    for i, d in enumerate(dataset_ids):
        h, w = (64, 72) if i % 2 else (72, 64)
        inputs.append(
            torch.randint(0, 256, (3, h, w), dtype=torch.uint8, generator=gen))
        meta = dict(
            img_id=10 + i,
            img_path=f'img_{10 + i}.jpg',
            ori_shape=(h, w),
            img_shape=(h, w),
            scale_factor=(1., 1.))
        low, high = (0, NUM_CLASSES) if d is None else OFFSETS[d:d + 2]
        if d is not None:
            meta.update(dataset_id=d, dataset_name=f'set{d}')
        sample = DetDataSample(metainfo=meta)
        sample.gt_instances = InstanceData(
            bboxes=torch.tensor([[4., 6., 30., 40.], [20., 10., 50., 60.]]),
            labels=torch.tensor([low, high - 1]))
        samples.append(sample)
    data = model.data_preprocessor(
        dict(inputs=inputs, data_samples=samples), training)
    return data['inputs'], data['data_samples']


def _losses(model, inputs, samples, seed=7):
    torch.manual_seed(seed)  # the same denoising noise
    return model.loss(inputs, copy.deepcopy(samples))


def _cls_branch_grads(model):
    return [(b.weight.grad, b.bias.grad) for b in model.bbox_head.cls_branches]


def test_one_dataset_equals_mmdet_dino():
    """The dense row (GEMDINO, no MoE layer, dataset-aware head) with one
    dataset is mmdet's DINO on the same weights: losses and predictions."""
    dino = _build(_dino_cfg())
    gem = _build(_gem_cfg(num_datasets=1), seed=1)
    missing, unexpected = gem.load_state_dict(dino.state_dict(), strict=False)
    # every parameter is DINO's; GEMDINO adds only its label buffers and plan table
    assert not unexpected and missing
    assert set(missing) <= {name for name, _ in gem.named_buffers()} | {
        'routing_table._extra_state'}
    assert gem.moe_ffns() == [] and gem.dataset_aware
    inputs, samples = _batch(dino, [None, None, None], training=True)
    for model in (dino, gem):
        model.train()
    expected = _losses(dino, inputs, samples)
    got = _losses(gem, inputs, samples)
    assert set(got) == set(expected)
    for key, value in expected.items():
        torch.testing.assert_close(got[key], value, rtol=1e-5, atol=1e-5,
                                   msg=key)
    for model in (dino, gem):
        model.eval()
    inputs, samples = _batch(dino, [None, None], training=False)
    with torch.no_grad():
        expected = dino.predict(inputs, copy.deepcopy(samples))
        got = gem.predict(inputs, copy.deepcopy(samples))
    for a, b in zip(expected, got):
        assert torch.equal(a.pred_instances.labels, b.pred_instances.labels)
        torch.testing.assert_close(b.pred_instances.scores,
                                   a.pred_instances.scores)
        torch.testing.assert_close(b.pred_instances.bboxes,
                                   a.pred_instances.bboxes, rtol=1e-5,
                                   atol=1e-4)


@pytest.mark.parametrize('dataset_aware', [True, False])
def test_no_gradient_reaches_classes_of_datasets_not_in_the_batch(
        dataset_aware):
    """A batch of datasets 0 and 1: the class logits of dataset 2 get exactly
    zero gradient in every decoder layer's and the encoder's classifier."""
    model = _build(_gem_cfg(dataset_aware=dataset_aware))
    model.train()
    inputs, samples = _batch(model, [0, 1, 0], training=True)
    losses = _losses(model, inputs, samples)
    sum(v for k, v in losses.items() if 'loss' in k).backward()
    other = slice(OFFSETS[2], OFFSETS[3])
    grads = _cls_branch_grads(model)
    assert len(grads) == model.decoder.num_layers + 1  # + the encoder's
    for weight, bias in grads:
        assert float(bias[:OFFSETS[2]].abs().sum()) > 0
        if dataset_aware:
            assert torch.count_nonzero(weight[other]) == 0
            assert torch.count_nonzero(bias[other]) == 0
        else:  # mmdet's DINO: the absent dataset's classes are negatives
            assert torch.count_nonzero(bias[other]) == 2


def test_losses_ignore_the_other_datasets_logits():
    """Raising the logits of dataset 2's classes in every classifier changes
    no loss term of a batch of datasets 0 and 1 (matching, top-k, every
    classification loss), but changes DINO's."""
    for dataset_aware in (True, False):
        model = _build(_gem_cfg(dataset_aware=dataset_aware))
        model.train()
        inputs, samples = _batch(model, [0, 1], training=True)
        before = _losses(model, inputs, samples)
        with torch.no_grad():
            for branch in model.bbox_head.cls_branches:
                branch.bias[OFFSETS[2]:] += 6.0
        after = _losses(model, inputs, samples)
        changed = [
            k for k in before if not torch.allclose(before[k], after[k],
                                                    rtol=0, atol=1e-7)
        ]
        if dataset_aware:
            assert changed == []
        else:
            assert {'enc_loss_cls', 'loss_cls', 'dn_loss_cls'} <= set(changed)


def _encoder(model, inputs, samples):
    feats = model.extract_feat(inputs)
    enc_in, _ = model.pre_transformer(feats, samples)
    return model.forward_encoder(**enc_in)


def _expected_topk(model, enc_out, dataset_ids, differs=True):
    """Independent top-k: each image's proposals ranked by its classes (with
    ``differs``, check that all classes would have ranked them otherwise)."""
    out_mem, proposals = model.gen_encoder_output_proposals(
        enc_out['memory'], enc_out['memory_mask'], enc_out['spatial_shapes'])
    layer = model.decoder.num_layers
    scores = model.bbox_head.cls_branches[layer](out_mem)
    coords = model.bbox_head.reg_branches[layer](out_mem) + proposals
    own = []
    for b, d in enumerate(dataset_ids):
        low, high = (0, NUM_CLASSES) if d is None else OFFSETS[d:d + 2]
        by_dataset = scores[b, :, low:high].max(-1)[0]
        idx = torch.topk(by_dataset, NUM_QUERIES)[1]
        own.append((scores[b, idx], coords[b, idx].sigmoid()))
        plain = torch.topk(scores[b].max(-1)[0], NUM_QUERIES)[1]
        if differs:  # the restriction matters
            assert set(plain.tolist()) != set(idx.tolist())
    return own


def test_pre_decoder_ranks_topk_and_draws_dn_labels_by_dataset():
    model = _build(_gem_cfg(domain_classifier=DOMAIN))
    generator = model.dn_query_generator
    with torch.no_grad():  # dataset 2's classes dominate the plain max
        model.bbox_head.cls_branches[-1].bias[OFFSETS[2]:] += 5.0
        # one-hot label embedding: a denoising query's label is its argmax
        generator.label_embedding.weight.copy_(
            torch.eye(NUM_CLASSES, model.embed_dims))
    generator.label_noise_scale = 1.0
    ids = [0, 1, 1]
    model.train()
    inputs, samples = _batch(model, ids, training=True)
    with torch.no_grad():
        enc_out = _encoder(model, inputs, samples)
        dec_in, head_in = model.pre_decoder(
            **enc_out, batch_data_samples=samples)
        expected = _expected_topk(model, enc_out, ids)
    for b, (scores, _) in enumerate(expected):
        assert torch.equal(head_in['enc_outputs_class'][b], scores)
    # every image has 2 boxes: no padding among the denoising queries
    num_dn = head_in['dn_meta']['num_denoising_queries']
    dn_labels = dec_in['query'][:, :num_dn].argmax(-1)
    for b, d in enumerate(ids):
        assert dn_labels[b].min() >= OFFSETS[d]
        assert dn_labels[b].max() < OFFSETS[d + 1]
    assert len(set(dn_labels[1].tolist())) == 3  # noise fills dataset 1

    model.eval()
    inputs, samples = _batch(model, ids, training=False)
    with torch.no_grad():  # dataset known: from the metainfo
        enc_out = _encoder(model, inputs, samples)
        dec_in, _ = model.pre_decoder(**enc_out, batch_data_samples=samples)
        expected = _expected_topk(model, enc_out, ids)
    for b, (_, coords) in enumerate(expected):
        torch.testing.assert_close(dec_in['reference_points'][b], coords)

    model.test_dataset_known = False  # predicted, metainfo not read
    model.test_label_space_cfg = 'dataset'  # labels of the predicted dataset
    for s in samples:
        del s.dataset_id
    with torch.no_grad():
        enc_out = _encoder(model, inputs, samples)
        dec_in, _ = model.pre_decoder(**enc_out, batch_data_samples=samples)
        predicted = model.domain_classifier(
            enc_out['memory'], enc_out['memory_mask']).argmax(1).tolist()
        expected = _expected_topk(model, enc_out, predicted, differs=False)
    for b, (_, coords) in enumerate(expected):
        torch.testing.assert_close(dec_in['reference_points'][b], coords)

    model.test_label_space_cfg = None  # dataset unknown: unified, all classes
    with torch.no_grad():
        dec_in, _ = model.pre_decoder(**enc_out, batch_data_samples=samples)
        expected = _expected_topk(model, enc_out, [None] * 3, differs=False)
    for b, (_, coords) in enumerate(expected):
        torch.testing.assert_close(dec_in['reference_points'][b], coords)


def test_last_matched_query_mask_after_loss():
    model = _build(_gem_cfg())
    model.train()
    inputs, samples = _batch(model, [2, 0, 1], training=True)
    _losses(model, inputs, samples)
    mask = model.bbox_head.last_matched_query_mask
    assert mask.shape == (3, NUM_QUERIES) and mask.dtype == torch.bool
    # Hungarian matching: one matching query per ground-truth box
    assert mask.sum(1).tolist() == [2, 2, 2]


def _row(routing):
    """The four rows of the comparison, tiny: dense, moe, damex, gem."""
    kwargs = dict(domain_classifier=DOMAIN, dataset_classes=CLASSES)
    if routing != 'dense':
        kwargs.update(routing=routing, moe_layers=(1, ), num_experts=3)
    model = _build(_gem_cfg(**kwargs))
    if routing in ('gem', 'damex'):
        model.install_plan(np.eye(3, dtype=np.int64), None, 'eye',
                           dataset_names=['set0', 'set1', 'set2'])
    return model


def _unified_expected(cls_scores, max_per_img):
    """Independent unified post-processing of one image's last-layer logits:
    per query, the max probability of every name's members, then the top
    ``max_per_img`` (score, unified label) pairs."""
    probs = cls_scores.sigmoid()
    members = {}
    for d, classes in enumerate(CLASSES):
        for i, name in enumerate(classes):
            members.setdefault(name.lower(), []).append(OFFSETS[d] + i)
    pairs = []
    for q in range(probs.shape[0]):
        for u, name in enumerate(UNIFIED):
            pairs.append((float(max(probs[q, c] for c in members[name])), u))
    pairs.sort(key=lambda p: -p[0])
    return pairs[:max_per_img]


@pytest.mark.parametrize('routing', ['dense', 'moe', 'damex', 'gem'])
def test_every_row_is_tested_alike(routing):
    """Known dataset: labels of the true dataset; unknown: unified labels by
    class name (metainfo not needed), or with test_label_space='dataset' of
    the predicted dataset; predictions carry pred_dataset_id."""
    model = _row(routing)
    model.eval()
    model.bbox_head.test_cfg['max_per_img'] = 150
    inputs, samples = _batch(model, [0, 1, 2], training=False)
    with torch.no_grad():
        known = model.predict(inputs, copy.deepcopy(samples))
        predicted = model.domain_classifier(
            _encoder(model, inputs, samples)['memory']).argmax(1).tolist()
    for d, result in enumerate(known):
        labels = result.pred_instances.labels
        assert labels.min() >= OFFSETS[d] and labels.max() < OFFSETS[d + 1]
        assert len(labels) == 150 or len(labels) == NUM_QUERIES * (
            OFFSETS[d + 1] - OFFSETS[d])
        assert result.pred_dataset_id == predicted[d]

        assert result.pred_label_space == 'concat'

    model.test_dataset_known = False
    unknown = copy.deepcopy(samples)
    for s in unknown:
        del s.dataset_id
    with torch.no_grad():  # default: the unified space, no dataset decision
        results = model.predict(inputs, copy.deepcopy(unknown))
        logits = model._forward(inputs, copy.deepcopy(unknown))[0][-1]
    for b, result in enumerate(results):
        assert result.pred_label_space == 'unified'
        assert result.pred_dataset_id == predicted[b]
        expected = _unified_expected(logits[b], 150)
        got = result.pred_instances
        torch.testing.assert_close(got.scores, torch.tensor([p[0] for p in expected]))
        assert sorted((round(v, 5), u) for v, u in zip(
            got.scores.tolist(), got.labels.tolist())) == sorted(
                (round(v, 5), u) for v, u in expected)
        assert set(got.labels.tolist()) == set(range(len(UNIFIED)))

    model.test_label_space_cfg = 'dataset'  # restricted to the predicted one
    with torch.no_grad():
        results = model.predict(inputs, copy.deepcopy(unknown))
    for d, result in zip(predicted, results):
        labels = result.pred_instances.labels
        assert labels.min() >= OFFSETS[d] and labels.max() < OFFSETS[d + 1]
        assert result.pred_dataset_id == d
        assert result.pred_label_space == 'concat'

    model.restrict_test_labels = False  # the "no restriction" option
    with torch.no_grad():
        results = model.predict(inputs, copy.deepcopy(unknown))
    assert {int(x) for r in results for x in r.pred_instances.labels} == set(
        range(NUM_CLASSES))
    assert [r.pred_dataset_id for r in results] == predicted


def test_detached_domain_classifier_gives_the_detector_no_gradient():
    model = _build(_gem_cfg(domain_classifier=DOMAIN))
    model.train()
    inputs, samples = _batch(model, [0, 2], training=True)
    losses = _losses(model, inputs, samples)
    losses['loss_domain'].backward()
    assert float(model.domain_classifier.mlp[-1].weight.grad.abs().sum()) > 0
    for name, param in model.named_parameters():
        if not name.startswith('domain_classifier.'):
            assert param.grad is None, name


def test_bad_label_space_inputs_are_refused():
    model = _build(_gem_cfg())
    model.train()
    inputs, samples = _batch(model, [0, 1], training=True)
    samples[1].gt_instances.labels = torch.tensor([2, 5])  # 5: dataset 2's
    with pytest.raises(ValueError,
                       match=r'img_11.jpg of dataset_id 1 has ground-truth '
                       r'label 5 outside its dataset.s label range \[2, 5\)'):
        model.loss(inputs, samples)
    cfg = _gem_cfg()
    cfg.bbox_head.type = 'DINOHead'
    with pytest.raises(ValueError, match="needs bbox_head=dict.*"
                       "'DatasetAwareDINOHead'.*got DINOHead"):
        MODELS.build(cfg)
    with pytest.raises(ValueError, match='restrict_test_labels=True needs a '
                       'domain_classifier'):
        MODELS.build(_gem_cfg(routing='moe', moe_layers=(1, ),
                              test_dataset_known=False, test_label_space='dataset'))
    # unified labels need no domain classifier
    MODELS.build(_gem_cfg(routing='moe', moe_layers=(1, ), test_dataset_known=False))
    with pytest.raises(ValueError, match=r'label offsets \[0, 2, 5, 6\].*'
                       r'label_offsets \[0, 2, 5, 7\]'):
        MODELS.build(_gem_cfg(dataset_classes=[('a', 'b'), ('c', 'd', 'e'), ('f', )]))
    with pytest.raises(ValueError, match="'person' and 'Person'"):
        MODELS.build(_gem_cfg(dataset_classes=[('person', 'Person'), ('c', 'd', 'e'),
                                               ('f', 'g')]))
    unset = _build(_gem_cfg(label_offsets=None))
    unset.train()
    with pytest.raises(RuntimeError, match='label_offsets are not set'):
        unset.loss(inputs, _batch(unset, [0, 1], training=True)[1])


def test_neck_domain_classifier_reads_the_neck_levels():
    """GEMDINO with DomainClassifier(input='neck'): the logits are the MLP of
    every neck level's per-channel mean and std (computed here from the
    neck's maps), and they route the dataset-unknown test images."""
    model = _build(_gem_cfg(domain_classifier=dict(DOMAIN, input='neck'),
                            dataset_classes=CLASSES, test_dataset_known=False))
    clf = model.domain_classifier
    assert clf.input == 'neck' and clf.num_levels == model.num_feature_levels
    model.eval()
    gen = torch.Generator().manual_seed(3)
    inputs = [torch.randint(0, 256, (3, 64, 64), dtype=torch.uint8, generator=gen)
              for _ in range(2)]  # one shape: no padding
    samples = [DetDataSample(metainfo=dict(img_id=i, ori_shape=(64, 64), img_shape=(64, 64),
                                           scale_factor=(1., 1.))) for i in range(2)]
    data = model.data_preprocessor(dict(inputs=inputs, data_samples=samples), False)
    seen = []
    clf.register_forward_hook(lambda mod, args, out: seen.append(out))
    with torch.no_grad():
        results = model.predict(data['inputs'], data['data_samples'])
        levels = model.extract_feat(data['inputs'])
        pooled = torch.cat([torch.cat([x.mean((2, 3)), (x.var((2, 3), unbiased=False)
                                                         + 1e-6).sqrt()], 1) for x in levels], 1)
        expected = clf.mlp(pooled)
    assert len(seen) == 1
    torch.testing.assert_close(seen[0], expected, rtol=1e-4, atol=1e-5)
    assert [r.pred_dataset_id for r in results] == expected.argmax(1).tolist()
    model.train()
    inputs, samples = _batch(model, [0, 1, 2], training=True)
    losses = _losses(model, inputs, samples)
    assert torch.isfinite(losses['loss_domain'])
