# Copyright (c) mmgem contributors. All rights reserved.
"""Session fixtures shared by mmgem's tests.

``mini_uodb_root`` generates the tiny mini-UODB once per test session and
converts it to COCO JSON; point a mini-UODB config at it with::

    cfg = Config.fromfile('configs/_base_/datasets/mini_uodb.py')
    for loader in (cfg.train_dataloader, cfg.val_dataloader):
        loader.dataset.data_root = str(mini_uodb_root)
"""
import importlib.util
import sys
from pathlib import Path
from types import ModuleType
from typing import Callable

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DIR = (REPO_ROOT / '..' / 'shared').resolve()
MINI_UODB_SEED = 0

_tools = {}


def load_tool_module(relpath: str) -> ModuleType:
    """Import a script under ``tools/`` (not a package) by its path.

    Args:
        relpath (str): Path relative to the repository root, e.g.
            ``'tools/misc/make_mini_uodb.py'``.

    Returns:
        ModuleType: The module, loaded once per session.
    """
    if relpath not in _tools:
        path = REPO_ROOT / relpath
        name = 'mmgem_tool_' + path.stem
        spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module  # dataclasses need the module registered
        spec.loader.exec_module(module)
        _tools[relpath] = module
    return _tools[relpath]


@pytest.fixture(scope='session')
def load_tool() -> Callable[[str], ModuleType]:
    """Return :func:`load_tool_module`, to import ``tools/`` scripts."""
    return load_tool_module


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
    load_tool_module('tools/misc/make_mini_uodb.py').make_mini_uodb(
        str(root), seed=MINI_UODB_SEED, scale='tiny', convert=True)
    return root
