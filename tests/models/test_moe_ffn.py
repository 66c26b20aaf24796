# Copyright (c) mmgem contributors. All rights reserved.
"""Behaviour of the MoE FFN layer: dispatch, gradients, losses, capacity."""
import math

import numpy as np
import pytest
import torch
from mmcv.cnn.bricks.transformer import FFN

from mmgem.models.layers import BatchRouting, MoEFFN, capacity_keep_mask, expert_capacity
from mmgem.planner.hashing import BUCKET_END, image_bucket, route_bucket
from tools.benchmark.routing import routing_from_plan

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
    return MoEFFN(DIM, HIDDEN, num_experts=4, **kwargs)


def _route(dataset_ids, buckets, quota=QUOTA):
    return routing_from_plan(torch.as_tensor(quota), dataset_ids, buckets)


def _expert_ref(layer, e, token):
    """One expert on one token, in float64, written out."""
    w1, b1 = layer.w1[e].double(), layer.b1[e].double()
    w2, b2 = layer.w2[e].double(), layer.b2[e].double()
    hidden = torch.clamp(w1 @ token.double() + b1, min=0)
    return w2 @ hidden + b2


def test_gem_dispatch_equals_per_token_loop():
    layer = _gem_layer()
    x, dataset_ids, buckets = _batch(9)
    out = layer(x, routing=_route(dataset_ids, buckets))
    expected = torch.empty(x.shape, dtype=torch.float64)
    for b in range(x.size(0)):
        e = route_bucket(QUOTA[int(dataset_ids[b])], int(buckets[b]))
        for t in range(x.size(1)):
            expected[b, t] = x[b, t].double() + _expert_ref(layer, e, x[b, t])
    torch.testing.assert_close(out.double(), expected, rtol=1e-5, atol=1e-5)
    # every image's tokens were processed by exactly one expert, none dropped
    assert int(layer.routing_stats['expert_tokens'].sum()) == x[..., 0].numel()
    assert int(layer.routing_stats['dropped_tokens']) == 0
    assert layer.aux_loss() is None


def test_gem_with_one_active_expert_uses_it_for_all_images():
    layer = _gem_layer()
    x, _, _ = _batch(4)
    dataset_ids = torch.zeros(4, dtype=torch.long)
    buckets = torch.tensor([0, 1, 2, 6])  # remainders 0,1,2,2 of quota 4
    out = layer(x, routing=_route(dataset_ids, buckets))
    assert layer.routing_stats['expert_tokens'].tolist() == [28, 0, 0, 0]
    ref = torch.stack([
        torch.stack([_expert_ref(layer, 0, tok) for tok in img]) for img in x
    ])
    torch.testing.assert_close(out.double(), x.double() + ref, rtol=1e-5,
                               atol=1e-5)


def test_gem_gradient_reaches_only_routed_experts():
    layer = _gem_layer()
    x, _, _ = _batch(3)
    # dataset 1's low buckets -> expert 2; dataset 0's top quarter -> expert 1
    dataset_ids = torch.tensor([1, 1, 0])
    top = BUCKET_END - 10
    buckets = torch.tensor([0, 5, top])
    used = {route_bucket(QUOTA[d], b) for d, b in zip([1, 1, 0], [0, 5, top])}
    assert used == {1, 2}
    layer(x, routing=_route(dataset_ids, buckets)).sum().backward()
    for param in (layer.w1, layer.b1, layer.w2, layer.b2):
        for e in range(4):
            grad_norm = float(param.grad[e].abs().sum())
            if e in used:
                assert grad_norm > 0
            else:
                assert grad_norm == 0


def test_gem_without_routing_raises():
    layer = _gem_layer()
    x, dataset_ids, buckets = _batch(2)
    with pytest.raises(ValueError, match='needs the planned expert.*BatchRouting'):
        layer(x)
    with pytest.raises(ValueError, match='needs the planned expert'):
        layer(x, routing=BatchRouting(dataset_ids=dataset_ids))
    with pytest.raises(ValueError, match=r'outside the layer\'s 4 experts'):
        layer(x, routing=BatchRouting(image_experts=torch.tensor([0, 4])))
    with pytest.raises(ValueError, match=r'B=3 images'):
        layer(x, routing=BatchRouting(image_experts=torch.tensor([0, 1, 2])))


