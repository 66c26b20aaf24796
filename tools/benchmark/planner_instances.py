# Copyright (c) mmgem contributors. All rights reserved.
"""Seeded planning instances of the planner benchmarks (numpy only).

Families of random instances, fixed before any result was seen (the
benchmark is a measurement; the generators are never tuned to it):

* ``clustered`` -- datasets around ``max(1, K // 3)`` latent domains: noisy
  8-d features, S = clipped cosine squared (as the planner tests do);
* ``uniform`` -- S[i, j] uniform in [0, 1], symmetric;
* ``blocks`` -- a random partition into groups (a prior): S in [0.7, 1]
  inside a group and [0, 0.3] across;
* ``labels`` -- the Jaccard overlap of random label sets drawn from a
  60-class vocabulary with Zipf popularity (detection datasets share the
  common classes), 1-20 classes each.

Every random instance draws K in 3..12, M in 1..10, loads log-uniform over a
50:1 range (smallest 50-500 images), ``capacity_factor`` from
(None, 1, 1.1, 1.25, 2) and ``beta`` from (0, 0.5, 1). The ``uodb`` family
plans the real UODB statistics (``configs/_base_/datasets/uodb_stats.json``)
with the label, prior, or prior + label similarity on 2-16 experts with the
same capacity factors and betas. ``scaling`` instances (K x M given) use the
``clustered`` similarity and log-normal loads (median 3000) of
``planner_scaling.py``.
"""
import json
import os.path as osp
import sys
import types
from typing import Dict, List, Optional

import numpy as np

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))

FAMILIES = ('clustered', 'uniform', 'blocks', 'labels')


def import_planner():
    """Import this checkout's mmgem.planner without mmgem/__init__ (no torch).

    Returns:
        module: ``mmgem.planner``.
    """
    if 'mmgem' not in sys.modules:
        pkg = types.ModuleType('mmgem')
        pkg.__path__ = [osp.join(ROOT, 'mmgem')]
        sys.modules['mmgem'] = pkg
    import mmgem.planner as planner
    return planner
CAPACITY_FACTORS = (None, 1.0, 1.1, 1.25, 2.0)
BETAS = (0.0, 0.5, 1.0)


def _labels_similarity(sets: List[set]) -> np.ndarray:
    k = len(sets)
    sim = np.eye(k)
    for i in range(k):
        for j in range(i + 1, k):
            union = len(sets[i] | sets[j])
            sim[i, j] = sim[j, i] = len(sets[i] & sets[j]) / union if union else 0.0
    return sim


