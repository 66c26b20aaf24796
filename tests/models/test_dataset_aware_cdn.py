# Copyright (c) mmgem contributors. All rights reserved.
"""DatasetAwareCdnQueryGenerator: DN label noise stays in each image's
dataset; with the whole label space it is mmdet's generator."""
import pytest
import torch
from mmdet.models.layers import CdnQueryGenerator
from mmdet.structures import DetDataSample
from mmengine.structures import InstanceData

from mmgem.models.layers import DatasetAwareCdnQueryGenerator

NUM_CLASSES = 167  # UODB's concatenated label space
EMBED = 256
# kitti [0, 3), voc [3, 23), coco [39, 119), deeplesion [134, 135)
RANGES = [(0, 3), (3, 23), (39, 119), (134, 135)]
CFG = dict(
    num_classes=NUM_CLASSES,
    embed_dims=EMBED,
    num_matching_queries=10,
    label_noise_scale=1.0,  # half of all labels are re-drawn
    box_noise_scale=1.0,
    group_cfg=dict(dynamic=False, num_groups=20))


def _samples(counts, seed=0):
    gen = torch.Generator().manual_seed(seed)
    samples = []
    for (low, high), n in zip(RANGES, counts):
        xy = torch.rand(n, 2, generator=gen) * 40
        sample = DetDataSample(metainfo=dict(img_shape=(64, 64)))
        sample.gt_instances = InstanceData(
            bboxes=torch.cat([xy, xy + 5 + torch.rand(n, 2, generator=gen) * 20],
                             1),
            labels=torch.randint(low, high, (n, ), generator=gen))
        samples.append(sample)
    return samples


def _one_hot_generator(cls):
    """A generator whose label embedding is one-hot: label = argmax."""
    gen = cls(**CFG)
    with torch.no_grad():
        gen.label_embedding.weight.copy_(torch.eye(NUM_CLASSES, EMBED))
    return gen


def _dn_labels(dn_label_query, counts, num_groups):
    """Noisy label of every real (not padding) denoising query per image."""
    labels = dn_label_query.argmax(-1)
    max_targets = max(counts)
    out = []
    for b, n in enumerate(counts):
        idx = [
            g * 2 * max_targets + part * max_targets + j
            for g in range(num_groups) for part in (0, 1) for j in range(n)
        ]
        out.append(labels[b, idx])
    return out


def test_label_noise_stays_in_each_images_dataset():
    counts = [6, 5, 8, 3]
    samples = _samples(counts)
    ranges = torch.tensor(RANGES)
    torch.manual_seed(0)
    query, _, _, meta = _one_hot_generator(DatasetAwareCdnQueryGenerator)(
        samples, label_ranges=ranges)
    noisy = _dn_labels(query, counts, meta['num_denoising_groups'])
    for (low, high), labels, sample in zip(RANGES, noisy, samples):
        assert int(labels.min()) >= low and int(labels.max()) < high
        clean = sample.gt_instances.labels.repeat(2 * meta['num_denoising_groups'])
        if high - low > 1:
            assert bool((labels != clean).any())  # noise was added
    # uniform over the range: every label of the small ranges is drawn
    assert set(noisy[0].tolist()) == {0, 1, 2}
    assert len(set(noisy[1].tolist())) >= 15
    # mmdet's generator draws from all 167 classes (the test can fail)
    torch.manual_seed(0)
    query, _, _, meta = _one_hot_generator(CdnQueryGenerator)(samples)
    noisy = _dn_labels(query, counts, meta['num_denoising_groups'])
    outside = sum(int(((x < lo) | (x >= hi)).sum())
                  for (lo, hi), x in zip(RANGES, noisy))
    assert outside > 100


def test_whole_label_space_is_mmdets_generator():
    counts = [4, 2, 3, 1]
    samples = _samples(counts, seed=1)
    ours = DatasetAwareCdnQueryGenerator(**CFG)
    theirs = CdnQueryGenerator(**CFG)
    ours.load_state_dict(theirs.state_dict())
    full = torch.tensor([[0, NUM_CLASSES]] * len(counts))
    for kwargs in (dict(label_ranges=full), dict()):
        torch.manual_seed(5)
        expected = theirs(samples)
        torch.manual_seed(5)
        got = ours(samples, **kwargs)
        for a, b in zip(got[:3], expected[:3]):
            assert torch.equal(a, b)
        assert got[3] == expected[3]


def test_images_without_boxes_and_bad_ranges():
    samples = _samples([0, 3, 0, 2])
    torch.manual_seed(0)
    query, _, _, meta = _one_hot_generator(DatasetAwareCdnQueryGenerator)(
        samples, label_ranges=torch.tensor(RANGES))
    noisy = _dn_labels(query, [0, 3, 0, 2], meta['num_denoising_groups'])
    assert noisy[0].numel() == 0 and noisy[2].numel() == 0
    assert int(noisy[1].min()) >= 3 and int(noisy[1].max()) < 23
    assert bool((noisy[3] == 134).all())
    with pytest.raises(ValueError,
                       match=r'label_ranges must have shape \(4, 2\).*got \(2, 2\)'):
        DatasetAwareCdnQueryGenerator(**CFG)(
            samples, label_ranges=torch.tensor(RANGES[:2]))
