# Copyright (c) mmgem contributors. All rights reserved.
"""Tests of mini-UODB v2 (``make_mini_uodb.py --version 2``): layout and
determinism, the UODB properties each domain stands for, and the
domain-identifiability bound."""
import io
import json
from pathlib import Path

import numpy as np
import pytest
from mmengine.config import Config
from PIL import Image

from mmgem.datasets import MINI_UODB_CLASSES
from mmgem.datasets.mini_uodb_v2_meta import (
    MINI_UODB_V2_CLASSES,
    MINI_UODB_V2_CONFLICT_PAIR,
    MINI_UODB_V2_DATASETS,
    MINI_UODB_V2_DISPLAY_NAMES,
    MINI_UODB_V2_LOOKS,
    MINI_UODB_V2_PRIOR,
    MINI_UODB_V2_SIZES,
    MINI_UODB_V2_SPLITS,
    MINI_UODB_V2_STANDS_FOR,
)
from tools.misc.mini_uodb.identifiability import (
    STAT_NAMES,
    domain_identifiability,
    global_statistics,
    leave_one_out_1nn,
)
from tools.misc.mini_uodb.v2_scenes import draw_image, draw_scene

SHARED = [d for d in MINI_UODB_V2_DATASETS
          if list(MINI_UODB_V2_LOOKS.values()).count(MINI_UODB_V2_LOOKS[d]) > 1]


@pytest.fixture(scope='module')
def gen():
    from tools.misc import make_mini_uodb

    return make_mini_uodb


@pytest.fixture(scope='module')
def v2_root(mini_uodb_v2_root):
    """The session's tiny v2 tree (seed 0, converted): ``tests/conftest.py``."""
    return mini_uodb_v2_root


def _files(root: Path):
    return {p.relative_to(root).as_posix(): p.read_bytes()
            for p in sorted(root.rglob('*')) if p.is_file()}


def test_layout_manifest_and_conversion(v2_root):
    manifest = json.loads((v2_root / 'mini_uodb.json').read_text())
    assert manifest['version'] == 2 and manifest['scale'] == 'tiny'
    assert list(manifest['domains']) == list(MINI_UODB_V2_DATASETS)
    for domain, entry in manifest['domains'].items():
        assert entry['look'] == MINI_UODB_V2_LOOKS[domain]
        assert entry['stands_for'] == MINI_UODB_V2_STANDS_FOR[domain]
        assert tuple(entry['classes']) == MINI_UODB_V2_CLASSES[domain]
        for split, count in zip(MINI_UODB_V2_SPLITS[domain], MINI_UODB_V2_SIZES['tiny'][domain]):
            stems = (v2_root / domain / 'ImageSets' / 'Main' / f'{split}.txt').read_text().split()
            assert stems == entry['splits'][split]['stems'] and len(stems) == count
            objects = entry['splits'][split]['objects']
            coco = json.loads((v2_root / domain / 'annotations' / f'{split}.json').read_text())
            assert [c['name'] for c in coco['categories']] == list(MINI_UODB_V2_CLASSES[domain])
            assert len(coco['annotations']) == sum(len(v) for v in objects.values())
            flagged = sum(o[2] for v in objects.values() for o in v)
            assert sum(a['iscrowd'] for a in coco['annotations']) == flagged  # difficult
            for image in coco['images'][:3]:
                with Image.open(v2_root / domain / 'JPEGImages' / image['file_name']) as im:
                    assert (im.width, im.height) == (image['width'], image['height'])


def test_same_seed_same_bytes_other_seed_differs(gen, tmp_path):
    for name, seed in (('a', 5), ('b', 5), ('c', 6)):
        gen.make_mini_uodb(str(tmp_path / name), seed=seed, scale='tiny', convert=False,
                           domains=['signs', 'crowd'], version=2)
    a, b, c = (_files(tmp_path / n) for n in 'abc')
    assert a == b
    assert a.keys() == c.keys()
    assert all(a[k] != c[k] for k in a if k.endswith('.jpg'))
    assert not [k for k in a if Path(k).name.startswith('.')]  # no temporary files


def test_bad_versions_and_domains_are_named(gen, tmp_path):
    with pytest.raises(ValueError, match='unknown mini-UODB version 3'):
        gen.make_mini_uodb(str(tmp_path), version=3)
    with pytest.raises(ValueError, match="unknown mini-UODB domain 'natural'.*version 2"):
        gen.make_mini_uodb(str(tmp_path), domains=['natural'], version=2)
    with pytest.raises(ValueError, match="unknown mini-UODB v2 domain 'lidar'"):
        draw_image('lidar', 0, 0, 0)


