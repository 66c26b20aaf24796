# Copyright (c) mmgem contributors. All rights reserved.
"""mmgem's own registries.

``ROUTERS`` holds the routers of :class:`~mmgem.models.MoEFFN`: a config
names one with ``router=dict(type='GEMRouter', ...)``. It has no parent, so
a router registered anywhere (a test file, a project's own module) is found
by its name whatever mmengine's default scope is; ``locations`` imports
mmgem's routers on the first look-up.
"""
from mmengine.registry import Registry

ROUTERS = Registry('router', scope='mmgem', locations=['mmgem.models.routers'])
