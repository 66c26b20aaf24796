# Copyright (c) mmgem contributors. All rights reserved.
def patch_mmengine_checkpoint_loading() -> None:
    """Placeholder, filled in by the foundation work."""
