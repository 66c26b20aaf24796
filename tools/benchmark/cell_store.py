# Copyright (c) mmgem contributors. All rights reserved.
"""One JSON file per finished cell of a long benchmark, so runs resume.

A benchmark that takes hours saves every finished cell (one method, one
seed, ...) as ``<root>/<key>.json`` the moment it is done, written
atomically (temporary file, then rename), and on the next run skips the
cells already saved. Each cell carries the *fingerprint* of what produced
it (config, data, budget); a saved cell whose fingerprint differs from the
one asked for is an error naming the file, never silently mixed into a
table or overwritten. Standard library only.
"""
import hashlib
import json
import os
import os.path as osp
import re
from typing import Any, Dict, Optional

from mmgem.utils.fileio import atomic_write

_KEY = re.compile(r'^[A-Za-z0-9][A-Za-z0-9_.+-]*$')


def fingerprint(obj: Any) -> str:
    """A short stable hash of a JSON-serialisable object.

    Args:
        obj: Dicts, lists, strings, numbers, booleans, None (keys sorted).

    Returns:
        str: The first 16 hex digits of the SHA-256 of its canonical JSON.
    """
    text = json.dumps(obj, sort_keys=True, separators=(',', ':'), default=repr)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


class CellStore:
    """The saved cells of one benchmark, one JSON file each.

    Args:
        root (str): The folder of the cells (created on the first save).
    """

    def __init__(self, root: str) -> None:
        self.root = root

    def path(self, key: str) -> str:
        """str: The file of cell ``key`` (letters, digits, ``_.+-``)."""
        if not _KEY.match(key):
            raise ValueError(f'cell key {key!r} must be letters, digits and _.+- '
                             '(it names a file)')
        return osp.join(self.root, f'{key}.json')

    def load(self, key: str) -> Optional[Dict]:
        """The saved cell ``key``, or None if it was never saved.

        Raises:
            ValueError: The file exists but is no JSON object (named).
        """
        path = self.path(key)
        if not osp.isfile(path):
            return None
        try:
            with open(path, encoding='utf-8') as f:
                cell = json.load(f)
        except ValueError as e:
            raise ValueError(f'{path}: not a valid cell file ({e}); delete it to rerun the '
                             'cell') from None
        if not isinstance(cell, dict):
            raise ValueError(f'{path}: a cell file must hold a JSON object')
        return cell

    def done(self, key: str, expected: Optional[str] = None) -> bool:
        """Whether cell ``key`` is saved (and made by ``expected``).

        Args:
            key (str): The cell.
            expected (str, optional): The fingerprint the cell must carry.

        Returns:
            bool: True if saved with that fingerprint, False if not saved.

        Raises:
            ValueError: Saved with another fingerprint; the message names the
                file and both fingerprints.
        """
        cell = self.load(key)
        if cell is None:
            return False
        if expected is not None and cell.get('fingerprint') != expected:
            raise ValueError(
                f'{self.path(key)} was made by a different setup (fingerprint '
                f'{cell.get("fingerprint")}, this run: {expected}); use another results '
                'folder, or delete the file to rerun that cell')
        return True

    def save(self, key: str, cell: Dict) -> str:
        """Write cell ``key`` atomically.

        Args:
            key (str): The cell.
            cell (dict): JSON-serialisable content (``fingerprint`` inside).

        Returns:
            str: The path written.
        """
        text = json.dumps(cell, indent=1, sort_keys=True, allow_nan=True) + '\n'
        return atomic_write(self.path(key), text)

    def keys(self):
        """list[str]: The keys of the saved cells, sorted."""
        if not osp.isdir(self.root):
            return []
        return sorted(f[:-5] for f in os.listdir(self.root)
                      if f.endswith('.json') and _KEY.match(f[:-5]))

    def all(self) -> Dict[str, Dict]:
        """dict[str, dict]: Every saved cell by key."""
        return {k: self.load(k) for k in self.keys()}


__all__ = ['CellStore', 'fingerprint']
