# Copyright (c) mmgem contributors. All rights reserved.
"""GEM-DINO routing: once per forward, plan cache, dataset-unknown, DAMEX losses."""
import copy
import math

import numpy as np
import pytest
import torch
from test_gem_dino import OFFSETS, _batch, _build, _gem_cfg

import mmgem.models.detectors.gem_dino as gem_dino_module
from mmgem.models.layers import BatchRouting
from mmgem.planner.hashing import image_bucket, route_bucket

SHARDED = np.array([[3, 2, 0, 0], [0, 0, 4, 1]])
NAMES = ['set0', 'set1']


def _sharded_gem(**kwargs):
    cfg = dict(num_experts=4, num_datasets=2, label_offsets=OFFSETS,
               domain_classifier=dict(hidden_dims=64))
    cfg.update(kwargs)
    model = _build(_gem_cfg(**cfg))
    model.install_plan(SHARDED, None, 'sharded', dataset_names=NAMES)
    return model


def test_routing_is_computed_once_per_forward(monkeypatch):
    model = _sharded_gem()
    model.train()
    calls, seen = [], []
    real_route = gem_dino_module.route_images

    def counting_route(*args, **kwargs):
        calls.append(args)
        return real_route(*args, **kwargs)

    monkeypatch.setattr(gem_dino_module, 'route_images', counting_route)
    for ffn in model.moe_ffns():
        ffn.register_forward_pre_hook(
            lambda mod, args, kwargs: seen.append(kwargs['routing']),
            with_kwargs=True)
    inputs, samples = _batch(model, [0, 1, 1], training=True)
    model.loss(inputs, samples)
    assert len(calls) == 1  # one plan look-up for the two MoE layers
    assert len(seen) == 2 and seen[0] is seen[1]
    routing = seen[0]
    assert isinstance(routing, BatchRouting)
    assert routing.image_experts.device.type == 'cpu'
    expected = [
        route_bucket(SHARDED[s.metainfo['dataset_id']],
                     image_bucket(NAMES[s.metainfo['dataset_id']], s.metainfo['img_id']))
        for s in samples
    ]
    assert routing.image_experts.tolist() == expected


def test_host_plan_follows_every_write():
    model = _sharded_gem()
    first = model.host_plan()
    assert first[0].device.type == 'cpu' and first[2].device.type == 'cpu'
    assert first[1] == tuple(NAMES)
    np.testing.assert_array_equal(first[0].numpy(), SHARDED)
    other = np.array([[0, 0, 0, 5], [1, 0, 0, 0]])
    model.install_plan(other, None, 'other', dataset_names=['a', 'b'])
    np.testing.assert_array_equal(model.installed_plan_quota(), other)
    assert model.installed_dataset_names() == ('a', 'b')
    # load_state_dict restores the routing table: the host view follows
    source = _sharded_gem()
    model.load_state_dict(source.state_dict())
    np.testing.assert_array_equal(model.installed_plan_quota(), SHARDED)
    assert model.installed_dataset_names() == tuple(NAMES)
    # and the routing of the next forward uses it
    model.train()
    inputs, samples = _batch(model, [0, 1], training=True)
    routing = model._routing(torch.zeros(2, 4, 256), None, samples)['batch']
    expected = [
        route_bucket(SHARDED[s.metainfo['dataset_id']],
                     image_bucket(NAMES[s.metainfo['dataset_id']], s.metainfo['img_id']))
        for s in samples
    ]
    assert routing.image_experts.tolist() == expected
    with pytest.raises(ValueError, match='must not be empty'):
        model.install_plan(SHARDED, None, 'bad', dataset_names=['set0', ''])
    with pytest.raises(ValueError, match='3 plan dataset names'):
        model.install_plan(SHARDED, None, 'bad', dataset_names=['a', 'b', 'c'])


def _flipping_name(sample, d):
    """A dataset name under which the image would go to another shard."""
    true = route_bucket(SHARDED[d], image_bucket(NAMES[d], sample.metainfo['img_id']))
    for k in range(100):
        name = f'renamed{k}'
        if route_bucket(SHARDED[d], image_bucket(name, sample.metainfo['img_id'])) != true:
            return name
    raise AssertionError('no flipping name found')


def test_dataset_unknown_reads_nothing_of_the_true_dataset():
    model = _sharded_gem(test_dataset_known=False)
    model.eval()
    inputs, samples = _batch(model, [0, 1, 0], training=False)
    with torch.no_grad():
        before = model.predict(inputs, copy.deepcopy(samples))
    predicted = [r.pred_dataset_id for r in before]
    altered = copy.deepcopy(samples)
    for sample, d in zip(altered, predicted):
        # a name that would move the image to another shard of its
        # predicted dataset, another dataset id and another path
        sample.set_metainfo(
            dict(dataset_name=_flipping_name(sample, d),
                 dataset_id=1 - sample.metainfo['dataset_id'],
                 img_path='/elsewhere/' + sample.metainfo['img_path']))
    with torch.no_grad():
        after = model.predict(inputs, altered)
    for a, b in zip(before, after):
        assert a.pred_dataset_id == b.pred_dataset_id
        assert torch.equal(a.pred_instances.labels, b.pred_instances.labels)
        assert torch.equal(a.pred_instances.scores, b.pred_instances.scores)
        assert torch.equal(a.pred_instances.bboxes, b.pred_instances.bboxes)
    # the same change does move images when the dataset is known (so the
    # check above can fail): the routing reads the metainfo there
    model.test_dataset_known = True
    plan_routing = [
        model._routing(torch.zeros(3, 4, 256), None, batch)['batch'].image_experts
        for batch in (samples, altered)
    ]
    assert not torch.equal(*plan_routing)


