# Copyright (c) mmgem contributors. All rights reserved.
"""DatasetAwareDINOHead: each image's classification losses see only its own
label range, in every decoder layer, the encoder output and the denoising
queries; the matching and the matched-query mask."""
import copy
from pathlib import Path

import pytest
import torch
from mmdet.models.losses import focal_loss as mmdet_focal_loss
from mmdet.registry import MODELS
from mmdet.structures.bbox import bbox_cxcywh_to_xyxy
from mmengine.config import Config
from mmengine.structures import InstanceData

import mmgem  # noqa: F401

REPO = Path(__file__).resolve().parents[2]
NUM_CLASSES = 7
OFFSETS = [0, 2, 5, 7]  # three datasets: labels 0-1, 2-4, 5-6
NUM_LAYERS = 3
NUM_QUERIES = 12
NUM_GROUPS = 2
IMG = (64, 80)
DEVICES = ['cpu'] + (['cuda'] if torch.cuda.is_available() else [])

# every classification term DINO's loss dict has with 3 decoder layers
CLS_TERMS = [
    'enc_loss_cls', 'd0.loss_cls', 'd1.loss_cls', 'loss_cls', 'd0.dn_loss_cls',
    'd1.dn_loss_cls', 'dn_loss_cls'
]


def _head(**kwargs):
    """The tiny DINO's head (mmdet's losses and matching costs)."""
    model = Config.fromfile(str(REPO / 'configs/_base_/models/dino_tiny.py')).model
    cfg = dict(
        model.bbox_head,
        type='DatasetAwareDINOHead',
        num_classes=NUM_CLASSES,
        train_cfg=model.train_cfg,
        share_pred_layer=False,
        num_pred_layer=NUM_LAYERS + 1,
        as_two_stage=True)
    cfg.update(kwargs)
    return MODELS.build(cfg)


def _inputs(dataset_ids=(0, 1, 2), device='cpu', seed=0):
    """Head outputs of a batch: one image per dataset id, 1-2 boxes each."""
    gen = torch.Generator().manual_seed(seed)
    bs = len(dataset_ids)
    gts, metas = [], []
    for i, d in enumerate(dataset_ids):
        n = 2 if i % 2 == 0 else 1
        xy = torch.rand(n, 2, generator=gen) * 30
        wh = 10 + torch.rand(n, 2, generator=gen) * 30
        labels = OFFSETS[d] + torch.randint(
            0, OFFSETS[d + 1] - OFFSETS[d], (n, ), generator=gen)
        gts.append(
            InstanceData(
                bboxes=torch.cat([xy, xy + wh], 1).to(device),
                labels=labels.to(device)))
        metas.append(dict(img_shape=IMG, dataset_id=d))
    max_targets = max(len(g) for g in gts)
    num_dn = 2 * NUM_GROUPS * max_targets
    total = num_dn + NUM_QUERIES
    cls = torch.randn(NUM_LAYERS, bs, total, NUM_CLASSES, generator=gen)
    boxes = torch.rand(NUM_LAYERS, bs, total, 4, generator=gen) * 0.5 + 0.25
    enc_cls = torch.randn(bs, NUM_QUERIES, NUM_CLASSES, generator=gen)
    enc_boxes = torch.rand(bs, NUM_QUERIES, 4, generator=gen) * 0.5 + 0.25
    dn_meta = dict(num_denoising_queries=num_dn, num_denoising_groups=NUM_GROUPS)
    return dict(
        cls=cls.to(device).requires_grad_(),
        boxes=boxes.to(device),
        enc_cls=enc_cls.to(device).requires_grad_(),
        enc_boxes=enc_boxes.to(device),
        gts=gts,
        metas=metas,
        dn_meta=dn_meta)


def _with_ranges(metas):
    return [
        dict(m, label_range=(OFFSETS[m['dataset_id']],
                             OFFSETS[m['dataset_id'] + 1])) for m in metas
    ]


def _losses(head, x, metas):
    return head.loss_by_feat(x['cls'], x['boxes'], x['enc_cls'], x['enc_boxes'],
                             x['gts'], metas, x['dn_meta'])


def _own(dataset_id, device):
    mask = torch.zeros(NUM_CLASSES, dtype=torch.bool, device=device)
    mask[OFFSETS[dataset_id]:OFFSETS[dataset_id + 1]] = True
    return mask


