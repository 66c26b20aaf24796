# Copyright (c) mmgem contributors. All rights reserved.
"""The K x K dataset similarity S of the GEM planner (spec section 2).

S is a weighted mean of any of three sources:

* ``prior`` -- user-given groups of dataset names: 1 inside a group, 0
  across. A dataset in no group is a group of its own.
* ``labels`` -- the Jaccard overlap of the datasets' normalised class names
  (lower case, ``_``/``-`` as spaces, runs of spaces collapsed).
* ``features`` -- the cosine of per-dataset feature vectors (for example the
  mean-pooled backbone features of a few probe images), clipped to [0, 1].

The diagonal is always 1.
"""
from typing import Dict, Mapping, Optional, Sequence

import numpy as np

from ..utils.label_space import normalize_class_name
from .errors import PlanError

SIMILARITY_SOURCES = ('prior', 'labels', 'features')


def prior_similarity(dataset_names: Sequence[str],
                     groups: Sequence[Sequence[str]]) -> np.ndarray:
    """Similarity of user-given groups: 1 inside a group, 0 across.

    Args:
        dataset_names (Sequence[str]): The K dataset names, in plan order.
        groups (Sequence[Sequence[str]]): Groups of dataset names. A name may
            appear in one group only; names not listed are singletons.

    Returns:
        np.ndarray: K x K float64 matrix.
    """
    names = list(dataset_names)
    index = {n: i for i, n in enumerate(names)}
    group_of = np.arange(len(names))
    seen: Dict[str, int] = {}
    for g, group in enumerate(groups):
        if isinstance(group, str):
            raise PlanError(f'prior group {g} is the string {group!r}; '
                            'give each group as a list of dataset names')
        members = list(group)
        for name in members:
            if name not in index:
                raise PlanError(f'prior group {g} names dataset {name!r}, which is not one '
                                f'of the planned datasets {names}')
            if name in seen:
                raise PlanError(f'dataset {name!r} is in prior groups {seen[name]} and {g}; '
                                'a dataset may be in one group only')
            seen[name] = g
        if members:
            first = index[members[0]]
            for name in members:
                group_of[index[name]] = first
    return (group_of[:, None] == group_of[None, :]).astype(np.float64)


def label_similarity(dataset_names: Sequence[str],
                     labels: Mapping[str, Sequence[str]]) -> np.ndarray:
    """Jaccard overlap of normalised class-name sets.

    Args:
        dataset_names (Sequence[str]): The K dataset names.
        labels (Mapping[str, Sequence[str]]): Class names of every dataset.

    Returns:
        np.ndarray: K x K float64 matrix; two datasets without any class
        have overlap 0 (except on the diagonal).
    """
    missing = [n for n in dataset_names if n not in labels]
    if missing:
        raise PlanError(f'labels are missing for datasets {missing}')
    sets = []
    for name in dataset_names:
        classes = labels[name]
        if isinstance(classes, str):
            raise PlanError(f'labels[{name!r}] is the string {classes!r}; give a list of '
                            'class names')
        sets.append({normalize_class_name(c) for c in classes})
    vocab = sorted(set().union(*sets)) if sets else []
    col = {c: j for j, c in enumerate(vocab)}
    onehot = np.zeros((len(sets), len(vocab)), dtype=np.float64)
    for i, s in enumerate(sets):
        onehot[i, [col[c] for c in s]] = 1.0
    inter = onehot @ onehot.T
    sizes = onehot.sum(1)
    union = sizes[:, None] + sizes[None, :] - inter
    sim = np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)
    np.fill_diagonal(sim, 1.0)
    return sim


def feature_similarity(dataset_names: Sequence[str],
                       features: Mapping[str, Sequence[float]]) -> np.ndarray:
    """Cosine similarity of per-dataset feature vectors, clipped to [0, 1].

    Args:
        dataset_names (Sequence[str]): The K dataset names.
        features (Mapping[str, Sequence[float]]): A 1-d vector per dataset,
            all of the same length.

    Returns:
        np.ndarray: K x K float64 matrix.
    """
    missing = [n for n in dataset_names if n not in features]
    if missing:
        raise PlanError(f'features are missing for datasets {missing}')
    rows = []
    for name in dataset_names:
        vec = np.asarray(features[name], dtype=np.float64)
        if vec.ndim != 1 or vec.size == 0:
            raise PlanError(f'features[{name!r}] has shape {vec.shape}; expected a '
                            'non-empty 1-d vector')
        if not np.all(np.isfinite(vec)):
            raise PlanError(f'features[{name!r}] holds NaN or inf')
        norm = np.linalg.norm(vec)
        if norm == 0:
            raise PlanError(f'features[{name!r}] is the zero vector; its cosine is '
                            'undefined')
        rows.append(vec / norm)
    dims = {r.size for r in rows}
    if len(dims) > 1:
        sizes = {n: int(np.asarray(features[n]).size) for n in dataset_names}
        raise PlanError(f'feature vectors differ in length: {sizes}')
    mat = np.stack(rows) if rows else np.zeros((0, 0))
    sim = np.clip(mat @ mat.T, 0.0, 1.0)
    np.fill_diagonal(sim, 1.0)
    return sim


