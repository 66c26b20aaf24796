# Copyright (c) mmgem contributors. All rights reserved.
"""CellStore: one atomic JSON file per finished benchmark cell."""
import json
import os

import pytest

from tools.benchmark.cell_store import CellStore, fingerprint


def test_save_load_done_and_keys(tmp_path):
    store = CellStore(str(tmp_path / 'cells'))
    assert store.keys() == [] and store.load('gem_s0') is None and not store.done('gem_s0')
    cell = dict(fingerprint=fingerprint(dict(a=1, b=[2, 3])), metrics={'uodb/bbox_mAP': 0.25})
    path = store.save('gem_s0', cell)
    assert path == str(tmp_path / 'cells' / 'gem_s0.json')
    assert store.load('gem_s0') == cell == json.loads(open(path).read())
    assert store.done('gem_s0', cell['fingerprint'])
    store.save('dino_s0', dict(fingerprint='x'))
    assert store.keys() == ['dino_s0', 'gem_s0'] and set(store.all()) == {'dino_s0', 'gem_s0'}
    assert not [f for f in os.listdir(tmp_path / 'cells') if f.startswith('.')]


def test_fingerprint_is_stable_and_order_free():
    assert fingerprint(dict(a=1, b=2)) == fingerprint(dict(b=2, a=1))
    assert fingerprint(dict(a=1)) != fingerprint(dict(a=2))
    assert len(fingerprint([1, 'x', None])) == 16


def test_bad_cells_are_named(tmp_path):
    store = CellStore(str(tmp_path))
    store.save('gem_s0', dict(fingerprint='aaaa'))
    with pytest.raises(ValueError, match=r'gem_s0\.json was made by a different setup '
                       r'\(fingerprint aaaa, this run: bbbb\)'):
        store.done('gem_s0', 'bbbb')
    (tmp_path / 'broken.json').write_text('{"fingerprint": ')
    with pytest.raises(ValueError, match=r'broken\.json: not a valid cell file'):
        store.load('broken')
    (tmp_path / 'list.json').write_text('[1, 2]')
    with pytest.raises(ValueError, match='must hold a JSON object'):
        store.load('list')
    with pytest.raises(ValueError, match="cell key '../x' must be"):
        store.path('../x')
