# Copyright (c) mmgem contributors. All rights reserved.
"""The similarity sources and their validation."""
import numpy as np
import pytest

from mmgem.planner import PlanError, build_similarity, check_similarity, normalize_class_name

NAMES = ['voc', 'clipart', 'comic', 'kitti']
LABELS = dict(voc=['person', 'car', 'Dining_Table', 'dog'],
              clipart=['person', 'car', 'dining table', 'dog'],
              comic=['person', 'car', 'bird'],
              kitti=['pedestrian', 'car'])


def test_prior_groups():
    sim = build_similarity(NAMES, prior=[['voc', 'clipart'], ['kitti']])
    want = np.array([[a == b or {a, b} == {'voc', 'clipart'} for b in NAMES] for a in NAMES],
                    dtype=float)
    np.testing.assert_array_equal(sim, want)


def test_label_jaccard_matches_python_sets():
    sim = build_similarity(NAMES, labels=LABELS)
    sets = {n: {normalize_class_name(c) for c in cs} for n, cs in LABELS.items()}
    for i, a in enumerate(NAMES):
        for j, b in enumerate(NAMES):
            want = 1.0 if i == j else len(sets[a] & sets[b]) / len(sets[a] | sets[b])
            assert sim[i, j] == pytest.approx(want)
    assert sim[0, 1] == 1.0  # 'Dining_Table' == 'dining table' after normalising


def test_feature_cosine_clipped():
    rng = np.random.default_rng(0)
    feats = {n: rng.normal(size=5) for n in NAMES}
    sim = build_similarity(NAMES, features=feats)
    for i, a in enumerate(NAMES):
        for j, b in enumerate(NAMES):
            cos = feats[a] @ feats[b] / np.linalg.norm(feats[a]) / np.linalg.norm(feats[b])
            assert sim[i, j] == pytest.approx(1.0 if i == j else max(cos, 0.0))


def test_weighted_mean_of_sources():
    prior = [['voc', 'clipart', 'comic']]
    both = build_similarity(NAMES, prior=prior, labels=LABELS, weights=dict(prior=3, labels=1))
    want = (3 * build_similarity(NAMES, prior=prior) + build_similarity(NAMES, labels=LABELS)) / 4
    np.testing.assert_allclose(both, want)
    assert np.all(np.diag(both) == 1)


@pytest.mark.parametrize('kwargs, match', [
    (dict(), 'at least one of prior, labels or features'),
    (dict(prior=[['voc', 'nope']]), "names dataset 'nope'"),
    (dict(prior=[['voc'], ['voc', 'kitti']]), "'voc' is in prior groups 0 and 1"),
    (dict(prior=['voc']), 'is the string'),
    (dict(labels={'voc': ['a']}), r"labels are missing for datasets \['clipart'"),
    (dict(features={n: [0.0, 0.0] for n in NAMES}), r"features\['voc'\] is the zero vector"),
    (dict(features={**{n: [1.0, 0.0] for n in NAMES}, 'kitti': [1.0]}),
     'feature vectors differ in length'),
    (dict(prior=[['voc']], weights=dict(labels=1)), r"sources \['labels'\] that were not given"),
    (dict(prior=[['voc']], weights=dict(colour=1)), r"unknown similarity sources.*'colour'"),
    (dict(prior=[['voc']], weights=dict(prior=0)), 'sum to 0'),
])
def test_build_similarity_errors(kwargs, match):
    with pytest.raises(PlanError, match=match):
        build_similarity(NAMES, **kwargs)


@pytest.mark.parametrize('matrix, match', [
    (np.ones((2, 3)), r'square matrix; got shape \(2, 3\)'),
    (np.ones((3, 3)), 'is 3 x 3 but there are 2 datasets'),
    (np.array([[1, np.nan], [0, 1]]), r'similarity\[0, 1\] is nan'),
    (np.array([[1, 1.5], [0, 1]]), r'similarity\[0, 1\]=1\.5 is outside \[0, 1\]'),
    (np.array([[1, -0.1], [0, 1]]), r'similarity\[0, 1\]=-0\.1 is outside'),
    (np.array([[0.9, 0], [0, 1]]), r'similarity\[0, 0\]=0\.9.*diagonal must be 1'),
])
def test_check_similarity_errors(matrix, match):
    with pytest.raises(PlanError, match=match):
        check_similarity(matrix, 2)
