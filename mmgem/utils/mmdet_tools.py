# Copyright (c) mmgem contributors. All rights reserved.
"""Run one of mmdet's packaged command-line tools in this process."""
import os.path as osp
import runpy

import mmdet


def mmdet_tool_path(name: str) -> str:
    """Return the path of a tool shipped in mmdet's ``.mim/tools`` folder.

    Args:
        name (str): Path of the tool relative to mmdet's tools folder, e.g.
            ``'train.py'``.

    Returns:
        str: The absolute path of the script.
    """
    path = osp.join(osp.dirname(mmdet.__file__), '.mim', 'tools', name)
    if not osp.isfile(path):
        raise FileNotFoundError(
            f'mmdet tool {name!r} not found at {path}: mmdet {mmdet.__version__} '
            'must be pip-installed from its wheel (which ships mmdet/.mim/tools).')
    return path


def run_mmdet_tool(name: str) -> None:
    """Run an mmdet tool as ``__main__`` with the current ``sys.argv``.

    Args:
        name (str): Path of the tool relative to mmdet's tools folder.
    """
    runpy.run_path(mmdet_tool_path(name), run_name='__main__')