def test_sizes_imbalance_and_label_sets():
    small = {d: MINI_UODB_V2_SIZES['small'][d][0] for d in MINI_UODB_V2_DATASETS}
    assert len(MINI_UODB_V2_DATASETS) >= 8
    assert max(small.values()) / min(small.values()) >= 100
    largest = max(small, key=small.get)
    assert len(MINI_UODB_V2_CLASSES[largest]) >= 2 * max(map(len, MINI_UODB_CLASSES.values()))
    sets = {d: set(c) for d, c in MINI_UODB_V2_CLASSES.items()}
    # same labels, other looks (UODB's VOC / Clipart / Comic / Watercolor)
    assert sets['clipart'] == sets['photo_part'] < sets['photo_full']
    assert sets['comic'] == sets['watercolor'] < sets['photo_part']
    assert len({MINI_UODB_V2_LOOKS[d] for d in ('photo_part', 'clipart', 'comic',
                                               'watercolor')}) == 4
    # same look, disjoint labels (KITTI / LISA)
    a, b = MINI_UODB_V2_CONFLICT_PAIR
    assert MINI_UODB_V2_LOOKS[a] == MINI_UODB_V2_LOOKS[b] and not sets[a] & sets[b]
    assert sorted(n for g in MINI_UODB_V2_PRIOR for n in g) == sorted(MINI_UODB_V2_DATASETS)


def test_data_base_config_mirrors_meta(repo_root):
    cfg = Config.fromfile(str(repo_root / 'configs/_base_/datasets/mini_uodb_v2.py'))
    assert tuple(cfg.mini_uodb_v2_dataset_names) == MINI_UODB_V2_DATASETS
    assert {k: tuple(v) for k, v in cfg.mini_uodb_v2_classes.items()} == MINI_UODB_V2_CLASSES
    assert {k: tuple(v) for k, v in cfg.mini_uodb_v2_splits.items()} == MINI_UODB_V2_SPLITS
    assert dict(cfg.mini_uodb_v2_display_names) == MINI_UODB_V2_DISPLAY_NAMES
    sizes = [len(MINI_UODB_V2_CLASSES[n]) for n in MINI_UODB_V2_DATASETS]
    assert cfg.mini_uodb_v2_label_offsets == np.concatenate([[0], np.cumsum(sizes)]).tolist()
    for loader, split in (('train', 0), ('test', 1)):
        dataset = cfg[f'mini_uodb_v2_{loader}_dataloader'].dataset
        assert [d.ann_file for d in dataset.datasets] == [
            f'{n}/annotations/{MINI_UODB_V2_SPLITS[n][split]}.json'
            for n in MINI_UODB_V2_DATASETS]


def _scene_objects(domain, n, split=0):
    return [draw_scene(domain, 0, split, i)[1].objects() for i in range(n)]


@pytest.mark.parametrize('domain,other', [('street', 'signs'), ('signs', 'street'),
                                          ('photo_part', 'photo_full')])
def test_other_domains_objects_are_present_and_unlabelled(domain, other):
    """KITTI / LISA: each domain's images hold visible objects of the
    other's classes that are not in its labels (VOC holds COCO-only ones)."""
    own = set(MINI_UODB_V2_CLASSES[domain])
    foreign = set(MINI_UODB_V2_CLASSES[other]) - own
    images_with_foreign = 0
    for i in range(20):
        _, scene = draw_scene(domain, 0, 0, i)
        _, labels = draw_image(domain, 0, 0, i)
        assert {name for name, _, _ in labels} <= own
        visible = [o for o in scene.objects() if o['name'] in foreign and o['visible'] > 0]
        images_with_foreign += bool(visible)
        assert len(labels) == sum(1 for o in scene.objects() if o['name'] in own
                                  and o['box'] and o['box'][2] - o['box'][0] >= 2
                                  and o['box'][3] - o['box'][1] >= 2)
    assert images_with_foreign >= 10


def test_overlap_occlusion_clutter_and_crowds():
    def iou(a, b):
        iw, ih = min(a[2], b[2]) - max(a[0], b[0]), min(a[3], b[3]) - max(a[1], b[1])
        if iw <= 0 or ih <= 0:
            return 0.0
        inter = iw * ih
        return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)

    photos = _scene_objects('photo_full', 30)
    overlapping = sum(any(iou(a['box'], b['box']) > 0.05 for j, a in enumerate(objs)
                          for b in objs[j + 1:] if a['box'] and b['box']) for objs in photos)
    occluded = [o['visible'] < o['drawn'] for objs in photos for o in objs]
    assert overlapping >= 10  # of 30 images
    assert 0.1 <= np.mean(occluded) < 0.9
    faces = [sum(o['name'] == 'face' for o in objs) for objs in _scene_objects('crowd', 10)]
    assert np.mean(faces) >= 8
    aerial = [len(objs) for objs in _scene_objects('aerial', 10)]
    assert np.mean(aerial) >= 5


def test_image_sizes_and_aspect_ratios_vary():
    sizes = [draw_image(d, 0, 0, i)[0].size for d in MINI_UODB_V2_DATASETS for i in range(4)]
    aspects = [w / h for w, h in sizes]
    assert min(aspects) < 0.8 and max(aspects) > 2.0
    assert len({max(s) for s in sizes}) >= 15


