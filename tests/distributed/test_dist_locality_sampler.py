# Copyright (c) mmgem contributors. All rights reserved.
"""ExpertLocalitySampler and the bytes the expert exchange moves.

On 2 gloo ranks with the tiny mini-UODB training set and a real GEM plan
(4 experts, 2 per rank), every rank draws its first batch from
``UODBSampler`` (stride split) and from ``ExpertLocalitySampler`` (strict
and not), runs an expert-parallel MoE FFN on it (forward + backward) and
counts the bytes the exchange sent. The prediction is computed from the plan
alone (``route_bucket`` of every drawn image, the rank that holds its
expert, tokens x channels x 4 bytes, there and back, forward and backward).

The default split (``strict=False``) uses every image of the epoch once;
``strict=True`` moves nothing and warns, when the plan is set, with the
distortion it measures (checked here against the epochs the ranks really
drew). With train-mode BatchNorm and a rank that gets only single-dataset
batches, ``ExpertParallelExchangeHook`` warns and names SyncBN / frozen BN.
"""
import logging
from collections import Counter
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from dist_utils import run_distributed
from mmdet.registry import DATASETS
from mmengine.config import Config
from mmengine.logging import MMLogger
from torch import nn

from mmgem.datasets.samplers.locality_sampler import ExpertLocalitySampler
from mmgem.datasets.samplers.uodb_sampler import UODBSampler
from mmgem.engine.hooks.expert_parallel_exchange_hook import ExpertParallelExchangeHook
from mmgem.models.layers import MoEFFN
from mmgem.models.layers.ep_exchange_stats import exchange_stats
from mmgem.models.layers.expert_parallel import convert_to_expert_parallel
from mmgem.models.layers.plan_routing import quantile_thresholds
from mmgem.planner import build_similarity, image_bucket, make_plan, route_bucket
from tools.benchmark.routing import routing_from_plan

DATA_CONFIG = 'configs/_base_/datasets/mini_uodb.py'
EXPERTS, DIM, TOKENS, BATCH = 4, 8, 6, 4
SAMPLERS = ('default', 'strict', 'balanced')


def _dataset(repo_root, data_root):
    cfg = Config.fromfile(str(repo_root / DATA_CONFIG))
    ds_cfg = cfg.train_dataloader.dataset
    ds_cfg.data_root = str(data_root) + '/'
    ds_cfg.pipeline = []
    dataset = DATASETS.build(ds_cfg)
    dataset.full_init()
    return dataset


def _plan(dataset):
    names = list(dataset.dataset_names)
    similarity = build_similarity(
        names, weights=dict(labels=1.0),
        labels={n: list(dataset.dataset_classes[n]) for n in names})
    return make_plan(names, dataset.dataset_lengths, similarity,
                     num_experts=EXPERTS, capacity_factor=1.25)


def _sampler(kind, dataset, quota):
    if kind == 'default':
        return UODBSampler(dataset, seed=3)
    sampler = ExpertLocalitySampler(dataset, seed=3,
                                    strict=(kind == 'strict'))
    sampler.set_plan(quota)
    return sampler


def _routing(dataset, indices):
    names = dataset.dataset_names
    ids, buckets = [], []
    for idx in indices:
        d = int(dataset.sample_dataset_ids[idx])
        ids.append(d)
        buckets.append(image_bucket(names[d],
                                    dataset.get_data_info(idx)['img_id']))
    return torch.tensor(ids), torch.tensor(buckets)


class _Capture(logging.Handler):
    def __init__(self):
        super().__init__(logging.WARNING)
        self.messages = []

    def emit(self, record):
        self.messages.append(record.getMessage())


def _warnings(fn):
    """Warnings MMEngine's current logger gets while ``fn`` runs."""
    logger = MMLogger.get_current_instance()
    capture = _Capture()
    logger.addHandler(capture)
    try:
        fn()
    finally:
        logger.removeHandler(capture)
    return capture.messages


class _PlannedModel(nn.Sequential):
    """An expert-parallel MoE layer and a norm layer, holding a plan."""

    def __init__(self, quota, norm, frozen=False):
        layer = MoEFFN(DIM, 2 * DIM, num_experts=EXPERTS)
        convert_to_expert_parallel(layer)
        super().__init__(layer, norm)
        self.quota, self.frozen = quota, frozen
        table = torch.as_tensor(np.asarray(quota), dtype=torch.long)
        # the routing table's host view: quota, names, quantile thresholds
        self.routing_table = SimpleNamespace(
            host=lambda: (table, (), quantile_thresholds(table)))

    def has_plan(self):
        return True

    def train(self, mode=True):
        super().train(mode)
        if self.frozen:  # norm_eval=True: BN stays in eval mode
            self[1].eval()
        return self