def similarity(family: str, k: int, rng: np.random.Generator) -> np.ndarray:
    """A K x K similarity of one family.

    Args:
        family (str): One of :data:`FAMILIES`.
        k (int): K.
        rng (np.random.Generator): The instance's generator.

    Returns:
        np.ndarray: Symmetric, in [0, 1], unit diagonal.
    """
    if family == 'clustered':
        centers = rng.normal(size=(max(1, k // 3), 8))
        feats = centers[rng.integers(0, len(centers), k)] + 0.7 * rng.normal(size=(k, 8))
        feats /= np.linalg.norm(feats, axis=1, keepdims=True)
        sim = np.clip(feats @ feats.T, 0, 1) ** 2
    elif family == 'uniform':
        upper = np.triu(rng.random((k, k)), 1)
        sim = upper + upper.T
    elif family == 'blocks':
        groups = rng.integers(0, max(1, (k + 1) // 2), k)
        same = groups[:, None] == groups[None, :]
        noise = np.triu(rng.random((k, k)), 1)
        noise = noise + noise.T
        sim = np.where(same, 0.7 + 0.3 * noise, 0.3 * noise)
    elif family == 'labels':
        vocab = 60
        pop = 1.0 / np.arange(1, vocab + 1)
        pop /= pop.sum()
        sets = [set(rng.choice(vocab, size=int(rng.integers(1, 21)), replace=False,
                               p=pop).tolist()) for _ in range(k)]
        sim = _labels_similarity(sets)
    else:
        raise ValueError(f'unknown family {family!r}')
    np.fill_diagonal(sim, 1.0)
    return sim


def random_instance(family: str, seed: int) -> Dict:
    """One seeded instance of a random family.

    Args:
        family (str): One of :data:`FAMILIES`.
        seed (int): Seed.

    Returns:
        dict: ``family, seed, names, loads, similarity, num_experts,
        capacity_factor, beta``.
    """
    rng = np.random.default_rng([FAMILIES.index(family), seed])
    k = int(rng.integers(3, 13))
    m = int(rng.integers(1, 11))
    cf = CAPACITY_FACTORS[int(rng.integers(len(CAPACITY_FACTORS)))]
    beta = BETAS[int(rng.integers(len(BETAS)))]
    smallest = float(rng.integers(50, 501))
    loads = np.round(smallest * 50.0 ** rng.random(k))
    sim = similarity(family, k, rng)
    return dict(family=family, seed=seed, names=[f'd{i}' for i in range(k)],
                loads=loads.tolist(), similarity=sim, num_experts=m, capacity_factor=cf,
                beta=beta)


def uodb_instances(stats_path: str, count: int) -> List[Dict]:
    """Instances on the real UODB statistics.

    Args:
        stats_path (str): ``uodb_stats.json``.
        count (int): How many (seeded: seed i picks the similarity sources,
            M, capacity factor and beta).

    Returns:
        list[dict]: Instances as :func:`random_instance` returns them.
    """
    build_similarity = import_planner().build_similarity
    with open(stats_path, encoding='utf-8') as f:
        raw = json.load(f)
    names = [e['name'] for e in raw['datasets']]
    loads = [float(e.get('load', e['num_images'])) for e in raw['datasets']]
    labels = {e['name']: e['classes'] for e in raw['datasets']}
    prior = raw['prior']
    sources = (dict(labels=labels), dict(prior=prior), dict(prior=prior, labels=labels))
    out = []
    for seed in range(count):
        rng = np.random.default_rng([100, seed])
        src = int(rng.integers(len(sources)))
        sim = build_similarity(names, **sources[src])
        out.append(dict(family='uodb', seed=seed, names=names, loads=loads, similarity=sim,
                        num_experts=int(rng.integers(2, 17)),
                        capacity_factor=CAPACITY_FACTORS[int(rng.integers(5))],
                        beta=BETAS[int(rng.integers(3))],
                        sources='+'.join(sorted(sources[src]))))
    return out


def scaling_instance(num_datasets: int, num_experts: int, seed: int,
                     capacity_factor: Optional[float] = 1.25) -> Dict:
    """A larger instance for the time per size (``planner_scaling.py``'s).

    Args:
        num_datasets (int): K.
        num_experts (int): M.
        seed (int): Seed.
        capacity_factor (float, optional): Defaults to 1.25.

    Returns:
        dict: As :func:`random_instance`.
    """
    rng = np.random.default_rng(seed)
    domains = num_datasets // 4 + 1
    centers = rng.normal(size=(domains, 16))
    which = rng.integers(0, domains, size=num_datasets)
    feats = centers[which] + 0.6 * rng.normal(size=(num_datasets, 16))
    feats /= np.linalg.norm(feats, axis=1, keepdims=True)
    sim = np.clip(feats @ feats.T, 0.0, 1.0) ** 2
    np.fill_diagonal(sim, 1.0)
    loads = np.round(rng.lognormal(np.log(3000), 1.0, size=num_datasets)) + 1
    return dict(family=f'{num_datasets}x{num_experts}', seed=seed,
                names=[f'ds{i:04d}' for i in range(num_datasets)], loads=loads.tolist(),
                similarity=sim, num_experts=num_experts, capacity_factor=capacity_factor,
                beta=0.0)
