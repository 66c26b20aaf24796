# Copyright (c) mmgem contributors. All rights reserved.
"""mini-UODB's scene generators (v1, v2) and its domain-identifiability check.

``tools/misc/make_mini_uodb.py`` writes the generated images in UODB's
layout; :mod:`.v1_scenes` and :mod:`.v2_scenes` draw them, and
:mod:`.identifiability` measures how far a domain can be told from its
pixels' global statistics.
"""
