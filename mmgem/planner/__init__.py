# Copyright (c) mmgem contributors. All rights reserved.
"""GEM's global planner: pure numpy + cvxpy, no torch."""
from .hashing import image_bucket, route_bucket

__all__ = ['image_bucket', 'route_bucket']
