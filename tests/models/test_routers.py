# Copyright (c) mmgem contributors. All rights reserved.
"""Each router of mmgem.models.routers against an independent computation.

The references are written from the papers' equations in numpy (float64),
not from the routers' code; each test runs a router inside a real
:class:`MoEFFN` on small tensors.
"""
import numpy as np
import pytest
import torch

from mmgem.models.layers import MoEFFN
from mmgem.models.routers import BaseRouter, SinkhornRouter, router_class
from mmgem.registry import ROUTERS

DIM, HIDDEN, EXPERTS = 8, 16, 4


def _np_expert(layer, e, x):
    """Expert ``e`` of ``layer`` in numpy: relu(x W1^T + b1) W2^T + b2."""
    w1, b1 = layer.w1[e].detach().double().numpy(), layer.b1[e].detach().double().numpy()
    w2, b2 = layer.w2[e].detach().double().numpy(), layer.b2[e].detach().double().numpy()
    return np.maximum(x @ w1.T + b1, 0) @ w2.T + b2


def _np_sinkhorn(logits, tol=1e-4):
    """Balance exp(logits) to uniform row and column sums (Cuturi 2013).

    Rows (tokens) get mass 1/T, columns (experts) 1/M; iterate row then
    column rescaling of the full matrix until the column sums are within
    ``tol`` of 1/M.
    """
    p = np.exp(logits - logits.max())
    t, m = p.shape
    for _ in range(100000):
        p = p / p.sum(1, keepdims=True) / t
        p = p / p.sum(0, keepdims=True) / m
        if np.abs(p.sum(1) - 1 / t).max() < tol / t:
            break
    return p


def _layer(router, seed=0):
    torch.manual_seed(seed)
    return MoEFFN(DIM, HIDDEN, num_experts=EXPERTS, router=router)


def test_every_router_is_registered_and_a_base_router():
    for name in ('GEMRouter', 'DAMEXRouter', 'Top1Router', 'SinkhornRouter'):
        assert issubclass(router_class(dict(type=name)), BaseRouter)
        assert ROUTERS.get(name) is router_class(dict(type=name))


@pytest.mark.parametrize('training', [True, False])
def test_sinkhorn_router_matches_numpy(training):
    layer = _layer(dict(type='SinkhornRouter'))
    # affinities skewed towards expert 0: greedy sends most tokens there,
    # the balanced assignment may not
    with torch.no_grad():
        layer.router.expert_centroids.mul_(20)
    gen = torch.Generator().manual_seed(3)
    x = torch.randn(2, 8, DIM, generator=gen) + 0.5
    layer.train(training)
    out = layer(x).detach()
    xs = x.reshape(-1, DIM).double().numpy()
    logits = xs @ layer.router.expert_centroids.detach().double().numpy().T
    scores = _np_sinkhorn(logits) if training else logits
    experts = scores.argmax(1)
    gates = 1 / (1 + np.exp(-logits[np.arange(len(xs)), experts]))
    expected = xs + np.stack([g * _np_expert(layer, e, t[None])[0]
                              for t, e, g in zip(xs, experts, gates)])
    np.testing.assert_allclose(out.reshape(-1, DIM).double().numpy(), expected,
                               rtol=1e-5, atol=1e-5)
    assert layer.routing_stats['token_experts'].reshape(-1).tolist() == experts.tolist()
    assert int(layer.routing_stats['dropped_tokens']) == 0
    assert layer.aux_loss() is None


def test_sinkhorn_balances_what_greedy_does_not():
    router = SinkhornRouter(DIM, EXPERTS)
    logits = torch.zeros(16, EXPERTS)
    logits[:, 0] = 3.0  # every token prefers expert 0
    logits += torch.randn(16, EXPERTS, generator=torch.Generator().manual_seed(0))
    router.train()
    balanced = torch.bincount(router.assign(logits), minlength=EXPERTS)
    router.eval()
    greedy = torch.bincount(router.assign(logits), minlength=EXPERTS)
    assert int(greedy[0]) >= 14
    assert int(balanced.max()) <= 6 and int(balanced.min()) >= 2, balanced.tolist()