@pytest.mark.parametrize('device', DEVICES)
def test_other_datasets_classes_get_exactly_zero_gradient(device):
    """Per loss term: zero gradient outside the image's range, and inside it
    exactly the gradient of mmdet's unmasked loss (same matching, same
    normalisation)."""
    head = _head().to(device)
    x = _inputs(device=device)
    masked = _losses(head, x, _with_ranges(x['metas']))
    plain = _losses(head, x, x['metas'])
    assert set(CLS_TERMS) <= set(masked)
    for term in CLS_TERMS:
        got = torch.autograd.grad(
            masked[term], [x['cls'], x['enc_cls']],
            retain_graph=True,
            allow_unused=True)
        ref = torch.autograd.grad(
            plain[term], [x['cls'], x['enc_cls']],
            retain_graph=True,
            allow_unused=True)
        # the term reaches the encoder scores or the decoder scores
        grads = [(g, r) for g, r in zip(got, ref) if r is not None]
        assert len(grads) == 1, term
        g, r = grads[0]
        for b, d in enumerate(m['dataset_id'] for m in x['metas']):
            own = _own(d, device)
            g_img, r_img = g[..., b, :, :], r[..., b, :, :]
            assert torch.count_nonzero(g_img[..., ~own]) == 0, (term, b)
            torch.testing.assert_close(
                g_img[..., own], r_img[..., own], rtol=1e-6, atol=0,
                msg=f'{term}, image {b}')
            assert torch.count_nonzero(r_img[..., ~own]) > 0, (term, b)
            assert torch.count_nonzero(g_img[..., own]) > 0, (term, b)
        assert float(masked[term]) < float(plain[term]), term
    for key in masked:  # box losses: the same matching
        if 'cls' not in key:
            torch.testing.assert_close(masked[key], plain[key], msg=key)


@pytest.mark.skipif(not torch.cuda.is_available(), reason='needs CUDA')
def test_cuda_and_cpu_focal_loss_paths_agree():
    """On GPU mmdet's FocalLoss runs the mmcv CUDA op, on CPU the python one:
    the masked losses and gradients must be the same."""
    head = _head()
    results = {}
    for device in ('cpu', 'cuda'):
        x = _inputs(device=device)
        losses = _losses(head.to(device), x, _with_ranges(x['metas']))
        total = sum(losses[t] for t in CLS_TERMS)
        results[device] = (losses, torch.autograd.grad(
            total, [x['cls'], x['enc_cls']]))
    for term in CLS_TERMS:
        torch.testing.assert_close(results['cuda'][0][term].cpu(),
                                   results['cpu'][0][term], rtol=1e-5,
                                   atol=1e-6)
    for g_cuda, g_cpu in zip(results['cuda'][1], results['cpu'][1]):
        torch.testing.assert_close(g_cuda.cpu(), g_cpu, rtol=1e-4, atol=1e-7)
        assert torch.equal(g_cuda.cpu() == 0, g_cpu == 0)


class _KernelStandIn(torch.autograd.Function):
    """What mmcv's ``sigmoid_focal_loss`` kernel computes, on the CPU:
    elementwise focal loss of integer targets (``num_classes`` = background),
    backward ``grad_input * grad_output``."""

    @staticmethod
    def forward(ctx, pred, target, gamma, alpha, weight, reduction):
        assert weight is None and reduction == 'none'
        onehot = torch.zeros_like(pred)
        fg = target < pred.size(1)
        onehot[fg.nonzero()[:, 0], target[fg]] = 1
        with torch.enable_grad():
            p = pred.detach().requires_grad_()
            loss = mmdet_focal_loss.py_sigmoid_focal_loss(
                p, onehot, None, gamma, alpha, 'none')
            ctx.grad_input = torch.autograd.grad(loss.sum(), p)[0]
        return loss.detach()

    @staticmethod
    def backward(ctx, grad_output):
        return ctx.grad_input * grad_output, None, None, None, None, None


def test_cuda_path_wrapper_applies_per_element_weights(monkeypatch):
    """mmdet's CUDA-path wrapper ``sigmoid_focal_loss`` keeps a
    ``(N, num_classes)`` weight elementwise (no reshape), so the kernel path
    masks as the python path does. The kernel itself is replaced by a CPU
    stand-in of its formula; the real op is covered on GPU above."""
    monkeypatch.setattr(mmdet_focal_loss, '_sigmoid_focal_loss',
                        _KernelStandIn.apply)
    torch.manual_seed(0)
    pred = torch.randn(9, NUM_CLASSES, requires_grad=True)
    target = torch.tensor([0, 3, 7, 6, 7, 2, 1, 7, 5])  # 7: background
    weight = torch.zeros(9, NUM_CLASSES)
    weight[:, 2:5] = 1
    loss = mmdet_focal_loss.sigmoid_focal_loss(
        pred, target, weight, reduction='mean', avg_factor=3.0)
    grad = torch.autograd.grad(loss, pred)[0]
    onehot = torch.nn.functional.one_hot(target, NUM_CLASSES + 1)[:, :-1]
    pred_ref = pred.detach().requires_grad_()
    ref = mmdet_focal_loss.py_sigmoid_focal_loss(
        pred_ref, onehot, weight, reduction='mean', avg_factor=3.0)
    torch.testing.assert_close(loss, ref)
    torch.testing.assert_close(grad, torch.autograd.grad(ref, pred_ref)[0])
    assert torch.count_nonzero(grad[:, weight[0] == 0]) == 0
    assert torch.count_nonzero(grad[:, 2:5]) == 9 * 3


