# Copyright (c) mmgem contributors. All rights reserved.
"""Miscellaneous tools: the mini-UODB generator."""
