# Copyright (c) mmgem contributors. All rights reserved.
"""GEM-DINO against mmdet's DINO, routing, label space, plan buffers."""
import copy
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from mmdet.registry import MODELS
from mmdet.structures import DetDataSample
from mmengine.config import Config
from mmengine.structures import InstanceData

import mmgem  # noqa: F401
from mmgem.planner.hashing import image_bucket, route_bucket

REPO = Path(__file__).resolve().parents[2]
NUM_CLASSES = 5
OFFSETS = [0, 3, 5]  # dataset 0: labels 0-2, dataset 1: labels 3-4


def _dino_cfg():
    cfg = Config.fromfile(str(REPO / 'configs/_base_/models/dino_tiny.py'))
    model = copy.deepcopy(cfg.model)
    model.bbox_head.num_classes = NUM_CLASSES
    return model


def _gem_cfg(**kwargs):
    cfg = _dino_cfg()
    cfg.type = 'GEMDINO'
    cfg.bbox_head.type = 'DatasetAwareDINOHead'
    cfg.moe_layers = (0, 2)
    cfg.update(kwargs)
    return cfg


def _build(cfg, seed=0):
    torch.manual_seed(seed)
    model = MODELS.build(cfg)
    model.init_weights()
    return model


def _sample(img_id, shape, dataset_id=None, with_gt=True):
    meta = dict(
        img_id=img_id,
        img_path=f'img_{img_id}.jpg',
        ori_shape=shape,
        img_shape=shape,
        scale_factor=(1., 1.))
    if dataset_id is not None:
        meta.update(dataset_id=dataset_id, dataset_name=f'set{dataset_id}')
    sample = DetDataSample(metainfo=meta)
    if with_gt:
        offset = OFFSETS[dataset_id] if dataset_id is not None else 0
        sample.gt_instances = InstanceData(
            bboxes=torch.tensor([[4., 6., 30., 40.], [20., 10., 50., 60.]]),
            labels=torch.tensor([0, 1]) + offset)
    return sample


def _batch(model, dataset_ids, training, seed=0):
    gen = torch.Generator().manual_seed(seed)
    shapes = [(64, 80), (72, 64), (64, 64)]
    inputs, samples = [], []
    for i, d in enumerate(dataset_ids):
        h, w = shapes[i % len(shapes)]
        inputs.append(
            torch.randint(0, 256, (3, h, w), dtype=torch.uint8, generator=gen))
        samples.append(_sample(100 + i, (h, w), d))
    data = model.data_preprocessor(
        dict(inputs=inputs, data_samples=samples), training)
    return data['inputs'], data['data_samples']


@pytest.fixture(scope='module')
def dino():
    return _build(_dino_cfg())


@pytest.fixture(scope='module')
def gem4():
    """4 experts, 2 datasets; dataset 0 -> expert 0, dataset 1 -> expert 2."""
    model = _build(
        _gem_cfg(
            num_experts=4,
            num_datasets=2,
            label_offsets=OFFSETS,
            domain_classifier=dict(hidden_dims=64)))
    model.install_plan(np.array([[5, 0, 0, 0], [0, 0, 7, 0]]), None, 'p4',
                       dataset_names=['set0', 'set1'])
    return model


