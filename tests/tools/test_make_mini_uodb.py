# Copyright (c) mmgem contributors. All rights reserved.
"""Tests of tools/misc/make_mini_uodb.py: layout, determinism and the
difficulties mini-UODB is meant to mirror."""
import hashlib
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import PIL
import pytest
from PIL import Image

from mmgem.datasets import MINI_UODB_CLASSES, MINI_UODB_DATASETS, MINI_UODB_SIZES, MINI_UODB_SPLITS


@pytest.fixture(scope='module')
def gen():
    from tools.misc import make_mini_uodb

    return make_mini_uodb


@pytest.fixture(scope='module')
def manifest(mini_uodb_root):
    return json.loads((mini_uodb_root / 'mini_uodb.json').read_text())


def _files(root: Path):
    return {p.relative_to(root).as_posix(): p.read_bytes()
            for p in sorted(root.rglob('*')) if p.is_file()}


def test_layout_is_uodb_voc_style(mini_uodb_root, manifest):
    assert manifest['scale'] == 'tiny'
    for domain in MINI_UODB_DATASETS:
        ddir = mini_uodb_root / domain
        for split, count in zip(MINI_UODB_SPLITS[domain],
                                MINI_UODB_SIZES['tiny'][domain]):
            stems = (ddir / 'ImageSets' / 'Main' /
                     f'{split}.txt').read_text().split()
            assert len(stems) == count
            assert stems == manifest['domains'][domain]['splits'][split][
                'stems']
            for stem in stems[:2]:
                assert (ddir / 'Annotations' / f'{stem}.xml').is_file()
                assert (ddir / 'JPEGImages' / f'{stem}.jpg').is_file()
        train, test = (set(manifest['domains'][domain]['splits'][s]['stems'])
                       for s in MINI_UODB_SPLITS[domain])
        assert not train & test


def test_same_seed_same_bytes_other_seed_differs(gen, tmp_path):
    for name, seed in (('a', 3), ('b', 3), ('c', 4)):
        gen.make_mini_uodb(str(tmp_path / name), seed=seed, scale='tiny',
                           domains=['medical', 'icons'])
    a, b, c = (_files(tmp_path / n) for n in 'abc')
    assert a == b
    assert a.keys() == c.keys()
    jpgs = [k for k in a if k.endswith('.jpg')]
    assert all(a[k] != c[k] for k in jpgs)
    assert not [k for k in a if Path(k).name.startswith('.')]  # no temp files


def test_scales_mirror_uodb_imbalance_and_label_overlap():
    small = {d: MINI_UODB_SIZES['small'][d][0] for d in MINI_UODB_DATASETS}
    assert max(small.values()) / min(small.values()) >= 50
    assert 2000 <= sum(sum(v) for v in MINI_UODB_SIZES['small'].values()) \
        <= 6000
    assert all(n >= 12 for n, _ in MINI_UODB_SIZES['tiny'].values())
    assert len(MINI_UODB_DATASETS) >= 5
    sets = {d: set(c) for d, c in MINI_UODB_CLASSES.items()}
    assert sets['natural'] & sets['clipart']  # overlap across looks
    assert sets['aerial'] & sets['natural']
    assert not sets['clipart'] & sets['icons']  # diverge within a look


def _background_stats(img: np.ndarray, boxes) -> float:
    """Std of the pixels outside every object box."""
    mask = np.ones(img.shape[:2], bool)
    for _, (x0, y0, x1, y1) in boxes:
        mask[y0:y1, x0:x1] = False
    return float(img[mask].std(axis=0).mean())


def test_domains_have_distinct_looks(mini_uodb_root, manifest):
    """Flat clip-art (clipart, icons) has a nearly flat background, the
    natural-like and aerial scenes are textured, medical is grey-scale, and
    aerial has many more and smaller objects than natural."""
    def stats(domain):
        objs = manifest['domains'][domain]['splits']['train']['objects']
        mode, texture, counts, sizes = set(), [], [], []
        for stem, boxes in list(objs.items())[:10]:
            with Image.open(mini_uodb_root / domain / 'JPEGImages' /
                            f'{stem}.jpg') as im:
                mode.add(im.mode)
                texture.append(_background_stats(
                    np.asarray(im.convert('RGB'), np.float32), boxes))
            counts.append(len(boxes))
            sizes += [np.sqrt((b[2] - b[0]) * (b[3] - b[1]))
                      for _, b in boxes]
        return mode, np.median(texture), np.mean(counts), np.median(sizes)

    s = {d: stats(d) for d in MINI_UODB_DATASETS}
    assert s['medical'][0] == {'L'}
    assert all(s[d][0] == {'RGB'} for d in MINI_UODB_DATASETS
               if d != 'medical')
    # flat look: only decorative pastel discs, far less texture
    for flat in ('clipart', 'icons'):
        for textured in ('natural', 'aerial', 'signs'):
            assert s[flat][1] < s[textured][1]
    assert s['aerial'][2] > 2 * s['natural'][2]
    assert s['aerial'][3] < s['natural'][3] / 2


