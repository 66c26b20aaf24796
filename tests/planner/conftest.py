# Copyright (c) mmgem contributors. All rights reserved.
"""Helpers of the planner tests: seeded random planning instances."""
import numpy as np
import pytest


def make_instance(num_datasets: int, seed: int, dim: int = 8, sharpness: float = 2.0):
    """A seeded random instance: clustered features -> S, log-normal loads.

    Args:
        num_datasets (int): K.
        seed (int): Seed.
        dim (int): Feature dimension.
        sharpness (float): Power applied to the clipped cosine.

    Returns:
        tuple: ``(names, loads, similarity)``.
    """
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(max(1, num_datasets // 3), dim))
    feats = centers[rng.integers(0, len(centers), num_datasets)]
    feats = feats + 0.7 * rng.normal(size=(num_datasets, dim))
    feats /= np.linalg.norm(feats, axis=1, keepdims=True)
    sim = np.clip(feats @ feats.T, 0, 1) ** sharpness
    np.fill_diagonal(sim, 1.0)
    loads = np.round(rng.lognormal(np.log(500), 1.0, num_datasets)) + 1
    return [f'd{i}' for i in range(num_datasets)], loads, sim


@pytest.fixture
def instance():
    """Return :func:`make_instance`."""
    return make_instance