def test_matching_reads_only_the_ground_truth_classes():
    """The Hungarian assignment of every decoder layer and of the encoder
    output ignores the logits of the other datasets' classes (mmdet's
    FocalLossCost reads only the ground-truth label columns)."""
    head = _head()
    x = _inputs()
    metas = _with_ranges(x['metas'])

    def assignments(inputs):
        head._assignments = []
        num_dn = inputs['dn_meta']['num_denoising_queries']
        with torch.no_grad():
            for layer in range(NUM_LAYERS):
                head.get_targets(
                    list(inputs['cls'][layer, :, num_dn:]),
                    list(inputs['boxes'][layer, :, num_dn:]), inputs['gts'],
                    metas)
            head.get_targets(
                list(inputs['enc_cls']), list(inputs['enc_boxes']),
                inputs['gts'], metas)
        found, head._assignments = head._assignments, None
        return found

    before = assignments(x)
    shaken = copy.copy(x)
    gen = torch.Generator().manual_seed(1)
    cls, enc_cls = x['cls'].detach().clone(), x['enc_cls'].detach().clone()
    for b, d in enumerate(m['dataset_id'] for m in x['metas']):
        other = ~_own(d, 'cpu')
        noise = 20 * torch.randn(cls[:, b].shape, generator=gen)
        cls[:, b][..., other] += noise[..., other]
        noise = 20 * torch.randn(enc_cls[b].shape, generator=gen)
        enc_cls[b][..., other] += noise[..., other]
    shaken.update(cls=cls, enc_cls=enc_cls)
    after = assignments(shaken)
    assert len(before) == len(after) == NUM_LAYERS + 1
    for a, b in zip(before, after):
        assert torch.equal(a, b)
    # the own classes' logits do drive the matching
    cls = x['cls'].detach().clone()
    for b, d in enumerate(m['dataset_id'] for m in x['metas']):
        cls[:, b][..., _own(d, 'cpu')] = 20 * torch.randn(
            cls[:, b][..., _own(d, 'cpu')].shape, generator=gen)
    shaken.update(cls=cls, enc_cls=x['enc_cls'].detach())
    assert any(not torch.equal(a, b)
               for a, b in zip(before[:NUM_LAYERS], assignments(shaken)))


def test_last_matched_query_mask_is_the_last_layers_assignment():
    head = _head()
    x = _inputs(dataset_ids=(0, 2, 1, 1))
    assert head.last_matched_query_mask is None
    _losses(head, x, _with_ranges(x['metas']))
    mask = head.last_matched_query_mask
    assert mask.dtype == torch.bool
    assert mask.shape == (4, NUM_QUERIES)
    num_dn = x['dn_meta']['num_denoising_queries']
    factor = torch.tensor([IMG[1], IMG[0], IMG[1], IMG[0]], dtype=torch.float)
    per_layer = []
    for layer in range(NUM_LAYERS):
        expected = torch.zeros(4, NUM_QUERIES, dtype=torch.bool)
        for b, gt in enumerate(x['gts']):
            pred = InstanceData(
                scores=x['cls'][layer, b, num_dn:].detach(),
                bboxes=bbox_cxcywh_to_xyxy(x['boxes'][layer, b, num_dn:]) *
                factor)
            result = head.assigner.assign(pred, gt, img_meta=x['metas'][b])
            expected[b] = result.gt_inds > 0
            assert int(expected[b].sum()) == len(gt)  # one query per box
        per_layer.append(expected)
    assert torch.equal(mask, per_layer[-1])
    # the layers match differently here, so the mask names its layer
    assert any(not torch.equal(per_layer[-1], e) for e in per_layer[:-1])
    # a later call replaces it (also without label ranges)
    y = _inputs(dataset_ids=(1, ), seed=3)
    _losses(head, y, y['metas'])
    assert head.last_matched_query_mask.shape == (1, NUM_QUERIES)


def test_bad_label_range_inputs_are_refused():
    x = _inputs()
    metas = _with_ranges(x['metas'])
    del metas[1]['label_range']
    with pytest.raises(ValueError, match="1 of 3 image metas lack a 'label_range'"):
        _losses(_head(), x, metas)
    qfl = _head(loss_cls=dict(
        type='QualityFocalLoss', use_sigmoid=True, beta=2.0, loss_weight=1.0))
    with pytest.raises(ValueError, match='needs mmdet.s FocalLoss.*QualityFocalLoss'):
        _losses(qfl, x, _with_ranges(x['metas']))