def build_similarity(dataset_names: Sequence[str],
                     prior: Optional[Sequence[Sequence[str]]] = None,
                     labels: Optional[Mapping[str, Sequence[str]]] = None,
                     features: Optional[Mapping[str, Sequence[float]]] = None,
                     weights: Optional[Mapping[str, float]] = None) -> np.ndarray:
    """Build the planner's similarity S from the given sources.

    Args:
        dataset_names (Sequence[str]): The K dataset names, in plan order.
        prior (Sequence[Sequence[str]], optional): Groups of dataset names.
        labels (Mapping[str, Sequence[str]], optional): Class names per
            dataset.
        features (Mapping[str, Sequence[float]], optional): A feature vector
            per dataset.
        weights (Mapping[str, float], optional): Weight of each given source
            (keys among ``'prior'``, ``'labels'``, ``'features'``). Sources
            not named weigh 1; a named source that is not given is an error.

    Returns:
        np.ndarray: K x K float64 matrix in [0, 1] with a unit diagonal, the
        weighted mean of the given sources.

    Example:
        >>> from mmgem.planner import build_similarity
        >>> build_similarity(['voc', 'clipart', 'kitti'],
        ...                  prior=[['voc', 'clipart']])[0].tolist()
        [1.0, 1.0, 0.0]
    """
    names = list(dataset_names)
    if len(set(names)) != len(names):
        dup = sorted({n for n in names if names.count(n) > 1})
        raise PlanError(f'dataset names must be unique; repeated: {dup}')
    parts = {}
    if prior is not None:
        parts['prior'] = prior_similarity(names, prior)
    if labels is not None:
        parts['labels'] = label_similarity(names, labels)
    if features is not None:
        parts['features'] = feature_similarity(names, features)
    if not parts:
        raise PlanError('build_similarity needs at least one of prior, labels or features')
    weights = dict(weights or {})
    unknown = sorted(set(weights) - set(SIMILARITY_SOURCES))
    if unknown:
        raise PlanError(f'unknown similarity sources in weights: {unknown}; '
                        f'known: {list(SIMILARITY_SOURCES)}')
    absent = sorted(set(weights) - set(parts))
    if absent:
        raise PlanError(f'weights name similarity sources {absent} that were not given')
    total = 0.0
    sim = np.zeros((len(names), len(names)), dtype=np.float64)
    for key in SIMILARITY_SOURCES:
        if key not in parts:
            continue
        wk = float(weights.get(key, 1.0))
        if not np.isfinite(wk) or wk < 0:
            raise PlanError(f'similarity weight {key}={wk} must be finite and >= 0')
        sim += wk * parts[key]
        total += wk
    if total <= 0:
        raise PlanError(f'similarity weights {weights} sum to 0')
    sim /= total
    np.fill_diagonal(sim, 1.0)
    return sim


def check_similarity(similarity, num_datasets: int) -> np.ndarray:
    """Validate a user-given similarity matrix.

    It must be square, K x K, finite, in [0, 1], with a unit diagonal and
    symmetric (to 1e-9): the cost ``1 - S[d, c]`` of serving d by anchor c is
    the same relation both ways, and a non-symmetric S is refused with the
    entries at fault rather than silently used one-sided.

    Args:
        similarity (array-like): The K x K matrix.
        num_datasets (int): K.

    Returns:
        np.ndarray: The matrix as float64.
    """
    sim = np.asarray(similarity, dtype=np.float64)
    if sim.ndim != 2 or sim.shape[0] != sim.shape[1]:
        raise PlanError(f'similarity must be a square matrix; got shape {sim.shape}')
    if sim.shape[0] != num_datasets:
        raise PlanError(f'similarity is {sim.shape[0]} x {sim.shape[1]} but there are '
                        f'{num_datasets} datasets')
    bad = np.argwhere(~np.isfinite(sim))
    if bad.size:
        i, j = bad[0]
        raise PlanError(f'similarity[{i}, {j}] is {sim[i, j]}; it must be finite')
    bad = np.argwhere((sim < 0) | (sim > 1))
    if bad.size:
        i, j = bad[0]
        raise PlanError(f'similarity[{i}, {j}]={float(sim[i, j])!r} is outside [0, 1]')
    diag = np.diag(sim)
    bad = np.flatnonzero(np.abs(diag - 1.0) > 1e-9)
    if bad.size:
        i = bad[0]
        raise PlanError(f'similarity[{i}, {i}]={float(diag[i])!r}; a dataset is fully similar to '
                        'itself (the diagonal must be 1)')
    asym = np.abs(sim - sim.T)
    if asym.max(initial=0.0) > 1e-9:
        i, j = np.unravel_index(int(np.argmax(asym)), asym.shape)
        raise PlanError(f'similarity is not symmetric: similarity[{i}, {j}]={float(sim[i, j])!r} '
                        f'but similarity[{j}, {i}]={float(sim[j, i])!r}; the planner needs '
                        'S[d, c] == S[c, d] (symmetrise it, e.g. (S + S.T) / 2)')
    return sim