def test_sinkhorn_centroids_learn_through_the_gate():
    layer = _layer(dict(type='SinkhornRouter'))
    layer.train()
    layer(torch.randn(2, 5, DIM)).square().sum().backward()
    assert float(layer.router.expert_centroids.grad.abs().sum()) > 0


def _np_softmax(z, axis):
    z = z - z.max(axis=axis, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=axis, keepdims=True)


def _np_soft_moe(layer, seq):
    """Soft MoE on one (m, C) sequence from the paper's equations, numpy."""
    router = layer.router
    mu = router.mu.detach().double().numpy()  # (C, M, p)
    mu = mu / np.sqrt((mu ** 2).sum(0, keepdims=True) + 1e-6)
    xn = seq / np.sqrt((seq ** 2).sum(1, keepdims=True) + 1e-6)
    logits = float(router.scale) * np.einsum('md,dnp->mnp', xn, mu)
    m, n, p = logits.shape
    dispatch = _np_softmax(logits, axis=0)
    combine = _np_softmax(logits.reshape(m, n * p), axis=1).reshape(m, n, p)
    out = np.zeros_like(seq)
    for e in range(n):
        for s in range(p):
            slot = (dispatch[:, e, s][:, None] * seq).sum(0)
            y = _np_expert(layer, e, slot[None])[0]
            out += combine[:, e, s][:, None] * y[None]
    return out


def test_soft_moe_matches_numpy_and_keeps_denoising_groups_apart():
    from mmgem.models.layers import BatchRouting
    layer = _layer(dict(type='SoftMoERouter', num_slots=3))
    with torch.no_grad():
        layer.router.scale.fill_(4.0)
    gen = torch.Generator().manual_seed(5)
    x = torch.randn(2, 10, DIM, generator=gen)
    # 2 denoising groups of 2 queries, then 6 matching queries
    routing = BatchRouting(num_denoising_queries=4, num_denoising_groups=2)
    layer.train()
    out = layer(x, routing=routing).detach().double().numpy()
    xs = x.double().numpy()
    for b in range(2):
        for lo, hi in ((0, 2), (2, 4), (4, 10)):
            seq = xs[b, lo:hi]
            np.testing.assert_allclose(out[b, lo:hi], seq + _np_soft_moe(layer, seq),
                                       rtol=1e-5, atol=1e-5)
    # a change of one denoising query reaches no matching query and no other group
    x2 = x.clone()
    x2[:, 0] += 10
    out2 = layer(x2, routing=routing).detach().double().numpy()
    np.testing.assert_array_equal(out2[:, 2:], out[:, 2:])
    assert not np.allclose(out2[:, 1], out[:, 1])
    # at test time (no denoising queries) the image's queries are one sequence
    layer.eval()
    out3 = layer(x).detach().double().numpy()
    np.testing.assert_allclose(out3[1], xs[1] + _np_soft_moe(layer, xs[1]), rtol=1e-5, atol=1e-5)
    assert layer.aux_loss() is None
    assert layer.routing_stats['token_experts'].shape == (2, 10)


def test_soft_moe_in_gem_dino_gets_the_denoising_layout():
    from test_gem_dino import OFFSETS, _batch, _build, _gem_cfg
    model = _build(_gem_cfg(num_experts=4, num_datasets=2, label_offsets=OFFSETS,
                            router=dict(type='SoftMoERouter', num_slots=2)))
    seen = []
    for ffn in model.moe_ffns():
        ffn.register_forward_pre_hook(
            lambda mod, args, kwargs: seen.append((kwargs['routing'].num_denoising_queries,
                                                   kwargs['routing'].num_denoising_groups)),
            with_kwargs=True)
    model.train()
    inputs, samples = _batch(model, [0, 1], training=True)
    losses = model.loss(inputs, samples)
    assert seen and all(n > 0 and g > 0 and n % g == 0 for n, g in seen)
    sum(v for k, v in losses.items() if 'loss' in k).backward()
    assert float(model.moe_ffns()[0].router.mu.grad.abs().sum()) > 0


