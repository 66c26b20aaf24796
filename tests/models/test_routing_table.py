# Copyright (c) mmgem contributors. All rights reserved.
"""The model's one copy of the GEM plan: RoutingTable and old checkpoints."""
import io

import numpy as np
import pytest
import torch

from mmgem.models.layers.routing_table import (
    RoutingTable,
    decode_table,
    plan_of_state_dict,
    upgrade_legacy_state_dict,
)
from mmgem.planner import build_similarity, make_plan
from mmgem.planner.hashing import bucket_thresholds

NAMES = ['natural', 'signs', 'clipart']


def _plan():
    ids = {n: [f'{n}/{i}.jpg' for i in range(20 + 7 * d)] for d, n in enumerate(NAMES)}
    sim = build_similarity(NAMES, prior=[['natural', 'clipart']], weights=dict(prior=1.0))
    return make_plan(NAMES, [len(ids[n]) for n in NAMES], sim, 4, capacity_factor=1.25,
                     image_ids=ids)


def test_the_plan_travels_once_in_the_state_dict():
    plan = _plan()
    table = RoutingTable(3, 4)
    table.attach(plan, source='test')
    # a weights-only load of the saved state takes it back (a uint8 tensor of JSON)
    buffer = io.BytesIO()
    torch.save(table.state_dict(), buffer)
    buffer.seek(0)
    state = torch.load(buffer, weights_only=True)
    assert list(state) == ['_extra_state'] and state['_extra_state'].dtype == torch.uint8
    assert decode_table(state['_extra_state'])['plan'] == plan.to_dict()
    fresh = RoutingTable(3, 4)
    fresh.load_state_dict(state)
    assert fresh.plan == plan and fresh.plan_hash == plan.hash and fresh.source == 'checkpoint'
    quota, names, thresholds = fresh.host()
    assert quota.device.type == 'cpu' and names == tuple(NAMES)
    np.testing.assert_array_equal(quota.numpy(), plan.quota)
    np.testing.assert_array_equal(thresholds.numpy(), plan.thresholds)
    # a table of another shape refuses it, naming both
    with pytest.raises(ValueError, match='3 datasets x 4 experts, the model 3 x 2'):
        RoutingTable(3, 2).load_state_dict(state)


def test_a_bare_table_routes_by_quantiles_and_round_trips():
    quota = np.array([[3, 1, 0, 0], [0, 0, 2, 2], [0, 5, 0, 0]])
    table = RoutingTable(3, 4)
    table.set_routing(quota, dataset_names=NAMES, plan_hash='bare')
    assert table.plan is None and table.is_set()
    want = np.stack([bucket_thresholds(row) for row in quota])  # the planner's rule
    np.testing.assert_array_equal(table.thresholds.numpy(), want)
    fresh = RoutingTable(3, 4)
    fresh.set_extra_state(table.get_extra_state())
    np.testing.assert_array_equal(fresh.thresholds.numpy(), want)
    assert fresh.dataset_names == tuple(NAMES) and fresh.plan_hash == 'bare'
    with pytest.raises(ValueError, match='not UTF-8 JSON'):
        fresh.set_extra_state(torch.tensor([255, 0], dtype=torch.uint8))
    with pytest.raises(ValueError, match='plan quota has negative entries'):
        table.set_routing(-quota)
    assert table.plan_hash == 'bare'  # unchanged by a refused write


def _legacy_buffers(plan):
    def raw(text):
        return torch.tensor(list(text.encode('utf-8').ljust(64, b'\0')), dtype=torch.uint8)

    return {
        'plan_quota': torch.from_numpy(plan.quota.astype(np.int64)),
        'plan_thresholds': torch.from_numpy(plan.thresholds.astype(np.int64)),
        'plan_dataset_names': torch.stack([raw(n) for n in plan.dataset_names]),
        'plan_hash': raw(plan.hash),
    }


def test_old_plan_buffers_become_the_table():
    plan = _plan()
    # the buffers alone (a checkpoint loaded outside training): a bare table
    state = {'model.' + k: v for k, v in _legacy_buffers(plan).items()}
    state['model.other.weight'] = torch.ones(1)
    upgrade_legacy_state_dict(state, prefix='model.')
    assert sorted(state) == ['model.other.weight', 'model.routing_table._extra_state']
    assert plan_of_state_dict(state, 'model.') is None
    table = RoutingTable(3, 4)
    table.set_extra_state(state['model.routing_table._extra_state'])
    assert table.dataset_names == tuple(NAMES) and table.plan_hash == plan.hash
    np.testing.assert_array_equal(table.thresholds.numpy(), plan.thresholds)
    # with checkpoint['gem_plan'] (saved by the planner hook): the plan itself
    state = _legacy_buffers(plan)
    upgrade_legacy_state_dict(state, plan=plan.to_dict())
    assert list(state) == ['routing_table._extra_state']
    assert plan_of_state_dict(state) == plan