def test_dataset_unknown_without_img_id_takes_the_first_shard():
    model = _sharded_gem(test_dataset_known=False)
    model.eval()
    _, samples = _batch(model, [0, 1], training=False)
    for s in samples:
        del s.img_id
    logits = torch.tensor([[5., -5.], [-5., 5.]])
    model.domain_classifier.forward = lambda memory, mask: logits
    routing = model._routing(torch.zeros(2, 4, 256), None, samples)['batch']
    assert routing.dataset_ids.tolist() == [0, 1]
    assert routing.image_experts.tolist() == [0, 2]  # bucket 0 of each row


def _tutel_reference(logits, chosen, num_experts, gate_noise):
    logits = logits.double().numpy()
    chosen = chosen.numpy()
    z = np.exp(logits - logits.max(1, keepdims=True))
    probs = z / z.sum(1, keepdims=True)
    threshold = logits[np.arange(len(logits)), chosen][:, None]
    sigma = gate_noise / num_experts
    phi = np.vectorize(lambda v: 0.5 * (1 + math.erf(v / (sigma * math.sqrt(2)))))
    load = phi(probs - threshold).sum(0)
    imp = probs.sum(0)
    return (imp.var(ddof=1) / (imp.mean()**2 + 1e-10) +
            load.var(ddof=1) / (load.mean()**2 + 1e-10)) / 2


def test_moe_balance_loss_on_foreground_tokens_mean_over_layers():
    model = _build(_gem_cfg(num_experts=4, num_datasets=2, routing='moe',
                            label_offsets=OFFSETS))
    model.train()
    inputs, samples = _batch(model, [0, 1], training=True)
    num_queries = model.num_queries
    captured = []
    for ffn in model.moe_ffns():
        ffn.register_forward_hook(
            lambda mod, args, out: captured.append(
                {k: v.detach().clone() for k, v in mod.router._state.items()}))
    losses = model.loss(inputs, samples)
    # the dataset-aware head's matched queries of the last decoder layer:
    # one per ground-truth box
    matched = model.bbox_head.last_matched_query_mask
    assert matched.shape == (2, num_queries)
    assert matched.sum(1).tolist() == [len(s.gt_instances) for s in samples]
    num_tokens = captured[0]['clean_logits'].size(0) // 2
    num_dn = num_tokens - num_queries
    assert num_dn > 0  # denoising queries lead every image's tokens
    fg = torch.cat([torch.zeros(2, num_dn, dtype=torch.bool), matched], 1).view(-1)
    per_layer = [
        _tutel_reference(state['clean_logits'][fg], state['experts'][fg], 4, 1.0)
        for state in captured
    ]
    assert len(per_layer) == 2
    expected = 0.1 * sum(per_layer) / 2
    # float32 (torch's Normal.cdf cancels in the far tail) against float64
    assert float(losses['loss_moe_aux']) == pytest.approx(expected, rel=1e-3)
    all_tokens = [
        _tutel_reference(state['clean_logits'], state['experts'], 4, 1.0)
        for state in captured
    ]
    assert 0.1 * sum(all_tokens) / 2 != pytest.approx(expected, rel=1e-2)
    shares = torch.stack([losses[f'moe_load_e{e}'] for e in range(4)])
    torch.testing.assert_close(shares.sum(), torch.tensor(1.))
    # a head without the matching (mmdet's DINOHead) is refused with the fix named
    cfg = _gem_cfg(num_experts=4, num_datasets=2, routing='moe',
                   label_offsets=OFFSETS, dataset_aware=False)
    cfg.bbox_head.type = 'DINOHead'
    plain = _build(cfg)
    plain.train()
    with pytest.raises(RuntimeError, match='last_matched_query_mask.*balance_tokens="all"'):
        plain.loss(inputs, samples)


def test_damex_logs_router_accuracy():
    model = _build(_gem_cfg(num_experts=4, num_datasets=2, routing='damex',
                            label_offsets=OFFSETS))
    model.install_plan(SHARDED, None, 'd', dataset_names=NAMES)
    model.train()
    inputs, samples = _batch(model, [0, 1], training=True)
    captured = []
    for ffn in model.moe_ffns():
        ffn.register_forward_hook(
            lambda mod, args, out: captured.append(
                (mod.router._state['experts'].clone(),
                 mod.router._state['target_experts'].clone())))
    losses = model.loss(inputs, samples)
    hits = sum(int((e == t).sum()) for e, t in captured)
    total = sum(e.numel() for e, _ in captured)
    assert abs(float(losses['moe_router_acc']) - 100 * hits / total) < 1e-4
    # the targets are the planned experts of the images
    planned = [
        route_bucket(SHARDED[s.metainfo['dataset_id']],
                     image_bucket(NAMES[s.metainfo['dataset_id']], s.metainfo['img_id']))
        for s in samples
    ]
    per_image = captured[0][1].view(2, -1)
    assert per_image[:, 0].tolist() == planned
    assert bool((per_image == per_image[:, :1]).all())


def test_moe_ffn_is_built_through_the_registry():
    from mmdet.registry import MODELS

    from mmgem.models.layers import MoEFFN

    @MODELS.register_module(force=True)
    class MarkedMoEFFN(MoEFFN):
        pass

    model = _build(_gem_cfg(num_experts=2, num_datasets=2, label_offsets=OFFSETS,
                            moe_cfg=dict(type='MarkedMoEFFN', capacity_priority='position')))
    assert all(type(f) is MarkedMoEFFN for f in model.moe_ffns())
    assert model.moe_ffns()[0].capacity_priority == 'position'
