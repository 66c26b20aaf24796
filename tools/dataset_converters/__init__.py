# Copyright (c) mmgem contributors. All rights reserved.
"""Dataset converters (native UODB layout to COCO JSON)."""
