# Copyright (c) mmgem contributors. All rights reserved.
"""Behaviour of the MoE FFN layer: dispatch, gradients, losses, capacity."""
import math

import numpy as np
import pytest
import torch
from mmcv.cnn.bricks.transformer import FFN

from mmgem.models.layers import MoEFFN
from mmgem.planner.hashing import image_bucket, route_bucket

DIM, HIDDEN = 16, 32
QUOTA = np.array([[3, 1, 0, 0], [0, 0, 2, 2], [1, 1, 1, 1]], dtype=np.int64)


def _batch(num_images, num_tokens=7, seed=0):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(num_images, num_tokens, DIM, generator=gen)
    dataset_ids = torch.randint(0, QUOTA.shape[0], (num_images, ),
                                generator=gen)
    buckets = torch.tensor([
        image_bucket(f'set{int(d)}', i) for i, d in enumerate(dataset_ids)
    ])
    return x, dataset_ids, buckets


def _gem_layer(**kwargs):
    torch.manual_seed(0)
    layer = MoEFFN(DIM, HIDDEN, num_experts=4, num_datasets=3, **kwargs)
    layer.install_plan(torch.from_numpy(QUOTA))
    return layer


def _expert_ref(layer, e, token):
    """One expert on one token, in float64, written out."""
    w1, b1 = layer.w1[e].double(), layer.b1[e].double()
    w2, b2 = layer.w2[e].double(), layer.b2[e].double()
    hidden = torch.clamp(w1 @ token.double() + b1, min=0)
    return w2 @ hidden + b2


def test_gem_dispatch_equals_per_token_loop():
    layer = _gem_layer()
    x, dataset_ids, buckets = _batch(9)
    out = layer(x, dataset_ids=dataset_ids, image_buckets=buckets)
    expected = torch.empty(x.shape, dtype=torch.float64)
    for b in range(x.size(0)):
        e = route_bucket(QUOTA[int(dataset_ids[b])], int(buckets[b]))
        for t in range(x.size(1)):
            expected[b, t] = x[b, t].double() + _expert_ref(layer, e, x[b, t])
    torch.testing.assert_close(out.double(), expected, rtol=1e-5, atol=1e-5)
    # every image's tokens were processed by exactly one expert, none dropped
    assert int(layer.routing_stats['expert_tokens'].sum()) == x[..., 0].numel()
    assert int(layer.routing_stats['dropped_tokens']) == 0
    assert layer.aux_losses == {}


def test_gem_with_one_active_expert_uses_it_for_all_images():
    layer = _gem_layer()
    x, _, _ = _batch(4)
    dataset_ids = torch.zeros(4, dtype=torch.long)
    buckets = torch.tensor([0, 1, 2, 6])  # remainders 0,1,2,2 of quota 4
    out = layer(x, dataset_ids=dataset_ids, image_buckets=buckets)
    assert layer.routing_stats['expert_tokens'].tolist() == [28, 0, 0, 0]
    ref = torch.stack([
        torch.stack([_expert_ref(layer, 0, tok) for tok in img]) for img in x
    ])
    torch.testing.assert_close(out.double(), x.double() + ref, rtol=1e-5,
                               atol=1e-5)


def test_gem_gradient_reaches_only_routed_experts():
    layer = _gem_layer()
    x, _, _ = _batch(3)
    # dataset 1 images with remainder 0/1 -> expert 2, dataset 0 r=3 -> 1
    dataset_ids = torch.tensor([1, 1, 0])
    buckets = torch.tensor([0, 5, 3])
    used = {route_bucket(QUOTA[d], b) for d, b in zip([1, 1, 0], [0, 5, 3])}
    assert used == {1, 2}
    layer(x, dataset_ids=dataset_ids, image_buckets=buckets).sum().backward()
    for param in (layer.w1, layer.b1, layer.w2, layer.b2):
        for e in range(4):
            grad_norm = float(param.grad[e].abs().sum())
            if e in used:
                assert grad_norm > 0
            else:
                assert grad_norm == 0


def test_gem_without_plan_raises():
    layer = MoEFFN(DIM, HIDDEN, num_experts=4, num_datasets=3)
    x, dataset_ids, buckets = _batch(2)
    with pytest.raises(RuntimeError,
                       match='no GEM plan is installed.*GEMPlannerHook.*'
                       'custom_hooks'):
        layer(x, dataset_ids=dataset_ids, image_buckets=buckets)
    with pytest.raises(ValueError, match='needs the dataset_ids'):
        _gem_layer()(x)


