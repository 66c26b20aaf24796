# Copyright (c) mmgem contributors. All rights reserved.
"""Let a script of mmgem's ``tools/`` package run by its path.

``tools/`` is a package: its modules import each other as ``tools.<dir>.<name>``
and run as ``python -m tools.<dir>.<name>`` from the repository root. Run by
path instead (``python tools/misc/make_mini_uodb.py``, ``mim run mmgem ...``,
which runs ``mmgem/.mim/tools/...``), Python puts only the script's own folder
on ``sys.path``; such a script calls :func:`import_tools_beside` first::

    if not __package__:  # run by path: make the `tools` package importable
        from mmgem.utils.tool_scripts import import_tools_beside
        import_tools_beside(__file__)

Importing this module changes nothing; only the call does.
"""
import sys
from pathlib import Path


def tools_root(script: str) -> Path:
    """The folder holding the package that ``script`` belongs to.

    Walks up from the script's folder (symlinks resolved, so an editable
    install's ``mmgem/.mim/tools`` link leads back to the checkout) while the
    folder is a package (has ``__init__.py``).

    Args:
        script (str): The script's ``__file__``.

    Returns:
        Path: The first folder above the script that is no package: the
        repository root for ``tools/x/y.py``.
    """
    folder = Path(script).resolve().parent
    while (folder / '__init__.py').is_file():
        folder = folder.parent
    return folder


def import_tools_beside(script: str) -> None:
    """Put :func:`tools_root` of ``script`` first on ``sys.path`` (once).

    Args:
        script (str): The script's ``__file__``.
    """
    root = str(tools_root(script))
    if root not in sys.path:
        sys.path.insert(0, root)


__all__ = ['tools_root', 'import_tools_beside']
