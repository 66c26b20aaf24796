# Copyright (c) mmgem contributors. All rights reserved.
"""Session fixtures shared by mmgem's tests.

``mini_uodb_root`` generates the tiny mini-UODB once per test session and
converts it to COCO JSON; point a mini-UODB config at it with::

    cfg = Config.fromfile('configs/_base_/datasets/mini_uodb.py')
    for loader in (cfg.train_dataloader, cfg.val_dataloader):
        loader.dataset.data_root = str(mini_uodb_root)
"""
import gc
from pathlib import Path

import pytest

from tools.misc import make_mini_uodb

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DIR = (REPO_ROOT / '..' / 'shared').resolve()
MINI_UODB_SEED = 0


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item, nextitem):
    """Run each test (its fixtures' set-up and teardown included) with the
    objects that existed before it frozen out of the cyclic garbage
    collector.

    MMEngine's datasets call ``gc.collect()`` when they serialise their
    data (every sub-dataset of every runner a test builds); in a test
    session that holds torch, mmdet and earlier tests' fixtures, each call
    walked every tracked object (about a second on a busy 2-core machine).
    Frozen, the collector walks only what the running test made; nothing a
    test can observe changes (reference counting frees as before), and the
    objects are unfrozen after the test, so their garbage is collected then.
    """
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()


@pytest.fixture(scope='session')
def repo_root() -> Path:
    """The repository root."""
    return REPO_ROOT


@pytest.fixture(scope='session')
def uodb_xml_dir() -> Path:
    """The real UODB XML files in ``../shared/fixtures/uodb_xml``."""
    path = SHARED_DIR / 'fixtures' / 'uodb_xml'
    if not path.is_dir():
        pytest.skip(f'shared fixtures not found at {path} (CI puts a copy of '
                    'shared/ beside the clone)')
    return path


@pytest.fixture(scope='session')
def mini_uodb_root(tmp_path_factory) -> Path:
    """Root of a tiny mini-UODB (seed 0), generated and converted once.

    Holds ``<domain>/{Annotations,JPEGImages,ImageSets,annotations}`` for
    every domain of ``mmgem.datasets.MINI_UODB_DATASETS`` and the generator's
    manifest ``mini_uodb.json``; use it as ``data_root`` of
    ``configs/_base_/datasets/mini_uodb.py``.
    """
    root = tmp_path_factory.mktemp('mini_uodb')
    make_mini_uodb.make_mini_uodb(
        str(root), seed=MINI_UODB_SEED, scale='tiny', convert=True)
    return root


@pytest.fixture(scope='session')
def mini_uodb_v2_root(tmp_path_factory) -> Path:
    """Root of a tiny mini-UODB v2 (seed 0, 11 domains), generated and
    converted once per session (the generator, the identifiability tool and
    the dataset-unknown config tests read it)."""
    root = tmp_path_factory.mktemp('mini_uodb_v2')
    make_mini_uodb.make_mini_uodb(str(root), seed=0, scale='tiny', convert=True, version=2)
    return root


def _toy_domains(counts, seed, scale, dims=8):
    """Domain d: ``N(scale * e_d, 0.3^2 I)`` in ``dims`` dimensions,
    ``counts[d]`` samples each: separable, with the prior ``counts``.

    Returns:
        tuple[Tensor, Tensor]: ``(N, dims)`` features and ``(N,)`` domains.
    """
    import torch
    gen = torch.Generator().manual_seed(seed)
    xs, ys = [], []
    for d, n in enumerate(counts):
        mean = torch.zeros(dims)
        mean[d] = scale
        xs.append(mean + 0.3 * torch.randn(n, dims, generator=gen))
        ys.append(torch.full((n, ), d))
    return torch.cat(xs), torch.cat(ys)


@pytest.fixture
def toy_domains():
    """The separable, imbalanced toy domains of the classifier tests:
    ``toy_domains(counts, seed, scale)`` (see ``_toy_domains``)."""
    return _toy_domains