def test_bad_plan_and_ids_are_reported():
    layer = _gem_layer()
    with pytest.raises(ValueError, match=r'shape \(2, 4\).*\(3, 4\)'):
        layer.install_plan(torch.ones(2, 4, dtype=torch.long))
    x, _, buckets = _batch(2)
    with pytest.raises(ValueError, match=r'dataset id\(s\) \[5\] out of range'):
        layer(x, dataset_ids=torch.tensor([0, 5]), image_buckets=buckets)
    quota = torch.from_numpy(QUOTA).clone()
    quota[2] = 0
    layer.install_plan(quota)
    with pytest.raises(ValueError, match=r'no image of dataset id\(s\) \[2\]'):
        layer(x, dataset_ids=torch.tensor([0, 2]), image_buckets=buckets)


@pytest.mark.parametrize('num_experts', [1, 3])
def test_upcycled_gem_equals_dense_ffn(num_experts):
    torch.manual_seed(1)
    dense = FFN(DIM, HIDDEN, num_fcs=2, ffn_drop=0.)
    layer = MoEFFN(DIM, HIDDEN, num_experts=num_experts, num_datasets=2)
    layer.install_plan(torch.ones(2, num_experts, dtype=torch.long))
    layer.upcycle_from_ffn(dense)
    x, _, buckets = _batch(5)
    dataset_ids = torch.tensor([0, 1, 0, 1, 1])
    identity = torch.randn_like(x)
    out = layer(x, identity, dataset_ids=dataset_ids, image_buckets=buckets)
    torch.testing.assert_close(out, dense(x, identity), rtol=1e-5, atol=1e-6)
    # the state dict route gives the same experts
    other = MoEFFN(DIM, HIDDEN, num_experts=num_experts, num_datasets=2)
    other.upcycle_from_ffn(dense.state_dict())
    torch.testing.assert_close(other.w2, layer.w2)


def test_upcycle_errors_name_the_keys():
    layer = MoEFFN(DIM, HIDDEN, num_experts=2)
    with pytest.raises(KeyError, match='layers.1.bias'):
        layer.upcycle_from_ffn({
            'layers.0.0.weight': torch.zeros(HIDDEN, DIM),
            'layers.0.0.bias': torch.zeros(HIDDEN),
            'layers.1.weight': torch.zeros(DIM, HIDDEN)
        })
    with pytest.raises(ValueError, match=r'layers.0.0.weight has shape'):
        layer.upcycle_from_ffn(FFN(DIM, 2 * HIDDEN))


def test_per_expert_init():
    torch.manual_seed(0)
    layer = MoEFFN(256, 512, num_experts=4)
    # nn.Linear's default init: |w| <= 1/sqrt(fan_in) per expert slice
    bound = 1 / math.sqrt(256)
    for e in range(4):
        w = layer.w1.data[e]
        assert float(w.abs().max()) <= bound
        assert float(w.abs().max()) > 0.99 * bound
        assert float(layer.b1.data[e].abs().max()) <= bound
    assert not torch.equal(layer.w1.data[0], layer.w1.data[1])
    layer.xavier_init_experts()
    xavier_bound = math.sqrt(6 / (256 + 512))
    for weight in (layer.w1, layer.w2):
        for e in range(4):
            peak = float(weight.data[e].abs().max())
            assert 0.99 * xavier_bound < peak <= xavier_bound
        torch.testing.assert_close(
            weight.data.std(), torch.tensor(xavier_bound / math.sqrt(3)),
            rtol=0.02, atol=0)


def _np_softmax(logits):
    z = np.exp(logits - logits.max(axis=1, keepdims=True))
    return z / z.sum(axis=1, keepdims=True)


def _np_cv2(values):
    return values.var() / values.mean()**2


def _router_case(routing, **kwargs):
    """Tokens e_i (one-hot) make the router logits equal to its weight."""
    num_experts, num_tokens = 3, 6
    layer = MoEFFN(num_tokens, 8, num_experts=num_experts, num_datasets=2,
                   routing=routing, capacity_factor=10., **kwargs)
    logits = torch.tensor([[2.0, 0.5, -1.0], [0.1, 0.2, 0.3], [-0.5, 1.5, 0.0],
                           [0.0, 0.0, 0.9], [1.0, -2.0, 0.5],
                           [0.3, 0.3, -0.3]])
    with torch.no_grad():
        layer.router.gate.weight.copy_(logits.t())
    x = torch.eye(num_tokens).view(2, 3, num_tokens)
    return layer, x, logits.numpy().astype(np.float64)