def _crop_features(img: Image.Image, box) -> np.ndarray:
    crop = img.convert('RGB').crop(box).resize((8, 8), Image.BILINEAR)
    arr = np.asarray(crop, np.float32) / 255
    aspect = np.log((box[2] - box[0]) / (box[3] - box[1]))
    return np.concatenate([arr.ravel(), [aspect]])


@pytest.mark.parametrize('domain', ['natural', 'aerial', 'signs', 'icons',
                                    'clipart'])
def test_classes_are_learnable_from_pixels(mini_uodb_root, manifest, domain):
    """A nearest-centroid classifier on 8x8 crops of the train boxes names
    the classes of the test boxes far above chance: objects are drawn from
    their class, not at random."""
    feats = {}
    for split in MINI_UODB_SPLITS[domain]:
        objs = manifest['domains'][domain]['splits'][split]['objects']
        xs, ys = [], []
        for stem, boxes in objs.items():
            with Image.open(mini_uodb_root / domain / 'JPEGImages' /
                            f'{stem}.jpg') as im:
                for name, box in boxes:
                    xs.append(_crop_features(im, box))
                    ys.append(MINI_UODB_CLASSES[domain].index(name))
        feats[split] = np.array(xs), np.array(ys)
    (xtr, ytr), (xte, yte) = (feats[s] for s in MINI_UODB_SPLITS[domain])
    classes = np.unique(ytr)
    centroids = np.stack([xtr[ytr == c].mean(0) for c in classes])
    pred = classes[np.argmin(
        ((xte[:, None] - centroids[None])**2).sum(-1), axis=1)]
    chance = np.bincount(yte).max() / len(yte)
    assert (pred == yte).mean() >= max(0.7, chance + 0.2)


def test_cli_generates_and_converts(gen, repo_root, tmp_path):
    out = tmp_path / 'mini'
    proc = subprocess.run(
        [sys.executable, str(repo_root / 'tools/misc/make_mini_uodb.py'),
         '--out', str(out), '--seed', '1', '--scale', 'tiny',
         '--domains', 'medical'],
        capture_output=True, text=True, check=True, cwd=str(tmp_path))
    assert '| medical | lesion |' in proc.stdout
    coco = json.loads(
        (out / 'medical' / 'annotations' / 'test.json').read_text())
    assert len(coco['images']) == MINI_UODB_SIZES['tiny']['medical'][1]
    with pytest.raises(ValueError, match="unknown scale 'huge'"):
        gen.make_mini_uodb(str(out), scale='huge')
    with pytest.raises(ValueError, match="unknown mini-UODB domain 'lidar'"):
        gen.make_mini_uodb(str(out), domains=['lidar'])


# Captured from main (b7138be) before --version 2 was added: tiny, seed 0,
# VOC layout and manifest (the converter's JSON is the converter's output).
V1_TEXT_SHA256 = '8541b395078815132dba2c5168f6801d0e6f59c768788b8f6051b002a134968c'
V1_PIXELS_SHA256 = '8f343ce7f03efadba97708d571164699369c412359640e69118f32d9bf9d6e32'
V1_FILES_SHA256 = '9c1de71e468f171e9f8c963bb8c71435b34daa970bc5e02f17f1f180cdc9d732'
V1_FILES_PILLOW = '13.0.0'  # JPEG bytes depend on Pillow's libjpeg


def _tree_sha256(root: Path, with_jpeg: bool) -> str:
    h = hashlib.sha256()
    for p in sorted(root.rglob('*')):
        rel = p.relative_to(root)
        if not p.is_file() or 'annotations' in rel.parts:
            continue
        if p.suffix == '.jpg' and not with_jpeg:
            continue
        h.update(rel.as_posix().encode() + b'\0')
        h.update(hashlib.sha256(p.read_bytes()).digest())
    return h.hexdigest()


def test_version_1_is_bit_for_bit_what_it_was(gen, mini_uodb_root):
    """v1 stays reproducible: XML, split files and manifest, the drawn
    pixels and boxes, and (with the Pillow that made them) the JPEG bytes
    equal what main wrote before v2 existed."""
    assert _tree_sha256(mini_uodb_root, with_jpeg=False) == V1_TEXT_SHA256
    h = hashlib.sha256()
    for domain in MINI_UODB_DATASETS:
        for split_index, count in enumerate(MINI_UODB_SIZES['tiny'][domain]):
            for i in range(count):
                img, objects = gen.draw_image(domain, 0, split_index, i)
                h.update(np.asarray(img).tobytes())
                h.update(repr(objects).encode())
    assert h.hexdigest() == V1_PIXELS_SHA256
    if PIL.__version__ == V1_FILES_PILLOW:
        assert _tree_sha256(mini_uodb_root, with_jpeg=True) == V1_FILES_SHA256