def test_remoe_matches_numpy_and_adapts_lambda():
    layer = _layer(dict(type='ReMoERouter', num_active=1, l1_coeff=0.5))
    with torch.no_grad():
        layer.router.gate.weight.mul_(50)  # several gates positive per token
    gen = torch.Generator().manual_seed(2)
    x = torch.randn(2, 6, DIM, generator=gen)
    layer.train()
    out = layer(x).detach().reshape(-1, DIM).double().numpy()
    xs = x.reshape(-1, DIM).double().numpy()
    g = np.maximum(xs @ layer.router.gate.weight.detach().double().numpy().T, 0)
    expected = xs.copy()
    for t in range(len(xs)):
        for e in range(EXPERTS):
            if g[t, e] > 0:
                expected[t] += g[t, e] * _np_expert(layer, e, xs[t][None])[0]
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-5)
    # L = lambda * M / (T^2 k) * sum_e (sum_t g_te) * n_e, with the lambda before the update
    t_count = len(xs)
    loss = 0.5 * EXPERTS / (t_count ** 2 * 1) * (g.sum(0) * (g > 0).sum(0)).sum()
    np.testing.assert_allclose(float(layer.aux_loss()), loss, rtol=1e-5)
    # more than 1 of 4 experts active: sparsity < 0.75 -> lambda grows by 1.2
    assert (g > 0).mean() > 0.25
    assert float(layer.router.l1_coeff) == pytest.approx(0.5 * 1.2)
    # a sparser forward makes it shrink
    with torch.no_grad():
        layer.router.gate.weight.fill_(-1.0)
    layer(x.abs())
    assert float(layer.router.l1_coeff) == pytest.approx(0.5)
    assert int(layer.routing_stats['dropped_tokens']) == x[..., 0].numel()
    layer.eval()
    layer(x)
    assert layer.aux_loss() is None and float(layer.router.l1_coeff) == pytest.approx(0.5)


def _np_moe_pp(layer, xs, previous=None):
    """MoE++ from the paper/reference equations in numpy; returns (out, logits)."""
    r = layer.router
    w1 = r.wg[0].weight.detach().double().numpy()
    w2 = r.wg[2].weight.detach().double().numpy()
    logits = np.tanh(xs @ w1.T) @ w2.T
    if previous is not None:
        logits = logits + previous @ r.gate_map.weight.detach().double().numpy().T
    probs = _np_softmax(logits, axis=1)
    m, total = EXPERTS, r.total_experts
    out = np.zeros_like(xs)
    for t in range(len(xs)):
        top = np.argsort(-probs[t])[:r.top_k]
        w = np.array([0.0 if e == total - 1 else probs[t, e] for e in top])
        w = w / w.sum()
        inp = xs[t] * r.top_k
        for e, we in zip(top, w):
            if e < m:
                y = _np_expert(layer, e, inp[None])[0]
            elif e < m + r.num_constant:
                c = e - m
                g = _np_softmax(inp @ r.constant_gates[c].weight.detach().double().numpy().T, 0)
                y = g[0] * inp + g[1] * r.constants[c].detach().double().numpy()
            elif e == m + r.num_constant:
                y = inp
            else:
                y = np.zeros_like(inp)
            out[t] += we * y
    return out, logits