def test_bad_plan_and_ids_are_reported():
    x, _, buckets = _batch(2)
    with pytest.raises(RuntimeError, match='no GEM plan is installed.*GEMPlannerHook'):
        _route(torch.tensor([0, 1]), buckets, np.zeros((3, 4), dtype=np.int64))
    with pytest.raises(ValueError, match=r'dataset id\(s\) \[5\] out of range'):
        _route(torch.tensor([0, 5]), buckets)
    quota = QUOTA.copy()
    quota[2] = 0
    with pytest.raises(ValueError, match=r'no image of dataset id\(s\) \[2\]'):
        _route(torch.tensor([0, 2]), buckets, quota)


@pytest.mark.parametrize('num_experts', [1, 3])
def test_upcycled_gem_equals_dense_ffn(num_experts):
    torch.manual_seed(1)
    dense = FFN(DIM, HIDDEN, num_fcs=2, ffn_drop=0.)
    layer = MoEFFN(DIM, HIDDEN, num_experts=num_experts)
    layer.upcycle_from_ffn(dense)
    x, _, buckets = _batch(5)
    dataset_ids = torch.tensor([0, 1, 0, 1, 1])
    identity = torch.randn_like(x)
    routing = _route(dataset_ids, buckets, np.ones((2, num_experts), dtype=np.int64))
    out = layer(x, identity, routing=routing)
    torch.testing.assert_close(out, dense(x, identity), rtol=1e-5, atol=1e-6)
    # the state dict route gives the same experts
    other = MoEFFN(DIM, HIDDEN, num_experts=num_experts)
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


def _np_phi(values):
    return np.vectorize(lambda v: 0.5 * (1 + math.erf(v / math.sqrt(2))))(values)


def _router_case(routing, **kwargs):
    """Tokens e_i (one-hot) make the router logits equal to its weight."""
    num_experts, num_tokens = 3, 6
    layer = MoEFFN(num_tokens, 8, num_experts=num_experts, routing=routing,
                   capacity_factor=10., **kwargs)
    logits = torch.tensor([[2.0, 0.5, -1.0], [0.1, 0.2, 0.3], [-0.5, 1.5, 0.0],
                           [0.0, 0.0, 0.9], [1.0, -2.0, 0.5],
                           [0.3, 0.3, -0.3]])
    with torch.no_grad():
        layer.router.gate.weight.copy_(logits.t())
    x = torch.eye(num_tokens).view(2, 3, num_tokens)
    return layer, x, logits.numpy().astype(np.float64)


def _noisy_case(routing, **kwargs):
    """The router case in training, with the noise it drew captured."""
    layer, x, logits = _router_case(routing, **kwargs)
    layer.train()
    noise_std = layer.router.gate_noise / 3
    torch.manual_seed(123)
    noise = (torch.randn(6, 3) * noise_std).numpy().astype(np.float64)
    return layer, x, logits, logits + noise, noise_std


def _np_tutel_loss(logits, chosen, num_experts, gate_noise):
    """Tutel 0.2's load_importance_loss, written out in numpy (float64)."""
    probs = _np_softmax(logits)
    importance = probs.sum(axis=0)
    threshold = logits[np.arange(len(logits)), chosen][:, None]
    load = _np_phi((probs - threshold) / (gate_noise / num_experts)).sum(axis=0)
    # torch's .var() is unbiased
    l_imp = importance.var(ddof=1) / (importance.mean()**2 + 1e-10)
    l_load = load.var(ddof=1) / (load.mean()**2 + 1e-10)
    return (l_imp + l_load) / 2


@pytest.mark.parametrize('foreground', [None, [1, 0, 1, 1, 0, 1]])
def test_moe_tutel_balance_loss_matches_independent_formula(foreground):
    layer, x, logits, noisy, _ = _noisy_case('moe')
    torch.manual_seed(123)
    layer(x)
    chosen = noisy.argmax(axis=1)
    mask = None
    keep = np.ones(6, dtype=bool)
    if foreground is not None:
        keep = np.array(foreground, dtype=bool)
        mask = torch.tensor(foreground, dtype=torch.bool).view(2, 3)
    expected = _np_tutel_loss(logits[keep], chosen[keep], 3, 1.0)
    assert abs(float(layer.aux_loss(mask)) - expected) < 1e-6
    assert layer.routing_stats['expert_tokens'].tolist() == \
        np.bincount(chosen, minlength=3).tolist()
    if foreground is not None:
        # the foreground selection changes the value
        assert abs(expected - _np_tutel_loss(logits, chosen, 3, 1.0)) > 1e-3
    layer.eval()
    layer(x)
    assert layer.aux_loss(mask) is None