def test_one_expert_gem_equals_dino(dino):
    gem = _build(_gem_cfg(num_experts=1, num_datasets=1), seed=1)
    gem.load_dense_state_dict(dino.state_dict(), strict=True)
    gem.install_plan(np.ones((1, 1), dtype=np.int64), None, 'one')
    for model in (dino, gem):
        model.train()
    inputs, samples = _batch(dino, [None, None], training=True)
    torch.manual_seed(7)
    dino_losses = dino.loss(inputs, copy.deepcopy(samples))
    torch.manual_seed(7)
    gem_losses = gem.loss(inputs, copy.deepcopy(samples))
    # GEM-DINO adds logged-only routing scalars, no loss
    assert {k for k in gem_losses if not k.startswith('moe_')} == set(dino_losses)
    assert not any('loss' in k for k in gem_losses if k.startswith('moe_'))
    for key, value in dino_losses.items():
        torch.testing.assert_close(gem_losses[key], value, rtol=1e-5,
                                   atol=1e-5, msg=key)

    for model in (dino, gem):
        model.eval()
    inputs, samples = _batch(dino, [None, None], training=False)
    with torch.no_grad():
        dino_out = dino.predict(inputs, copy.deepcopy(samples))
        gem_out = gem.predict(inputs, copy.deepcopy(samples))
    with torch.no_grad():  # mode='tensor' (export, FLOPs counting)
        dino_raw = dino._forward(inputs, copy.deepcopy(samples))
        gem_raw = gem._forward(inputs, copy.deepcopy(samples))
    for a, b in zip(dino_raw, gem_raw):
        torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-5)
    for a, b in zip(dino_out, gem_out):
        assert torch.equal(a.pred_instances.labels, b.pred_instances.labels)
        torch.testing.assert_close(b.pred_instances.scores,
                                   a.pred_instances.scores, rtol=1e-5,
                                   atol=1e-5)
        torch.testing.assert_close(b.pred_instances.bboxes,
                                   a.pred_instances.bboxes, rtol=1e-5,
                                   atol=1e-4)


def test_gem_gradient_reaches_only_mapped_experts(gem4):
    gem4.train()
    gem4.zero_grad()
    inputs, samples = _batch(gem4, [0, 1, 0], training=True)
    quota = gem4.installed_plan_quota()
    mapped = {
        route_bucket(quota[s.metainfo['dataset_id']],
                     image_bucket(s.metainfo['dataset_name'],
                                  s.metainfo['img_id']))
        for s in samples
    }
    assert mapped == {0, 2}
    losses = gem4.loss(inputs, samples)
    assert 'loss_moe_aux' not in losses and 'loss_damex_ce' not in losses
    sum(v for k, v in losses.items() if 'loss' in k).backward()
    for ffn in gem4.moe_ffns():
        assert not list(ffn.router.parameters())  # the plan routes: no router weights
        for param in (ffn.w1, ffn.b1, ffn.w2, ffn.b2):
            for e in range(4):
                touched = bool(param.grad[e].abs().sum() > 0)
                assert touched == (e in mapped), (e, param.shape)


def test_domain_classifier_is_trained_jointly(gem4):
    gem4.train()
    gem4.zero_grad()
    inputs, samples = _batch(gem4, [1, 0], training=True)
    losses = gem4.loss(inputs, samples)
    assert torch.isfinite(losses['loss_domain'])
    assert 0 <= float(losses['domain_acc']) <= 100
    losses['loss_domain'].backward()
    head = gem4.domain_classifier.mlp[-1].weight
    assert float(head.grad.abs().sum()) > 0
    # jointly trained: the encoder receives the classifier's gradient too
    enc = gem4.encoder.layers[0].ffn.layers[0][0].weight
    assert float(enc.grad.abs().sum()) > 0


def test_gem_without_plan_fails_naming_the_hook():
    model = _build(_gem_cfg(num_experts=2, num_datasets=2,
                            label_offsets=OFFSETS))
    assert not model.has_plan()
    assert model.installed_plan_hash() == ''
    model.train()
    inputs, samples = _batch(model, [0, 1], training=True)
    with pytest.raises(RuntimeError,
                       match='no GEM plan is installed.*GEMPlannerHook.*'
                       'custom_hooks'):
        model.loss(inputs, samples)


def test_test_predictions_stay_in_dataset_label_range(gem4):
    gem4.eval()
    gem4.bbox_head.test_cfg['max_per_img'] = 300
    try:
        inputs, samples = _batch(gem4, [0, 1, 1], training=False)
        with torch.no_grad():
            results = gem4.predict(inputs, samples)
    finally:
        gem4.bbox_head.test_cfg['max_per_img'] = 100
    for sample, result in zip(samples, results):
        d = sample.metainfo['dataset_id']
        labels = result.pred_instances.labels
        assert labels.min() >= OFFSETS[d] and labels.max() < OFFSETS[d + 1]
        # top-300 of 100 queries x the dataset's classes, nothing else
        num_valid = gem4.num_queries * (OFFSETS[d + 1] - OFFSETS[d])
        assert len(labels) == min(300, num_valid)
        assert bool((result.pred_instances.scores > 0).all())
        assert 0 <= result.pred_dataset_id < 2


