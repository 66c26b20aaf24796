# Copyright (c) mmgem contributors. All rights reserved.
"""UODBSampler.skip_batches: an epoch resumed after k batches continues with
exactly the batches the uninterrupted epoch had after them, for mmdet's
AspectRatioBatchSampler (which holds partly filled buckets), torch's
BatchSampler and SingleDatasetBatchSampler, without loading any image."""
import pytest
from mmdet.datasets.samplers import AspectRatioBatchSampler
from torch.utils.data import BatchSampler

from mmgem.datasets.samplers import SingleDatasetBatchSampler, UODBSampler

BATCH_SAMPLERS = {
    'aspect_ratio': lambda s: AspectRatioBatchSampler(s, batch_size=4),
    'torch': lambda s: BatchSampler(s, batch_size=4, drop_last=False),
    'single_dataset': lambda s: SingleDatasetBatchSampler(s, batch_size=4),
}


@pytest.mark.parametrize('kind', sorted(BATCH_SAMPLERS))
def test_skip_batches_continues_the_epoch(mini_train_dataset, kind):
    sampler = UODBSampler(mini_train_dataset, mode='ratio',
                          ratios=[1, 1, 1, 1, 1, 4], seed=7)
    sampler.set_epoch(3)
    batches = list(BATCH_SAMPLERS[kind](sampler))
    assert len(batches) > 8
    leftovers_seen = False
    for k in (0, 1, 5, len(batches) - 1, len(batches)):
        resumed = UODBSampler(mini_train_dataset, mode='ratio',
                              ratios=[1, 1, 1, 1, 1, 4], seed=0)
        resumed.load_state_dict(sampler.state_dict())
        batch_sampler = BATCH_SAMPLERS[kind](resumed)
        assert resumed.skip_batches(batch_sampler, k) == len(batches)
        if resumed._resume is not None:
            leftovers_seen |= bool(resumed._resume['leftovers'])
        rest = list(batch_sampler) if k < len(batches) else []
        assert rest == batches[k:], (kind, k)
        # the next epoch is a normal one again
        resumed.set_epoch(4)
        sampler.set_epoch(4)
        assert list(BATCH_SAMPLERS[kind](resumed)) == list(
            BATCH_SAMPLERS[kind](sampler))
        sampler.set_epoch(3)
    # only batch samplers that hold indices back leave any over
    assert leftovers_seen == (kind != 'torch')


def test_state_dict_round_trip(mini_train_dataset):
    sampler = UODBSampler(mini_train_dataset, seed=11)
    sampler.set_epoch(5)
    other = UODBSampler(mini_train_dataset, seed=3)
    other.load_state_dict(sampler.state_dict())
    assert list(other) == list(sampler)
    assert sampler.state_dict() == dict(type='UODBSampler', seed=11, epoch=5,
                                        world_size=1)