def _crop(img, box):
    crop = img.convert('RGB').crop(box).resize((8, 8), Image.BILINEAR)
    return np.concatenate([np.asarray(crop, np.float32).ravel() / 255,
                           [np.log((box[2] - box[0]) / (box[3] - box[1]))]])


@pytest.mark.parametrize('domain', ['photo_full', 'signs', 'aerial', 'kitchen', 'comic'])
def test_classes_are_learnable_from_pixels(domain):
    """Nearest-centroid on 8x8 crops names the test boxes' classes far above
    chance (measured 0.80 to 1.00): objects are drawn from their class."""
    feats = []
    for split, n in ((0, 50), (1, 25)):
        xs, ys = [], []
        for i in range(n):
            img, objects = draw_image(domain, 0, split, i)
            for name, box, difficult in objects:
                if not difficult:
                    xs.append(_crop(img, box))
                    ys.append(MINI_UODB_V2_CLASSES[domain].index(name))
        feats.append((np.array(xs), np.array(ys)))
    (xtr, ytr), (xte, yte) = feats
    classes = np.unique(ytr)
    centroids = np.stack([xtr[ytr == c].mean(0) for c in classes])
    pred = classes[np.argmin(((xte[:, None] - centroids[None])**2).sum(-1), axis=1)]
    chance = np.bincount(yte).max() / len(yte)
    assert (pred == yte).mean() >= max(0.7, chance + 0.2)


def _statistics(domain, n, transform=None):
    rows = []
    for i in range(n):
        img, _ = draw_image(domain, 0, 0, i)
        if transform is not None:
            img = transform(img)
        buf = io.BytesIO()
        img.save(buf, format='JPEG', quality=92)  # what the generator writes
        with Image.open(buf) as decoded:
            rows.append(global_statistics(decoded))
    return np.stack(rows)


@pytest.fixture(scope='module')
def statistics():
    return {d: _statistics(d, 100 if d in SHARED else 20) for d in MINI_UODB_V2_DATASETS}


def test_shared_looks_are_not_identifiable_from_global_statistics(statistics):
    """The generator's bound: leave-one-out 1-NN on the global statistics
    names the domain of fewer than 60 % of the images of the domains that
    share a look (chance is 50 %); the other looks stay identifiable."""
    assert SHARED == ['photo_full', 'photo_part', 'street', 'signs']
    result = domain_identifiability(statistics, SHARED)
    assert result['shared_look'] < 0.6
    others = [result['per_domain'][d] for d in MINI_UODB_V2_DATASETS if d not in SHARED]
    assert np.mean(others) > 0.9
    assert result['stats'] == list(STAT_NAMES) and len(STAT_NAMES) >= 11


def test_identifiability_check_sees_a_small_look_difference(statistics):
    """The check can fail: making the signs images 12 % darker is enough for
    1-NN to tell them from street images."""
    darker = dict(statistics)
    darker["signs"] = _statistics("signs", 100, lambda im: im.point(lambda v: int(v * 0.88)))
    result = domain_identifiability(darker, SHARED)
    assert result['per_domain']['signs'] > 0.8
    assert result['shared_look'] > 0.6


def test_leave_one_out_1nn_against_brute_force():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(40, 5)) * [1, 10, 100, 1, 1]
    y = rng.integers(0, 3, 40)
    z = (x - x.mean(0)) / x.std(0)
    want = []
    for i in range(40):
        d = [np.linalg.norm(z[i] - z[j]) if j != i else np.inf for j in range(40)]
        want.append(y[int(np.argmin(d))] == y[i])
    assert leave_one_out_1nn(x, y).tolist() == want
    with pytest.raises(ValueError, match='need'):
        leave_one_out_1nn(x[:1], y[:1])


def test_cli_prints_the_check(gen, tmp_path, capsys):
    assert gen.main(['--version', '2', '--out', str(tmp_path / 'v2'), '--scale', 'tiny',
                     '--domains', 'street', 'signs', 'medical', '--no-convert']) == 0
    out = capsys.readouterr().out
    assert '| street | car, pedestrian, cyclist |' in out
    assert '1-NN domain accuracy on 14 global statistics (leave-one-out)' in out
    assert 'over the domains that share a look (street, signs)' in out
    assert 'bound < 60%' in out


def test_identifiability_tool_reads_the_looks_from_the_manifest(v2_root, capsys):
    from tools.analysis_tools import domain_identifiability as tool
    assert tool.main([str(v2_root), '--max-images', '6', '--bound', '0.6']) == 0
    out = capsys.readouterr().out
    assert '| photo_part (shares a look) | 6 |' in out and '| aerial | 6 |' in out
    assert 'share a look (photo_full, photo_part, street, signs)' in out
    with pytest.raises(FileNotFoundError, match="no 'val' split of domain 'crowd'"):
        tool.main([str(v2_root), '--split', 'val', '--domains', 'crowd'])
