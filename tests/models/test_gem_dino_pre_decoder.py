# Copyright (c) mmgem contributors. All rights reserved.
"""GEMDINO.pre_decoder: mmdet's DINO.pre_decoder with a restricted top-k.

Without a label restriction the outputs are those of mmdet's
``DINO.pre_decoder`` on the same weights and the same random numbers; with
one they are those of a hand-written DINO pre-decoder whose top-k ranks each
image's proposals by its dataset's classes (the loss still gets all classes'
scores) and whose denoising labels are drawn in the image's range. Compared
bit for bit, gradients included, and the temporary restriction is gone
after the call, also when the call raises.
"""
import pytest
import torch
from mmdet.models.detectors import DINO
from test_dataset_aware_gem_dino import (
    DOMAIN,
    NUM_CLASSES,
    OFFSETS,
    _batch,
    _build,
    _encoder,
    _gem_cfg,
)

SEED = 3


def _assert_same(got, expected):
    """Bit-identical dicts of tensors (and ``dn_meta`` dicts / None)."""
    assert set(got) == set(expected)
    for key, value in expected.items():
        if isinstance(value, torch.Tensor):
            assert torch.equal(got[key], value), key
        else:
            assert got[key] == value, key


def _model(**kwargs):
    model = _build(_gem_cfg(domain_classifier=DOMAIN, **kwargs))
    with torch.no_grad():  # dataset 2's classes dominate the plain max
        model.bbox_head.cls_branches[-1].bias[OFFSETS[2]:] += 5.0
    model.dn_query_generator.label_noise_scale = 1.0
    return model


def _call(fn, model, enc_out, samples):
    torch.manual_seed(SEED)  # the same denoising noise
    return fn(model, **enc_out, batch_data_samples=samples)


def _reference(model, enc_out, samples, ranges):
    """DINO's pre-decoder written out, with the top-k ranked by the classes
    in ``ranges`` and the denoising labels drawn in them."""
    memory = enc_out['memory']
    layer = model.decoder.num_layers
    out_mem, proposals = model.gen_encoder_output_proposals(
        memory, enc_out['memory_mask'], enc_out['spatial_shapes'])
    scores = model.bbox_head.cls_branches[layer](out_mem)
    coords = model.bbox_head.reg_branches[layer](out_mem) + proposals
    own_max = torch.stack([
        scores[b, :, low:high].max(-1)[0]
        for b, (low, high) in enumerate(ranges.tolist())
    ])
    idx = torch.topk(own_max, model.num_queries, dim=1)[1]
    topk_score = torch.stack([scores[b, i] for b, i in enumerate(idx)])
    topk_unact = torch.stack([coords[b, i] for b, i in enumerate(idx)])
    query = model.query_embedding.weight[None].repeat(len(idx), 1, 1)
    if not model.training:
        return dict(query=query, memory=memory,
                    reference_points=topk_unact.detach().sigmoid(),
                    dn_mask=None), {}
    torch.manual_seed(SEED)
    dn_label, dn_bbox, dn_mask, dn_meta = model.dn_query_generator(
        samples, label_ranges=ranges)
    reference = torch.cat([dn_bbox, topk_unact.detach()], dim=1).sigmoid()
    return dict(query=torch.cat([dn_label, query], dim=1), memory=memory,
                reference_points=reference, dn_mask=dn_mask), dict(
                    enc_outputs_class=topk_score,
                    enc_outputs_coord=topk_unact.sigmoid(), dn_meta=dn_meta)


def _encoded(model, inputs, samples):
    """The encoder's outputs, outside autograd (pre_decoder runs twice)."""
    with torch.no_grad():
        return _encoder(model, inputs, samples)


def _ranges(ids):
    return torch.tensor([OFFSETS[d:d + 2] for d in ids])