def test_moe_plus_plus_matches_numpy_with_gating_residual():
    from mmgem.models.layers import BatchRouting
    first = _layer(dict(type='MoEPlusPlusRouter'), seed=0)
    second = _layer(dict(type='MoEPlusPlusRouter'), seed=1)
    with torch.no_grad():  # spread the choices over every kind of expert
        for layer in (first, second):
            layer.router.wg[2].weight.mul_(30)
            layer.router.gate_map.weight.mul_(3)
    x = torch.randn(3, 7, DIM, generator=torch.Generator().manual_seed(4))
    routing = BatchRouting()
    first.train()
    second.train()
    y1 = first(x, routing=routing)
    y2 = second(y1, routing=routing)
    xs = x.reshape(-1, DIM).double().numpy()
    ref1, logits1 = _np_moe_pp(first, xs)
    np.testing.assert_allclose(y1.detach().reshape(-1, DIM).double().numpy(), xs + ref1,
                               rtol=1e-4, atol=1e-4)
    y1s = y1.detach().reshape(-1, DIM).double().numpy()
    ref2, _ = _np_moe_pp(second, y1s, previous=logits1)
    np.testing.assert_allclose(y2.detach().reshape(-1, DIM).double().numpy(), y1s + ref2,
                               rtol=1e-4, atol=1e-4)
    assert int(first.routing_stats['zero_comp_choices']) > 0
    assert first.aux_loss() is None  # the released code: no balancing loss
    y2.square().sum().backward()
    assert float(second.router.gate_map.weight.grad.abs().sum()) > 0
    assert float(first.router.constants.grad.abs().sum()) > 0


def test_moe_plus_plus_heterogeneous_balance_loss():
    layer = _layer(dict(type='MoEPlusPlusRouter', balance_tau=0.5))
    x = torch.randn(2, 5, DIM, generator=torch.Generator().manual_seed(6))
    layer.train()
    layer(x)
    xs = x.reshape(-1, DIM).double().numpy()
    _, logits = _np_moe_pp(layer, xs)
    probs = _np_softmax(logits, axis=1)
    e = layer.router.total_experts
    top = np.argsort(-probs, axis=1)[:, :2]
    f = np.bincount(top.reshape(-1), minlength=e) / top.size
    eta = np.array([1.0] * EXPERTS + [0.5] * (e - EXPERTS))
    np.testing.assert_allclose(float(layer.aux_loss()), e * (eta * f * probs.mean(0)).sum(),
                               rtol=1e-5)


@pytest.mark.parametrize('router', [
    dict(type='SinkhornRouter'),
    dict(type='SoftMoERouter', num_slots=2),
    dict(type='ReMoERouter'),
    dict(type='MoEPlusPlusRouter', balance_tau=0.75),
    dict(type='MuMoERouter'),
], ids=lambda r: r['type'])
def test_every_new_router_trains_and_predicts_in_gem_dino(router):
    from test_gem_dino import OFFSETS, _batch, _build, _gem_cfg
    model = _build(_gem_cfg(num_experts=4, num_datasets=2, label_offsets=OFFSETS,
                            router=router))
    assert not model.router_cls.needs_plan  # no plan installed: none needed
    model.train()
    inputs, samples = _batch(model, [0, 1], training=True)
    losses = model.loss(inputs, samples)
    name = model.router_cls.aux_loss_name
    if name is not None:
        assert float(losses[name]) > 0
    assert {'moe_nmi_d0', 'moe_nmi_d2'} <= set(losses)
    sum(v for k, v in losses.items() if 'loss' in k).backward()
    grads = [p.grad for p in model.moe_ffns()[0].router.parameters()]
    assert grads and any(g is not None and float(g.abs().sum()) > 0 for g in grads)
    model.eval()
    inputs, samples = _batch(model, [0, 1], training=False)
    with torch.no_grad():
        assert len(model.predict(inputs, samples)) == 2