def test_moe_vmoe_balance_loss_matches_independent_formula():
    layer, x, logits, noisy, noise_std = _noisy_case('moe', balance_loss='vmoe')
    torch.manual_seed(123)
    layer(x)
    importance = _np_softmax(logits).sum(axis=0)
    threshold = noisy.max(axis=1, keepdims=True)
    load = _np_phi((logits - threshold) / noise_std).sum(axis=0)
    expected = 0.5 * (_np_cv2(importance) + _np_cv2(load))
    assert abs(float(layer.aux_loss()) - expected) < 1e-6
    # the two formulas differ on the same logits
    tutel = _np_tutel_loss(logits, noisy.argmax(axis=1), 3, 1.0)
    assert abs(tutel - expected) > 1e-3


def test_damex_ce_matches_independent_formula():
    layer, x, logits, noisy, _ = _noisy_case('damex')
    quota = np.array([[1, 0, 0], [0, 1, 1]])
    routing = _route(torch.tensor([0, 1]), torch.tensor([11, 4]), quota)
    torch.manual_seed(123)
    layer(x, routing=routing)
    targets = np.repeat(
        [route_bucket(quota[0], 11), route_bucket(quota[1], 4)], 3)
    assert targets.tolist() == [0, 0, 0, 1, 1, 1]
    log_probs = np.log(_np_softmax(logits))
    expected = -log_probs[np.arange(6), targets].mean()
    # the CE ignores any token mask: DAMEX takes it over all tokens
    for mask in (None, torch.zeros(2, 3, dtype=torch.bool)):
        assert abs(float(layer.aux_loss(mask)) - expected) < 1e-6
    # DAMEX's router has gate noise (1.0) by default
    assert layer.router.gate_noise == 1.0
    chosen = noisy.argmax(axis=1)
    assert layer.routing_stats['expert_tokens'].tolist() == np.bincount(
        chosen, minlength=3).tolist()
    assert int(layer.routing_stats['router_hits']) == int((chosen == targets).sum())
    # test time uses the router only, no routing info needed
    layer.eval()
    layer(x)
    assert layer.aux_loss() is None


def test_tutel_capacity_formula():
    # Tutel 0.2 (top-1): int(capacity_factor * ceil(T / M))
    assert expert_capacity(8, 2, 1.25) == 5
    assert expert_capacity(10, 4, 1.25) == 3  # ceil(1.25 * 10 / 4) would be 4
    assert expert_capacity(1100, 8, 1.25) == 172
    assert expert_capacity(3, 8, 0.5) == 1  # never 0
    with pytest.raises(ValueError, match='capacity_factor must be > 0'):
        expert_capacity(8, 2, 0)


def _overflow_layer(priority):
    torch.manual_seed(0)
    layer = MoEFFN(DIM, HIDDEN, num_experts=2, routing='moe',
                   capacity_factor=1.25, capacity_priority=priority)
    with torch.no_grad():
        # every token prefers expert 0; its margin (so its gate) is set by
        # input feature 0, far above the noise
        layer.router.gate.weight.zero_()
        layer.router.gate.weight[0, 0] = 1.
    return layer