def _grads(model, dec_in, head_in):
    """Gradients of the encoder classifier and the label embedding."""
    model.zero_grad()
    loss = (head_in['enc_outputs_class'].logsumexp(-1).sum() +
            head_in['enc_outputs_coord'].sum() + dec_in['query'].square().sum())
    loss.backward()
    branch = model.bbox_head.cls_branches[-1]
    return dict(weight=branch.weight.grad.clone(),
                bias=branch.bias.grad.clone(),
                label_embedding=model.dn_query_generator.label_embedding.weight
                .grad.clone())


def test_unrestricted_pre_decoder_is_mmdets():
    """dataset_aware=False (training) and the unified label space (test):
    mmdet's DINO.pre_decoder on the same weights, bit for bit."""
    model = _model(dataset_aware=False)
    model.train()
    inputs, samples = _batch(model, [0, 1, 1], training=True)
    enc_out = _encoded(model, inputs, samples)
    got = _call(type(model).pre_decoder, model, enc_out, samples)
    expected = _call(DINO.pre_decoder, model, enc_out, samples)
    for a, b in zip(got, expected):
        _assert_same(a, b)
    _assert_same(_grads(model, *got), _grads(model, *expected))

    model.eval()
    model.test_dataset_known = False
    inputs, samples = _batch(model, [0, 1, 2], training=False)
    with torch.no_grad():
        enc_out = _encoder(model, inputs, samples)
        got = _call(type(model).pre_decoder, model, enc_out, samples)
        expected = _call(DINO.pre_decoder, model, enc_out, samples)
    for a, b in zip(got, expected):
        _assert_same(a, b)


def test_restricted_pre_decoder_is_the_hand_written_one():
    """Training dataset-aware and test with the dataset known: the
    hand-written restricted pre-decoder, bit for bit, gradients included."""
    model = _model()
    model.train()
    ids = [0, 1, 1]
    inputs, samples = _batch(model, ids, training=True)
    enc_out = _encoded(model, inputs, samples)
    got = _call(type(model).pre_decoder, model, enc_out, samples)
    expected = _reference(model, enc_out, samples, _ranges(ids))
    for a, b in zip(got, expected):
        _assert_same(a, b)
    # the restriction matters here, and the loss sees every class's score
    plain = _call(DINO.pre_decoder, model, enc_out, samples)
    assert not torch.equal(got[0]['reference_points'],
                           plain[0]['reference_points'])
    assert torch.isfinite(got[1]['enc_outputs_class']).all()
    _assert_same(_grads(model, *got), _grads(model, *expected))
    assert model.bbox_head.cls_branches[-1].bias.grad[OFFSETS[2]:].abs().sum(
    ) > 0  # the other dataset's scores of the selected proposals

    model.eval()
    ids = [0, 1, 2]
    inputs, samples = _batch(model, ids, training=False)
    with torch.no_grad():
        enc_out = _encoder(model, inputs, samples)
        got = _call(type(model).pre_decoder, model, enc_out, samples)
        expected = _reference(model, enc_out, samples, _ranges(ids))
    for a, b in zip(got, expected):
        _assert_same(a, b)


def test_restriction_ends_with_the_call_also_on_an_exception():
    """No hook is left on the encoder classifier and the generator has no
    batch ranges after the call, also when mmdet's pre_decoder raises."""
    model = _model()
    model.train()
    branch = model.bbox_head.cls_branches[-1]
    generator = model.dn_query_generator
    inputs, samples = _batch(model, [0, 1, 1], training=True)
    enc_out = _encoded(model, inputs, samples)
    _call(type(model).pre_decoder, model, enc_out, samples)
    assert not branch._forward_hooks and generator._batch_ranges is None
    model.num_queries = enc_out['memory'].shape[1] + 1  # top-k raises
    with pytest.raises(RuntimeError):
        _call(type(model).pre_decoder, model, enc_out, samples)
    assert not branch._forward_hooks and generator._batch_ranges is None
    out = branch(torch.zeros(1, 1, model.embed_dims))
    assert torch.isfinite(out).all() and out.shape[-1] == NUM_CLASSES