def _np_entmax15(z, iters=200):
    """entmax-1.5 by bisection on the threshold: p = [z/2 - tau]_+^2, sum p = 1."""
    z = np.asarray(z, dtype=np.float64) / 2
    lo = z.max(-1, keepdims=True) - 1  # sum >= 1 here (the top entry alone gives 1)
    hi = z.max(-1, keepdims=True)      # sum = 0 here
    for _ in range(iters):
        mid = (lo + hi) / 2
        big = (np.maximum(z - mid, 0) ** 2).sum(-1, keepdims=True) >= 1
        lo, hi = np.where(big, mid, lo), np.where(big, hi, mid)
    return np.maximum(z - (lo + hi) / 2, 0) ** 2


def test_entmax15_matches_bisection_and_its_jacobian():
    from mmgem.models.layers.cp_mumoe import entmax15
    gen = torch.Generator().manual_seed(0)
    z = torch.cat([torch.randn(50, 6, generator=gen, dtype=torch.float64) * s
                   for s in (0.1, 1.0, 5.0)])
    z[0] = torch.tensor([1., 1., 1., 0., -3., 1.], dtype=torch.float64)  # ties
    p = entmax15(z)
    np.testing.assert_allclose(p.numpy(), _np_entmax15(z.numpy()), rtol=1e-9, atol=1e-12)
    assert (p == 0).any() and (p > 0).sum(-1).min() >= 1
    np.testing.assert_allclose(p.sum(-1).numpy(), 1, rtol=1e-12)
    z = torch.randn(4, 5, generator=gen, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(entmax15, (z, ))


def _np_gelu(x):
    from scipy.special import erf
    return 0.5 * x * (1 + erf(x / np.sqrt(2)))


def _np_mumoe_linear(fc, x, a):
    """Eq. 2 of Oldfield et al. with the full weight tensor formed:
    W[n, i, o] = sum_r A[n, r] B[i, r] D[o, r]; y = sum_n a_n [x; 1] W[n]."""
    f = [t.detach().double().numpy()
         for t in (fc.expert_factor, fc.input_factor, fc.output_factor)]
    weight = np.einsum('nr,ir,or->nio', *f)
    z = np.concatenate([x, np.ones((len(x), 1))], axis=1)
    return np.einsum('tn,ti,nio->to', a, z, weight)


def _np_mumoe(layer, x):
    """The reference MuMoE (hierarchy 1, LN gating, GELU between two layers)."""
    r = layer.router
    logits = x @ r.gate.detach().double().numpy()
    norm = (logits - logits.mean(1, keepdims=True)) / np.sqrt(
        logits.var(1, keepdims=True) + 1e-5)
    a = _np_entmax15(norm)
    return _np_mumoe_linear(r.fc2, _np_gelu(_np_mumoe_linear(r.fc1, x, a)), a), a


def test_mumoe_matches_numpy_and_owns_its_experts():
    layer = _layer(dict(type='MuMoERouter', rank=12))
    assert not hasattr(layer, 'w1') and layer.owns_experts
    with torch.no_grad():
        layer.router.gate.normal_()  # the reference's zero init routes uniformly
    x = torch.randn(2, 7, DIM)
    out = layer(x)
    ref, a = _np_mumoe(layer, x.reshape(-1, DIM).double().numpy())
    np.testing.assert_allclose(out.detach().reshape(-1, DIM).numpy(),
                               x.reshape(-1, DIM).numpy() + ref, rtol=1e-4, atol=1e-5)
    stats = layer.routing_stats
    np.testing.assert_array_equal(stats['token_experts'].reshape(-1).numpy(), a.argmax(1))
    assert int(stats['active_experts']) == int((a > 0).sum())
    assert 0 < (a == 0).mean() < 1  # entmax: sparse, not one-hot everywhere
    out.square().sum().backward()
    # every parameter takes part (DDP without find_unused_parameters)
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in layer.parameters())


