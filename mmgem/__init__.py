# Copyright (c) mmgem contributors. All rights reserved.
"""mmgem: GEM (Global Expert Mapping) for multi-dataset detection in mmdet.

Importing this package registers its modules into mmdet's registries, so a
config only needs::

    custom_imports = dict(imports=['mmgem'], allow_failed_imports=False)
"""
# isort: off
from .version import __version__, version_info
from . import datasets, engine, evaluation, models, planner, visualization  # noqa: E402,F401
# isort: on

__all__ = ['__version__', 'version_info']
