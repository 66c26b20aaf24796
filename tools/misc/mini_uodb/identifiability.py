# Copyright (c) mmgem contributors. All rights reserved.
"""How well global image statistics alone name the domain of an image.

A benchmark of multi-dataset detection is too easy for dataset-unknown
routing when a trivial classifier can tell the domains apart from global
pixel statistics. This module measures it: every image becomes a vector of
:data:`STAT_NAMES` (12 pixel statistics and 2 of its geometry), the vectors
are standardised over all images, and a leave-one-out 1-nearest-neighbour
classifier (Euclidean) predicts each image's domain from all the other
images. ``python tools/misc/make_mini_uodb.py`` prints the result after
generating, and ``tools/analysis_tools/domain_identifiability.py`` runs it
on any UODB-style root. numpy and PIL only.
"""
import os.path as osp
from typing import Dict, List, Mapping, Optional, Sequence

import numpy as np
from PIL import Image
from scipy.spatial.distance import cdist

#: The statistics of :func:`global_statistics`, in order.
STAT_NAMES = ('mean_r', 'mean_g', 'mean_b', 'std_r', 'std_g', 'std_b', 'grey_skewness',
              'grey_kurtosis', 'grey_entropy', 'edge_density', 'saturation', 'colourfulness',
              'log_aspect', 'log_pixels')


def global_statistics(img: Image.Image) -> np.ndarray:
    """The global statistics of one image.

    Args:
        img (Image.Image): Any PIL image (grey-scale ones count as RGB with
            equal channels).

    Returns:
        np.ndarray: float64 vector in the order of :data:`STAT_NAMES`:
        channel means and standard deviations (in [0, 1]), skewness,
        kurtosis and 32-bin entropy of the grey levels, mean absolute grey
        gradient, mean saturation ``(max - min) / max``, Hasler and
        Suesstrunk's colourfulness, ``log(width / height)`` and
        ``log(width * height)``.
    """
    rgb = np.asarray(img.convert('RGB'), np.float64) / 255.0
    flat = rgb.reshape(-1, 3)
    mean, std = flat.mean(0), flat.std(0)
    grey = rgb @ np.array([0.299, 0.587, 0.114])
    g = grey.ravel()
    gs = g.std() + 1e-8
    z = (g - g.mean()) / gs
    hist = np.bincount(np.minimum((g * 32).astype(np.int64), 31), minlength=32) / g.size
    nz = hist[hist > 0]
    edges = (np.abs(np.diff(grey, axis=0)).mean() + np.abs(np.diff(grey, axis=1)).mean()) / 2
    high, low = flat.max(1), flat.min(1)
    saturation = float(np.mean((high - low) / np.maximum(high, 1e-8)))
    rg = flat[:, 0] - flat[:, 1]
    yb = 0.5 * (flat[:, 0] + flat[:, 1]) - flat[:, 2]
    colourfulness = np.hypot(rg.std(), yb.std()) + 0.3 * np.hypot(rg.mean(), yb.mean())
    return np.array([
        *mean, *std, float((z**3).mean()), float((z**4).mean()), float(-(nz * np.log(nz)).sum()),
        float(edges), saturation, float(colourfulness), float(np.log(img.width / img.height)),
        float(np.log(img.width * img.height))
    ])


def leave_one_out_1nn(features: np.ndarray, labels: Sequence[int]) -> np.ndarray:
    """Whether each sample's nearest other sample has its label.

    Args:
        features (np.ndarray): ``(n, f)`` feature vectors, standardised here
            (zero mean, unit standard deviation per column over all n).
        labels (Sequence[int]): ``n`` labels.

    Returns:
        np.ndarray: ``(n,)`` bool, True where the 1-NN (Euclidean, the
        sample itself excluded, ties to the lower index) is right.
    """
    x = np.asarray(features, np.float64)
    labels = np.asarray(labels)
    if x.ndim != 2 or len(x) != len(labels) or len(x) < 2:
        raise ValueError(f'need (n >= 2, f) features with n labels, got {x.shape} and '
                         f'{labels.shape}')
    sd = x.std(0)
    x = (x - x.mean(0)) / np.where(sd > 0, sd, 1.0)
    dist = cdist(x, x, 'sqeuclidean')
    np.fill_diagonal(dist, np.inf)
    return labels[np.argmin(dist, axis=1)] == labels