def test_mumoe_init_upcycling_and_expert_parallel_refusal():
    from mmcv.cnn.bricks.transformer import FFN

    from mmgem.models.layers import convert_to_expert_parallel
    layer = _layer(dict(type='MuMoERouter', rank=17))
    for p in layer.parameters():
        torch.nn.init.xavier_uniform_(p.data.view(p.size(0), -1))  # as DINO's init
    layer.xavier_init_experts()  # gives the factors their own init back
    r = layer.router
    assert float(r.gate.abs().sum()) == 0
    assert abs(float(r.fc1.expert_factor.mean()) - 1) < 0.5
    assert float(r.fc2.output_factor.abs().max()) <= 17**-0.5
    dense = FFN(DIM, HIDDEN, act_cfg=dict(type='GELU'))
    layer.upcycle_from_ffn(dense)
    with torch.no_grad():
        r.gate.normal_()  # any gates: every expert is the dense FFN
        x = torch.randn(3, 5, DIM)
        torch.testing.assert_close(layer(x), dense(x), rtol=1e-5, atol=1e-5)
    small = _layer(dict(type='MuMoERouter', rank=8))  # < min(DIM + 1, HIDDEN) = 9
    with pytest.raises(ValueError, match='set rank >= 9'):
        small.upcycle_from_ffn(dense)
    with pytest.raises(NotImplementedError, match='expert parallelism'):
        convert_to_expert_parallel(layer)


@pytest.mark.parametrize('std', [0.02, 0.0])
def test_mumoe_upcycling_breaks_the_experts_symmetry(std):
    """Upcycled, the zero gate is a fixed point: uniform coefficients, no gate
    gradient, identical expert gradients. The drawn gate leaves the output
    the dense FFN's and gives the experts different gradients."""
    from mmcv.cnn.bricks.transformer import FFN
    layer = _layer(dict(type='MuMoERouter', rank=17, upcycle_gate_std=std))
    layer.xavier_init_experts()
    dense = FFN(DIM, HIDDEN, act_cfg=dict(type='GELU'))
    layer.upcycle_from_ffn(dense)
    x = torch.randn(3, 5, DIM)
    torch.testing.assert_close(layer(x), dense(x), rtol=1e-5, atol=1e-5)
    layer(x).square().sum().backward()
    r = layer.router
    a = r.coefficients(x).reshape(-1, r.num_experts)
    factor_grad = r.fc1.expert_factor.grad  # (M, R)
    spread = float((factor_grad - factor_grad.mean(0)).abs().max())
    if std:
        assert float(r.gate.std()) == pytest.approx(std, rel=0.3)
        assert float(r.gate.grad.abs().sum()) > 0
        assert float(a.std(1).min()) > 0  # no token with uniform coefficients
        assert spread > 1e-6  # the experts move apart
    else:  # the fixed point the option avoids
        assert float(r.gate.abs().sum()) == 0
        assert float(r.gate.grad.abs().max()) < 1e-6
        assert float(a.std(1).max()) < 1e-6
        assert spread < 1e-6
    with pytest.raises(ValueError, match='upcycle_gate_std'):
        _layer(dict(type='MuMoERouter', upcycle_gate_std=-1))


def test_mumoe_gem_dino_upcycles_from_dense_dino():
    from mmcv.cnn.bricks.transformer import FFN
    from test_gem_dino import OFFSETS, _build, _dino_cfg, _gem_cfg
    dino = _build(_dino_cfg())
    model = _build(_gem_cfg(num_experts=4, num_datasets=2, label_offsets=OFFSETS,
                            router=dict(type='MuMoERouter')))
    assert not any(k.endswith(('.w1', '.w2')) for k in model.state_dict())
    model.load_dense_state_dict(dino.state_dict(), strict=True)
    for i in model.moe_layers:
        moe, ffn = model.decoder.layers[i].ffn, dino.decoder.layers[i].ffn
        dense = FFN(moe.embed_dims, moe.feedforward_channels, act_cfg=dict(type='GELU'))
        dense.load_state_dict(ffn.state_dict())
        with torch.no_grad():
            moe.router.gate.normal_()
            x = torch.randn(2, 3, moe.embed_dims)
            torch.testing.assert_close(moe(x), dense(x), rtol=1e-4, atol=1e-4)