def test_unknown_dataset_routes_by_domain_classifier(gem4):
    gem4.eval()
    gem4.test_dataset_known = False
    try:
        inputs, samples = _batch(gem4, [0, 1], training=False)
        for s in samples:  # the true dataset must not be needed
            del s.dataset_id
        with torch.no_grad():
            feats = gem4.extract_feat(inputs)
            enc_in, _ = gem4.pre_transformer(feats, samples)
            memory = gem4.forward_encoder(**enc_in)
            expected = gem4.domain_classifier(
                memory['memory'], memory['memory_mask']).argmax(1).tolist()
            gem4.test_label_space_cfg = 'dataset'  # labels of the predicted dataset
            results = gem4.predict(inputs, copy.deepcopy(samples))
            gem4.test_label_space_cfg = None  # default: no dataset decision on labels
            unified = gem4.predict(inputs, copy.deepcopy(samples))
    finally:
        gem4.test_dataset_known = True
        gem4.test_label_space_cfg = None
    for pred, result in zip(expected, results):
        assert result.pred_dataset_id == pred
        labels = result.pred_instances.labels
        assert labels.min() >= OFFSETS[pred]
        assert labels.max() < OFFSETS[pred + 1]
    # without class names (no dataset_classes) the labels stay concatenated
    assert {r.pred_label_space for r in unified} == {'concat'}
    assert [r.pred_dataset_id for r in unified] == expected
    assert len({int(x) for r in unified for x in r.pred_instances.labels}) > max(
        OFFSETS[1] - OFFSETS[0], OFFSETS[2] - OFFSETS[1])
    with pytest.raises(ValueError, match='needs a domain_classifier'):
        MODELS.build(
            _gem_cfg(num_experts=2, num_datasets=2, test_dataset_known=False,
                     test_label_space='dataset'))


@pytest.mark.parametrize('routing,key', [('damex', 'loss_damex_ce'),
                                         ('moe', 'loss_moe_aux')])
def test_router_losses_reach_the_loss_dict(routing, key):
    model = _build(
        _gem_cfg(
            num_experts=4,
            num_datasets=2,
            routing=routing,
            balance_tokens='all',
            label_offsets=OFFSETS))
    model.install_plan(np.array([[3, 1, 0, 0], [0, 0, 2, 2]]), None, 'r')
    model.train()
    inputs, samples = _batch(model, [0, 1], training=True)
    losses = model.loss(inputs, samples)
    per_layer = [ffn.aux_loss() for ffn in model.moe_ffns()]
    assert len(per_layer) == 2
    # DAMEX averages the auxiliary losses over the MoE layers
    torch.testing.assert_close(losses[key],
                               0.1 * (per_layer[0] + per_layer[1]) / 2)
    assert float(losses[key]) > 0
    assert 0 <= float(losses['moe_drop_rate']) < 1
    sum(v for k, v in losses.items() if 'loss' in k).backward()
    router = model.moe_ffns()[0].router.gate.weight
    assert float(router.grad.abs().sum()) > 0
    # test time: the router decides, routing info is not needed
    model.eval()
    inputs, samples = _batch(model, [0, 1], training=False)
    with torch.no_grad():
        results = model.predict(inputs, samples)
    assert len(results) == 2


def test_plan_travels_in_the_state_dict(gem4):
    fresh = MODELS.build(
        _gem_cfg(num_experts=4, num_datasets=2,
                 domain_classifier=dict(hidden_dims=64)))
    assert not fresh.has_plan() and not fresh.has_label_offsets()
    fresh.load_state_dict(gem4.state_dict())
    assert fresh.has_plan()
    assert fresh.installed_plan_hash() == 'p4'
    np.testing.assert_array_equal(fresh.installed_plan_quota(),
                                  gem4.installed_plan_quota())
    assert fresh.label_offsets.tolist() == OFFSETS