def test_moe_importance_load_loss_matches_independent_formula():
    layer, x, logits = _router_case('moe')
    layer.train()
    noise_std = 1.0 / 3
    torch.manual_seed(123)
    noise = (torch.randn(6, 3) * noise_std).numpy().astype(np.float64)
    torch.manual_seed(123)
    layer(x)
    noisy = logits + noise
    importance = _np_softmax(logits).sum(axis=0)
    threshold = noisy.max(axis=1, keepdims=True)
    phi = np.vectorize(lambda v: 0.5 * (1 + math.erf(v / math.sqrt(2))))
    load = phi((logits - threshold) / noise_std).sum(axis=0)
    expected = 0.1 * 0.5 * (_np_cv2(importance) + _np_cv2(load))
    assert set(layer.aux_losses) == {'loss_moe_aux'}
    assert abs(float(layer.aux_losses['loss_moe_aux']) - expected) < 1e-6
    expected_tokens = np.bincount(noisy.argmax(axis=1), minlength=3)
    assert layer.routing_stats['expert_tokens'].tolist() == \
        expected_tokens.tolist()
    layer.eval()
    layer(x)
    assert layer.aux_losses == {}


def test_damex_ce_matches_independent_formula():
    layer, x, logits = _router_case('damex', aux_loss_weight=0.5)
    quota = np.array([[1, 0, 0], [0, 1, 1]])
    layer.install_plan(torch.from_numpy(quota))
    dataset_ids = torch.tensor([0, 1])
    buckets = torch.tensor([11, 4])
    layer.train()
    layer(x, dataset_ids=dataset_ids, image_buckets=buckets)
    targets = np.repeat(
        [route_bucket(quota[0], 11), route_bucket(quota[1], 4)], 3)
    assert targets.tolist() == [0, 0, 0, 1, 1, 1]
    log_probs = np.log(_np_softmax(logits))
    expected = 0.5 * -log_probs[np.arange(6), targets].mean()
    assert set(layer.aux_losses) == {'loss_damex_ce'}
    assert abs(float(layer.aux_losses['loss_damex_ce']) - expected) < 1e-6
    # without gate noise, the damex router picks the argmax of its logits
    assert layer.routing_stats['expert_tokens'].tolist() == np.bincount(
        logits.argmax(axis=1), minlength=3).tolist()
    # test time uses the router only, no routing info needed
    layer.eval()
    layer(x)
    assert layer.aux_losses == {}


@pytest.mark.parametrize('training', [False, True])
def test_moe_capacity_drops_overflow_tokens(training):
    torch.manual_seed(0)
    layer = MoEFFN(DIM, HIDDEN, num_experts=2, routing='moe',
                   capacity_factor=1.25)
    with torch.no_grad():
        # every token prefers expert 0 by a margin far above the noise
        layer.router.gate.weight.zero_()
        layer.router.gate.weight[0, 0] = 100.
    layer.train(training)
    x = torch.randn(2, 4, DIM)
    x[..., 0] = 1.
    out = layer(x)
    capacity = math.ceil(1.25 * 8 / 2)
    assert capacity == 5
    flat_x, flat_out = x.view(8, DIM), out.view(8, DIM)
    # tokens past the capacity (in flattened order) pass through unchanged
    assert torch.equal(flat_out[capacity:], flat_x[capacity:])
    gate = torch.softmax(torch.tensor([100., 0.]), 0)[0]
    for t in range(capacity):
        expected = flat_x[t].double() + float(gate) * _expert_ref(
            layer, 0, flat_x[t])
        torch.testing.assert_close(flat_out[t].double(), expected, rtol=1e-5,
                                   atol=1e-5)
    assert layer.routing_stats['expert_tokens'].tolist() == [5, 0]
    assert int(layer.routing_stats['dropped_tokens']) == 3


def test_moe_requires_gate_noise_and_valid_mode():
    with pytest.raises(ValueError, match='gate_noise > 0'):
        MoEFFN(DIM, HIDDEN, routing='moe', gate_noise=0.)
    with pytest.raises(ValueError, match="'top2'"):
        MoEFFN(DIM, HIDDEN, routing='top2')


@pytest.mark.parametrize('routing', ['gem', 'moe'])
def test_routing_stats_per_image(routing):
    layer = _gem_layer(routing=routing)
    layer.eval()
    x, dataset_ids, buckets = _batch(5)
    layer(x, dataset_ids=dataset_ids, image_buckets=buckets)
    per_image = layer.routing_stats['image_experts']
    assert per_image.shape == (5, 4)
    assert torch.equal(per_image.sum(0), layer.routing_stats['expert_tokens'])
    kept = per_image.sum(1) + 0
    assert int(kept.sum() + layer.routing_stats['dropped_tokens']) == 5 * 7
    if routing == 'gem':
        for b in range(5):
            e = route_bucket(QUOTA[int(dataset_ids[b])], int(buckets[b]))
            assert per_image[b].tolist() == [7 if i == e else 0 for i in range(4)]