def _batchnorm_warnings(dataset):
    """Rank 1's experts (2-3) serve only `medical` under this quota."""
    lengths = dataset.dataset_lengths
    quota = np.zeros((6, EXPERTS), dtype=np.int64)
    for d in range(5):
        quota[d, d % 2] = lengths[d]
    quota[5, 2] = lengths[5]
    sampler = ExpertLocalitySampler(dataset, seed=3, strict=True)
    sampler.set_plan(quota)
    loader = SimpleNamespace(batch_sampler=SimpleNamespace(batch_size=BATCH,
                                                           sampler=sampler))
    out = {}
    for name, norm in (('bn', nn.BatchNorm2d(4)), ('frozen', nn.BatchNorm2d(4)),
                       ('sync', nn.SyncBatchNorm(4))):
        model = _PlannedModel(quota, norm, frozen=name == 'frozen')
        runner = SimpleNamespace(model=model, hooks=[],
                                 train_dataloader=loader)
        hook = ExpertParallelExchangeHook()
        out[name] = _warnings(lambda: hook.before_train(runner))
        assert model.training == nn.Module().training  # modes restored
    out['shares'] = sampler.distortion(BATCH)['single_dataset_batch_share']
    return out


def _worker(rank, world_size, out_dir, repo_root, data_root, quota):
    dataset = _dataset(repo_root, data_root)
    torch.manual_seed(0)
    layer = MoEFFN(DIM, 2 * DIM, num_experts=EXPERTS)
    convert_to_expert_parallel(layer)
    results = {}
    for kind in SAMPLERS:
        sampler = _sampler(kind, dataset, quota)
        epoch = list(iter(sampler))
        batch = epoch[:BATCH]
        ids, buckets = _routing(dataset, batch)
        x = torch.randn(BATCH, TOKENS, DIM, requires_grad=True)
        exchange_stats().reset()
        routing = routing_from_plan(torch.from_numpy(quota), ids, buckets)
        layer(x, routing=routing).sum().backward()
        results[kind] = dict(epoch=epoch, stats=exchange_stats().snapshot(),
                             expected=sampler.expected_images_per_dataset())
    strict = ExpertLocalitySampler(dataset, seed=3, strict=True)
    results['strict_warnings'] = _warnings(lambda: strict.set_plan(quota))
    results['distortion'] = strict.distortion(BATCH)
    balanced = ExpertLocalitySampler(dataset, seed=3)
    results['default_strict'] = balanced.strict
    results['balanced_warnings'] = _warnings(lambda: balanced.set_plan(quota))
    results['balanced_distortion'] = balanced.distortion()
    results['batchnorm'] = _batchnorm_warnings(dataset)
    return results


@pytest.fixture(scope='module')
def setup(repo_root, mini_uodb_root, tmp_path_factory):
    dataset = _dataset(repo_root, mini_uodb_root)
    plan = _plan(dataset)
    results = run_distributed(_worker, 2, tmp_path_factory.mktemp('loc'),
                              repo_root, str(mini_uodb_root), plan.quota)
    owner = {}
    for idx in range(len(dataset)):
        (d, ), (b, ) = _routing(dataset, [idx])
        owner[idx] = route_bucket(plan.quota[int(d)], int(b)) // 2
    return dataset, plan, owner, results


def _predicted_bytes(owner, batches, rank):
    """Bytes rank sends: its off-rank images' tokens out and the other
    rank's off-rank tokens back, in forward and again in backward."""
    other = 1 - rank
    out = sum(owner[i] != rank for i in batches[rank][:BATCH])
    back = sum(owner[i] != other for i in batches[other][:BATCH])
    return 2 * (out + back) * TOKENS * DIM * 4


def test_locality_sampler_moves_zero_bytes(setup):
    _, _, owner, results = setup
    for rank, res in enumerate(results):
        strict = res['strict']
        assert all(owner[i] == rank for i in strict['epoch'])
        assert strict['stats']['sent_bytes'] == 0
        assert strict['stats']['exchanges'] == 0


