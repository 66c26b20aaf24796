# Copyright (c) mmgem contributors. All rights reserved.
"""Model tests build mmdet modules by name: make 'mmdet' the default scope."""
from mmdet.utils import register_all_modules

register_all_modules(init_default_scope=True)
