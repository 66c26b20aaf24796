# Copyright (c) mmgem contributors. All rights reserved.
"""Timing and mini-UODB benchmarks, their cell store and seed statistics."""