def domain_identifiability(statistics: Mapping[str, np.ndarray],
                           shared_look: Sequence[str] = ()) -> Dict:
    """Leave-one-out 1-NN domain accuracy on global statistics.

    Args:
        statistics (Mapping[str, np.ndarray]): Per domain, the ``(n_d, f)``
            statistics of its images.
        shared_look (Sequence[str]): The domains that share a look with
            another domain; their mean accuracy is reported apart.

    Returns:
        dict: ``per_domain`` (accuracy of each domain's images),
        ``overall`` (over all images), ``shared_look`` (mean of the
        per-domain accuracies of ``shared_look``; None when empty),
        ``shared_look_domains``, ``images`` (per domain) and ``stats``
        (the statistic names when they are :data:`STAT_NAMES`).
    """
    names = list(statistics)
    unknown = [d for d in shared_look if d not in statistics]
    if unknown:
        raise ValueError(f'shared-look domains {unknown} have no statistics (domains: {names})')
    feats = np.concatenate([np.asarray(statistics[d], np.float64) for d in names])
    labels = np.concatenate([np.full(len(statistics[d]), i) for i, d in enumerate(names)])
    correct = leave_one_out_1nn(feats, labels)
    per_domain = {d: float(correct[labels == i].mean()) for i, d in enumerate(names)}
    shared = [d for d in names if d in set(shared_look)]
    return dict(
        per_domain=per_domain,
        overall=float(correct.mean()),
        shared_look=float(np.mean([per_domain[d] for d in shared])) if shared else None,
        shared_look_domains=shared,
        images={d: int(len(statistics[d])) for d in names},
        stats=list(STAT_NAMES) if feats.shape[1] == len(STAT_NAMES) else None)


def read_statistics(root: str, domains: Sequence[str], split: str = 'train',
                    max_images: Optional[int] = 200) -> Dict[str, np.ndarray]:
    """Global statistics of the first images of each domain's split.

    Args:
        root (str): A UODB-style root (``<domain>/ImageSets/Main/<split>.txt``
            and ``<domain>/JPEGImages/<stem>.jpg``).
        domains (Sequence[str]): The domains to read.
        split (str): The split of every domain. Defaults to ``'train'``.
        max_images (int, optional): At most this many images per domain (the
            first ones of the split file); None reads all.

    Returns:
        dict[str, np.ndarray]: Per domain, ``(n_d, 14)`` statistics.
    """
    out = {}
    for domain in domains:
        list_file = osp.join(root, domain, 'ImageSets', 'Main', f'{split}.txt')
        if not osp.isfile(list_file):
            raise FileNotFoundError(f'{list_file}: no {split!r} split of domain {domain!r}')
        with open(list_file) as f:
            stems = [s for s in f.read().split() if s][:max_images]
        rows: List[np.ndarray] = []
        for stem in stems:
            path = osp.join(root, domain, 'JPEGImages', f'{stem}.jpg')
            with Image.open(path) as img:
                rows.append(global_statistics(img))
        if not rows:
            raise ValueError(f'{list_file} lists no images')
        out[domain] = np.stack(rows)
    return out


def format_identifiability(result: Dict, bound: Optional[float] = None) -> str:
    """Render :func:`domain_identifiability`'s result as markdown.

    Args:
        result (dict): The result.
        bound (float, optional): The bound the shared-look accuracy must stay
            below; printed with whether it holds.

    Returns:
        str: A table of per-domain accuracies and summary lines.
    """
    lines = ['| domain | images | 1-NN accuracy |', '|---|---|---|']
    for d, acc in result['per_domain'].items():
        mark = ' (shares a look)' if d in result['shared_look_domains'] else ''
        lines.append(f'| {d}{mark} | {result["images"][d]} | {100 * acc:.1f}% |')
    n_stats = len(result['stats']) if result['stats'] else 'the'
    lines.append(f'1-NN domain accuracy on {n_stats} global statistics (leave-one-out): '
                 f'{100 * result["overall"]:.1f}% over all domains')
    if result['shared_look'] is not None:
        line = (f'over the domains that share a look ({", ".join(result["shared_look_domains"])}):'
                f' {100 * result["shared_look"]:.1f}%')
        if bound is not None:
            ok = result['shared_look'] < bound
            line += f' (bound < {100 * bound:.0f}%: {"met" if ok else "NOT met"})'
        lines.append(line)
    return '\n'.join(lines)


__all__ = [
    'STAT_NAMES', 'global_statistics', 'leave_one_out_1nn', 'domain_identifiability',
    'read_statistics', 'format_identifiability'
]