def test_default_sampler_moves_what_the_plan_predicts(setup):
    _, _, owner, results = setup
    for kind in ('default', 'balanced'):
        batches = [res[kind]['epoch'] for res in results]
        for rank, res in enumerate(results):
            predicted = _predicted_bytes(owner, batches, rank)
            assert res[kind]['stats']['sent_bytes'] == predicted, kind
            assert res[kind]['stats']['received_bytes'] == predicted, kind
    # the stride split does move images on this plan
    batches = [res['default']['epoch'] for res in results]
    assert _predicted_bytes(owner, batches, 0) > 0


def test_balanced_locality_uses_every_image_once(setup):
    dataset, plan, owner, results = setup
    default = sorted(results[0]['default']['epoch'] +
                     results[1]['default']['epoch'])
    balanced = [res['balanced']['epoch'] for res in results]
    # the same images as the default sampler's epoch (with its padding) ...
    assert sorted(balanced[0] + balanced[1]) == default
    assert len(balanced[0]) == len(balanced[1])
    # ... and only the surplus of the fuller rank is placed on the other one
    loads = np.bincount([owner[i] for i in default], minlength=2)
    moved = sum(owner[i] != r for r, epoch in enumerate(balanced)
                for i in epoch)
    assert moved == abs(int(loads[0]) - int(loads[1])) // 2
    for res in results:
        for kind in SAMPLERS:
            np.testing.assert_array_equal(res[kind]['expected'],
                                          res['default']['expected'])


def test_strict_locality_warns_with_the_measured_distortion(setup):
    dataset, _, _, results = setup
    ids = np.asarray(dataset.sample_dataset_ids)
    planned = Counter(results[0]['default']['epoch'] +
                      results[1]['default']['epoch'])
    drawn = Counter(results[0]['strict']['epoch'] +
                    results[1]['strict']['epoch'])
    total = sum(planned.values())
    assert sum(drawn.values()) == total
    dropped = sum((planned - drawn).values()) / total
    repeated = sum((drawn - planned).values()) / total
    names = dataset.dataset_names

    def shares(counter):
        per = np.zeros(len(names))
        for idx, n in counter.items():
            per[ids[idx]] += n
        return per / total

    diff = np.abs(shares(drawn) - shares(planned))
    assert dropped > 0.05  # the strict split does distort this plan
    for res in results:
        d = res['distortion']
        assert d['dropped_share'] == pytest.approx(dropped)
        assert d['repeated_share'] == pytest.approx(repeated)
        np.testing.assert_allclose(d['planned_shares'], shares(planned))
        np.testing.assert_allclose(d['drawn_shares'], shares(drawn))
        assert d['max_share_diff'] == pytest.approx(diff.max())
        assert d['max_share_diff_dataset'] == names[int(diff.argmax())]
        message = [m for m in res['strict_warnings'] if 'strict=True' in m]
        assert len(message) == 1
        assert f'drops {100 * dropped:.1f}% of its images' in message[0]
        assert f'repeats {100 * repeated:.1f}%' in message[0]
        worst = names[int(diff.argmax())]
        assert (f'{worst} {100 * shares(planned)[int(diff.argmax())]:.1f}% -> '
                f'{100 * shares(drawn)[int(diff.argmax())]:.1f}%') in message[0]
        # the default split keeps the plan's data mix and does not warn
        assert res['default_strict'] is False
        assert res['balanced_warnings'] == []
        b = res['balanced_distortion']
        assert b['dropped_share'] == b['repeated_share'] == b['max_share_diff'] == 0


def test_batchnorm_warning_for_single_dataset_ranks(setup):
    for res in setup[3]:
        bn = res['batchnorm']
        assert bn['shares'][1] == 1.0 and bn['shares'][0] < 0.5
        message = [m for m in bn['bn'] if 'BatchNorm' in m]
        assert len(message) == 1
        assert 'ranks [1] get single-dataset batches' in message[0]
        assert 'SyncBN' in message[0] and 'norm_eval=True' in message[0]
        assert not [m for m in bn['frozen'] + bn['sync'] if 'BatchNorm' in m]


def test_locality_sampler_errors(setup):
    dataset, plan, _, _ = setup
    sampler = ExpertLocalitySampler(dataset)
    with pytest.raises(RuntimeError, match='has no plan: add '
                       'ExpertParallelExchangeHook'):
        list(iter(sampler))
    with pytest.raises(ValueError, match=r'quota has shape \(2, 4\), the '
                       'dataset has 6 datasets'):
        sampler.set_plan(np.ones((2, 4), dtype=np.int64))
    with pytest.raises(ValueError, match='round_up=True'):
        ExpertLocalitySampler(dataset, round_up=False)
    sampler.set_plan(plan.quota)
    assert sorted(iter(sampler)) == list(range(len(dataset)))