def test_bad_plans_and_offsets_are_rejected(gem4):
    with pytest.raises(ValueError, match=r'shape \(3, 4\).*num_datasets=2'):
        gem4.install_plan(np.ones((3, 4), dtype=int))
    with pytest.raises(ValueError, match=r'label_offsets \[0, 2, 9\]'):
        gem4.install_plan(np.ones((2, 4), dtype=int), np.array([0, 2, 9]))
    assert gem4.installed_plan_hash() == 'p4'  # unchanged
    with pytest.raises(ValueError, match="routing must be one of.*'top2'"):
        MODELS.build(_gem_cfg(routing='top2'))
    with pytest.raises(ValueError, match=r'layer\(s\) \[5\]'):
        MODELS.build(_gem_cfg(moe_layers=(0, 5)))


def test_missing_dataset_id_names_the_image(gem4):
    gem4.train()
    inputs, samples = _batch(gem4, [0, 1], training=True)
    del samples[1].dataset_id
    with pytest.raises(KeyError, match='img_101.jpg has no dataset_id'):
        gem4.loss(inputs, samples)


def test_experts_are_initialised_per_slice(gem4):
    model = _build(_gem_cfg(num_experts=4, num_datasets=2))
    ffn = model.moe_ffns()[0]
    bound = math.sqrt(6 / (512 + 256))  # xavier of one (512, 256) expert
    for e in range(4):
        peak = float(ffn.w1.data[e].abs().max())
        assert 0.99 * bound < peak <= bound
    assert not torch.equal(ffn.w1.data[0], ffn.w1.data[1])
    # biases as a dense FFN's after DINO's init (nn.Linear's, 1/sqrt(fan_in)),
    # not xavier over the (M, out) bias tensor, whose bound is larger
    for bias, fan_in in ((ffn.b1, 256), (ffn.b2, 512)):
        assert math.sqrt(6 / sum(bias.shape)) > 1.2 / math.sqrt(fan_in)
        peak = float(bias.data.abs().max())
        assert 0.95 / math.sqrt(fan_in) < peak <= 1 / math.sqrt(fan_in)


def test_upcycle_from_dense_gem_dino_checkpoint(tmp_path):
    """A dense GEM-DINO (no MoE layer, the benchmarks' ``dino`` rows) carries
    an empty routing table of its own expert count; upcycling keeps the MoE
    model's table and takes every other weight."""
    dense_model = _build(_gem_cfg(num_experts=8, num_datasets=2, moe_layers=()), seed=1)
    path = tmp_path / 'dense_gem_dino.pth'
    torch.save(dict(state_dict=dense_model.state_dict()), path)
    model = _build(_gem_cfg(num_experts=3, num_datasets=2, upcycle_from=str(path)))
    dense = dense_model.state_dict()
    ffn = model.decoder.layers[2].ffn
    for e in range(3):
        assert torch.equal(ffn.w2[e], dense['decoder.layers.2.ffn.layers.1.weight'])
    assert torch.equal(model.state_dict()['backbone.conv1.weight'], dense['backbone.conv1.weight'])
    assert model.routing_table.shape == (2, 3) and not model.has_plan()


def test_upcycle_from_dense_checkpoint(dino, tmp_path):
    path = tmp_path / 'dense_dino.pth'
    torch.save(dict(state_dict=dino.state_dict()), path)
    model = _build(
        _gem_cfg(num_experts=3, num_datasets=2, upcycle_from=str(path)))
    dense = dino.state_dict()
    for layer_id in (0, 2):
        ffn = model.decoder.layers[layer_id].ffn
        prefix = f'decoder.layers.{layer_id}.ffn.'
        for e in range(3):
            assert torch.equal(ffn.w1[e], dense[prefix + 'layers.0.0.weight'])
            assert torch.equal(ffn.b2[e], dense[prefix + 'layers.1.bias'])
    own = model.state_dict()
    for key in ('decoder.layers.1.ffn.layers.0.0.weight',
                'encoder.layers.0.self_attn.value_proj.weight',
                'backbone.conv1.weight', 'bbox_head.cls_branches.0.weight'):
        assert torch.equal(own[key], dense[key]), key
    assert not model.has_plan()  # the plan is not part of a dense model