@pytest.mark.parametrize('training', [False, True])
def test_capacity_keeps_highest_gates_of_both_images(training):
    layer = _overflow_layer('score')
    layer.train(training)
    x = torch.randn(2, 4, DIM, generator=torch.Generator().manual_seed(5))
    # margins for expert 0: image 0 has the lower ones, so keeping by
    # position would take all 4 tokens of image 0 and 1 of image 1
    margins = torch.tensor([[2.0, 2.2, 2.4, 2.6], [5.0, 2.8, 6.0, 4.0]])
    x[..., 0] = margins
    logits = torch.stack([margins, torch.zeros_like(margins)], -1).view(8, 2)
    if training:  # the noise the router draws (std gate_noise / M)
        torch.manual_seed(7)
        logits = logits + torch.randn(8, 2) * 0.5
        torch.manual_seed(7)
    out = layer(x)
    gates, chosen = logits.softmax(-1).max(-1)
    assert chosen.eq(0).all()  # every token still prefers expert 0
    capacity = expert_capacity(8, 2, 1.25)
    assert capacity == 5
    flat_x, flat_out = x.view(8, DIM), out.view(8, DIM)
    kept_expected = torch.zeros(8, dtype=torch.bool)
    kept_expected[gates.argsort(descending=True)[:capacity]] = True
    # both images keep tokens: the five highest gates
    assert kept_expected.view(2, 4).any(dim=1).all()
    for t in range(8):
        if kept_expected[t]:
            expected = flat_x[t].double() + float(gates[t]) * _expert_ref(
                layer, 0, flat_x[t])
            torch.testing.assert_close(flat_out[t].double(), expected,
                                       rtol=1e-5, atol=1e-5)
        else:  # dropped tokens pass through unchanged
            assert torch.equal(flat_out[t], flat_x[t])
    assert layer.routing_stats['expert_tokens'].tolist() == [5, 0]
    assert int(layer.routing_stats['dropped_tokens']) == 3
    token_experts = layer.routing_stats['token_experts']
    assert torch.equal(token_experts.view(-1) >= 0, kept_expected)


def test_capacity_by_position_is_an_option():
    layer = _overflow_layer('position')
    layer.eval()
    x = torch.randn(2, 4, DIM)
    x[..., 0] = torch.tensor([[2.0, 2.2, 2.4, 2.6], [5.0, 2.8, 6.0, 4.0]])
    out = layer(x)
    flat_x, flat_out = x.view(8, DIM), out.view(8, DIM)
    # the first five tokens in image-major order
    assert torch.equal(flat_out[5:], flat_x[5:])
    assert not torch.equal(flat_out[:5], flat_x[:5])


def test_capacity_keep_mask_independent_ranking():
    gen = torch.Generator().manual_seed(3)
    experts = torch.randint(0, 3, (40, ), generator=gen)
    scores = torch.rand(40, generator=gen)
    kept = capacity_keep_mask(experts, scores, 3, capacity=4)
    for e in range(3):
        idx = (experts == e).nonzero().flatten().tolist()
        best = sorted(idx, key=lambda i: -float(scores[i]))[:4]
        assert sorted(kept.nonzero().flatten()[experts[kept] == e].tolist()) == sorted(best)
    by_pos = capacity_keep_mask(experts, scores, 3, capacity=4, priority='position')
    for e in range(3):
        idx = (experts == e).nonzero().flatten().tolist()
        assert by_pos.nonzero().flatten()[experts[by_pos] == e].tolist() == idx[:4]
    with pytest.raises(ValueError, match="'random'"):
        capacity_keep_mask(experts, scores, 3, 4, priority='random')


def test_moe_requires_gate_noise_and_valid_mode():
    with pytest.raises(ValueError, match='gate_noise > 0'):
        MoEFFN(DIM, HIDDEN, routing='moe', gate_noise=0.)
    with pytest.raises(ValueError, match="'top2'"):
        MoEFFN(DIM, HIDDEN, routing='top2')
    with pytest.raises(ValueError, match="balance_loss.*'gshard'"):
        MoEFFN(DIM, HIDDEN, routing='moe', balance_loss='gshard')


@pytest.mark.parametrize('routing', ['gem', 'moe'])
def test_routing_stats_per_image(routing):
    layer = _gem_layer(routing=routing)
    layer.eval()
    x, dataset_ids, buckets = _batch(5)
    layer(x, routing=_route(dataset_ids, buckets))
    per_image = layer.routing_stats['image_experts']
    assert per_image.shape == (5, 4)
    assert torch.equal(per_image.sum(0), layer.routing_stats['expert_tokens'])
    kept = per_image.sum(1) + 0
    assert int(kept.sum() + layer.routing_stats['dropped_tokens']) == 5 * 7
    token_experts = layer.routing_stats['token_experts']
    assert token_experts.shape == (5, 7)
    for b in range(5):
        assert per_image[b].tolist() == torch.bincount(
            token_experts[b][token_experts[b] >= 0], minlength=4).tolist()
    if routing == 'gem':
        for b in range(5):
            e = route_bucket(QUOTA[int(dataset_ids[b])], int(buckets[b]))
            assert per_image[b].tolist() == [7 if i == e else 0 for i in range(4)]
