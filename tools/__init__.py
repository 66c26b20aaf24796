# Copyright (c) mmgem contributors. All rights reserved.
"""mmgem's command-line tools, a package: ``python -m tools.<dir>.<name>``.

Scripts also run by path (``python tools/<dir>/<name>.py``, ``mim run``)
through :func:`mmgem.utils.tool_scripts.import_tools_beside`.
"""
