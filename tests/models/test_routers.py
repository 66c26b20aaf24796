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
