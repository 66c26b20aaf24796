# Copyright (c) mmgem contributors. All rights reserved.
"""GEM, DAMEX and Top-1 routers reproduce the pre-router code bit for bit.

The fixtures were captured from ``MoEFFN(routing=...)`` before routing
became pluggable (``router_fixtures.py``); every tensor must be equal
(``torch.equal``), through both the new ``router=dict(type=...)`` configs
and the legacy ``routing='...'`` names.
"""
import pytest
import torch
from router_fixtures import (
    DETECTOR_CASES,
    FIXTURE_DIR,
    LAYER_CASES,
    LAYER_DISPATCH,
    run_detector,
    run_layer,
)


@pytest.fixture(autouse=True)
def one_thread():
    """The fixtures were captured with one intra-op thread; a float sum
    splits differently over two, so compare with one (then restore)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _load(name):
    return torch.load(FIXTURE_DIR / f'{name}.pt', weights_only=True)


def _assert_same(result, expected):
    # keys added after the capture: the specialisation scalars (logged only)
    new = sorted(set(result) - set(expected))
    assert all(k.startswith('loss.moe_nmi_') for k in new), new
    assert not set(expected) - set(result)
    different = [k for k in expected if not torch.equal(result[k], expected[k])]
    assert not different, f'not bit-identical: {different}'


@pytest.mark.parametrize('name,legacy,router', LAYER_CASES,
                         ids=[c[0] for c in LAYER_CASES])
def test_layer_matches_pre_router_code(name, legacy, router):
    expected = _load(f'layer_{name}')
    _assert_same(run_layer(dict(router=router, **LAYER_DISPATCH.get(name, {}))),
                 expected)
    _assert_same(run_layer(legacy), expected)


@pytest.mark.parametrize('name,router', DETECTOR_CASES,
                         ids=[c[0] for c in DETECTOR_CASES])
def test_detector_matches_pre_router_code(name, router):
    _assert_same(run_detector(dict(router=router)), _load(f'detector_{name}'))
