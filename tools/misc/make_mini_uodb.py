# Copyright (c) mmgem contributors. All rights reserved.
"""Generate mini-UODB: small synthetic detection domains in UODB's layout.

mini-UODB stands in for UODB in tests, the demo and the benchmarks. It is
written in the same VOC-style layout as real UODB, so the converter
(``tools/dataset_converters/uodb2coco.py``) runs on it end to end::

    OUT/<domain>/Annotations/<stem>.xml
    OUT/<domain>/JPEGImages/<stem>.jpg
    OUT/<domain>/ImageSets/Main/{train,test}.txt
    OUT/<domain>/annotations/{train,test}.json     (after conversion)
    OUT/mini_uodb.json                             (what was generated)

The domains (names, classes, splits and sizes per scale) are defined in
``mmgem/datasets/mini_uodb_meta.py`` and mirror UODB's difficulties:
imbalanced sizes (50 : 1 between ``natural`` and ``medical`` at ``small``
scale), distinct looks (textured natural scenes, flat clip-art, grey-scale
medical slices, aerial views with many small objects, street scenes with
small signs), label sets that overlap across looks (``natural`` and
``clipart``; ``car`` in ``aerial``) and diverge within a look (``clipart``
and ``icons`` share the clip-art look but no label). Every class has its own
shape and colour scheme, so it can be learnt from pixels.

Usage::

    python tools/misc/make_mini_uodb.py --out data/mini_uodb --seed 0 \\
        --scale tiny

or in Python (tests, the demo)::

    make_mini_uodb = load_tool('tools/misc/make_mini_uodb.py')
    manifest = make_mini_uodb.make_mini_uodb(out, seed=0, scale='tiny')

Generation is deterministic: every image is drawn from its own random
generator seeded by ``(seed, domain, split, index)``, so the same seed gives
byte-identical files. Box convention: the XML holds ``xmin = x0 + 1``,
``xmax = x1 + 1`` for a drawn object covering ``[x0, x1)``, so mmdet's VOC
convention (subtract 1) gives back exactly the drawn box.
"""
import argparse
import io
import json
import math
import os
import os.path as osp
import shutil
import sys
import time
import xml.etree.ElementTree as ET
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

try:
    import mmgem  # noqa: F401
except ImportError:  # pragma: no cover - run from a checkout, not installed
    sys.path.insert(0, osp.abspath(osp.join(osp.dirname(__file__), '..', '..')))
from mmgem.datasets.domain_identifiability import (  # noqa: E402
    domain_identifiability,
    format_identifiability,
    read_statistics,
)
from mmgem.datasets.mini_uodb_meta import (  # noqa: E402
    MINI_UODB_CLASSES,
    MINI_UODB_DATASETS,
    MINI_UODB_SIZES,
    MINI_UODB_SPLITS,
)
from mmgem.datasets.mini_uodb_v2_meta import (  # noqa: E402
    MINI_UODB_V2_CLASSES,
    MINI_UODB_V2_DATASETS,
    MINI_UODB_V2_LOOKS,
    MINI_UODB_V2_SIZES,
    MINI_UODB_V2_SPLITS,
    MINI_UODB_V2_STANDS_FOR,
)
from mmgem.datasets.mini_uodb_v2_scenes import draw_image as draw_image_v2  # noqa: E402
from mmgem.utils import atomic_write  # noqa: E402

Box = Tuple[int, int, int, int]  # x0, y0, x1, y1 with x1, y1 exclusive
Color = Tuple[int, int, int]

MANIFEST = 'mini_uodb.json'

# Per-domain drawing parameters: image width and height ranges, objects per
# image, object size range (square root of the box area, pixels), the
# width / height aspect of each class, and the classes drawn upright or
# lying (aspect inverted with probability 1/2).
DOMAIN_STYLES: Dict[str, dict] = {
    'natural': dict(
        width=(160, 192), height=(128, 160), objects=(1, 4),
        size=(28, 64),
        aspect=dict(person=0.45, car=1.9, dog=1.4, bird=1.2)),
    'aerial': dict(
        width=(160, 192), height=(160, 192), objects=(5, 14),
        size=(8, 22),
        aspect=dict(plane=1.0, ship=3.0, car=2.0),
        rotatable=('ship', 'car')),
    'signs': dict(
        width=(176, 192), height=(128, 144), objects=(1, 3),
        size=(14, 30),
        aspect=dict(stop=1.0, warning=1.0, speedlimit=0.8)),
    'icons': dict(
        width=(128, 160), height=(128, 160), objects=(1, 4),
        size=(26, 56),
        aspect=dict(star=1.0, heart=1.1, arrow=2.0),
        rotatable=('arrow', )),
    'clipart': dict(
        width=(128, 160), height=(128, 160), objects=(1, 4),
        size=(28, 60),
        aspect=dict(person=0.45, car=1.9, dog=1.4, bird=1.2)),
    'medical': dict(
        width=(128, 128), height=(128, 128), objects=(1, 3),
        size=(8, 20),
        aspect=dict(lesion=1.0)),
}

# Flat clip-art palette shared by ``clipart`` and ``icons``.
CLIPART_PALETTE: Tuple[Color, ...] = (
    (230, 57, 70), (29, 53, 87), (69, 123, 157), (42, 157, 143),
    (233, 196, 106), (244, 162, 97), (231, 111, 81), (131, 56, 236),
    (58, 134, 255), (255, 190, 11), (251, 86, 7), (6, 214, 160))
PASTELS: Tuple[Color, ...] = (
    (253, 240, 213), (237, 246, 249), (241, 250, 238), (255, 229, 236),
    (232, 232, 255), (245, 245, 220))


def _jitter(rng: np.random.Generator, color: Sequence[int],
            amount: int) -> Color:
    c = np.asarray(color) + rng.integers(-amount, amount + 1, size=3)
    return tuple(int(v) for v in np.clip(c, 0, 255))


def _smooth_noise(rng: np.random.Generator, w: int, h: int, cells: int,
                  channels: int = 3) -> np.ndarray:
    """Low-frequency noise in [-1, 1] of shape (h, w, channels)."""
    small = rng.uniform(-1, 1, size=(cells, cells, channels))
    img = Image.fromarray(((small + 1) * 127.5).astype(np.uint8).squeeze())
    img = img.resize((w, h), Image.BICUBIC)
    out = np.asarray(img, dtype=np.float32) / 127.5 - 1
    return out.reshape(h, w, channels)


def _place_boxes(rng: np.random.Generator, w: int, h: int, style: dict,
                 classes: Sequence[str]) -> List[Tuple[str, Box]]:
    """Pick classes and non-overlapping boxes for one image."""
    n = int(rng.integers(style['objects'][0], style['objects'][1] + 1))
    placed: List[Tuple[str, Box]] = []
    for _ in range(n):
        name = classes[int(rng.integers(len(classes)))]
        aspect = style['aspect'][name] * rng.uniform(0.85, 1.15)
        if name in style.get('rotatable', ()) and rng.random() < 0.5:
            aspect = 1 / aspect  # vertical orientation
        for _ in range(30):
            s = rng.uniform(*style['size'])
            bw = max(4, int(round(s * math.sqrt(aspect))))
            bh = max(4, int(round(s / math.sqrt(aspect))))
            if bw >= w - 2 or bh >= h - 2:
                continue
            x0 = int(rng.integers(1, w - bw))
            y0 = int(rng.integers(1, h - bh))
            box = (x0, y0, x0 + bw, y0 + bh)
            if all(_iou(box, other) < 0.02 for _, other in placed):
                placed.append((name, box))
                break
    return placed


def _iou(a: Box, b: Box) -> float:
    iw = min(a[2], b[2]) - max(a[0], b[0])
    ih = min(a[3], b[3]) - max(a[1], b[1])
    if iw <= 0 or ih <= 0:
        return 0.0
    inter = iw * ih
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1])
    return inter / (union - inter)


def _rel(box: Box) -> Callable[[float, float], Tuple[float, float]]:
    """Map relative (u, v) in [0, 1] to pixel coordinates inside ``box``.

    ``(1, 1)`` maps to the last pixel, so shapes stay inside ``[x0, x1)``.
    """
    x0, y0, x1, y1 = box
    return lambda u, v: (x0 + u * (x1 - x0 - 1), y0 + v * (y1 - y0 - 1))


def _ellipse(draw, p, u0, v0, u1, v1, **kw):
    draw.ellipse([p(u0, v0), p(u1, v1)], **kw)


def _rect(draw, p, u0, v0, u1, v1, **kw):
    draw.rectangle([p(u0, v0), p(u1, v1)], **kw)


def _poly(draw, p, pts, **kw):
    draw.polygon([p(u, v) for u, v in pts], **kw)


# --- objects seen from the side: natural and clipart ------------------------

def _draw_person(draw, box, rng, flat):
    p = _rel(box)
    ol = dict(outline=(0, 0, 0), width=1) if flat else {}
    skin = _jitter(rng, (224, 172, 125), 20)
    shirt = CLIPART_PALETTE[int(rng.integers(len(CLIPART_PALETTE)))] \
        if flat else _jitter(rng, (170, 40, 40), 50)
    legs = _jitter(rng, (40, 50, 110), 20)
    _rect(draw, p, 0.22, 0.58, 0.46, 1.0, fill=legs, **ol)
    _rect(draw, p, 0.54, 0.58, 0.78, 1.0, fill=legs, **ol)
    _ellipse(draw, p, 0.0, 0.2, 1.0, 0.66, fill=shirt, **ol)
    _ellipse(draw, p, 0.25, 0.0, 0.75, 0.24, fill=skin, **ol)


def _draw_car(draw, box, rng, flat):
    p = _rel(box)
    ol = dict(outline=(0, 0, 0), width=1) if flat else {}
    body = CLIPART_PALETTE[int(rng.integers(len(CLIPART_PALETTE)))] \
        if flat else _jitter(rng, (30, 80, 200), 60)
    _poly(draw, p, [(0.22, 0.45), (0.32, 0.0), (0.7, 0.0), (0.82, 0.45)],
          fill=body, **ol)
    _poly(draw, p, [(0.3, 0.42), (0.37, 0.1), (0.65, 0.1), (0.74, 0.42)],
          fill=(170, 210, 235))
    _rect(draw, p, 0.0, 0.4, 1.0, 0.82, fill=body, **ol)
    _ellipse(draw, p, 0.12, 0.64, 0.36, 1.0, fill=(25, 25, 25), **ol)
    _ellipse(draw, p, 0.64, 0.64, 0.88, 1.0, fill=(25, 25, 25), **ol)


def _draw_dog(draw, box, rng, flat):
    p = _rel(box)
    ol = dict(outline=(0, 0, 0), width=1) if flat else {}
    fur = _jitter(rng, (150, 95, 45), 30) if not flat else \
        _jitter(rng, (200, 140, 60), 20)
    dark = tuple(int(c * 0.6) for c in fur)
    for u in (0.2, 0.34, 0.58, 0.72):
        _rect(draw, p, u, 0.55, u + 0.08, 1.0, fill=dark, **ol)
    draw.line([p(0.18, 0.4), p(0.0, 0.12)], fill=dark, width=2)
    _ellipse(draw, p, 0.12, 0.3, 0.86, 0.72, fill=fur, **ol)
    _ellipse(draw, p, 0.66, 0.0, 1.0, 0.46, fill=fur, **ol)
    _ellipse(draw, p, 0.68, 0.0, 0.78, 0.22, fill=dark)


def _draw_bird(draw, box, rng, flat):
    p = _rel(box)
    ol = dict(outline=(0, 0, 0), width=1) if flat else {}
    body = CLIPART_PALETTE[int(rng.integers(len(CLIPART_PALETTE)))] \
        if flat else _jitter(rng, (90, 110, 140), 40)
    _poly(draw, p, [(0.0, 0.55), (0.2, 0.5), (0.2, 0.75)], fill=body, **ol)
    _ellipse(draw, p, 0.12, 0.35, 0.78, 1.0, fill=body, **ol)
    _ellipse(draw, p, 0.56, 0.12, 0.9, 0.55, fill=body, **ol)
    _poly(draw, p, [(0.88, 0.25), (1.0, 0.34), (0.88, 0.42)],
          fill=(250, 170, 20))
    _poly(draw, p, [(0.3, 0.0), (0.55, 0.55), (0.25, 0.6)],
          fill=tuple(int(c * 0.7) for c in body), **ol)


# --- icons (clip-art look, other labels) -------------------------------------

def _draw_star(draw, box, rng, flat=True):
    p = _rel(box)
    pts = []
    for k in range(10):
        r = 0.5 if k % 2 == 0 else 0.2
        a = -math.pi / 2 + k * math.pi / 5
        pts.append((0.5 + r * math.cos(a) / 0.951,
                    0.5 + r * math.sin(a) / 0.9045 + 0.05))
    pts = [(min(max(u, 0), 1), min(max(v, 0), 1)) for u, v in pts]
    color = CLIPART_PALETTE[int(rng.integers(len(CLIPART_PALETTE)))]
    _poly(draw, p, pts, fill=color, outline=(0, 0, 0), width=1)


def _draw_heart(draw, box, rng, flat=True):
    p = _rel(box)
    color = CLIPART_PALETTE[int(rng.integers(len(CLIPART_PALETTE)))]
    ol = dict(outline=(0, 0, 0), width=1)
    _poly(draw, p, [(0.02, 0.32), (0.5, 1.0), (0.98, 0.32)], fill=color,
          **ol)
    _ellipse(draw, p, 0.0, 0.0, 0.54, 0.56, fill=color, **ol)
    _ellipse(draw, p, 0.46, 0.0, 1.0, 0.56, fill=color, **ol)
    _poly(draw, p, [(0.1, 0.42), (0.5, 0.9), (0.9, 0.42), (0.5, 0.3)],
          fill=color)


def _draw_arrow(draw, box, rng, flat=True):
    p0 = _rel(box)
    x0, y0, x1, y1 = box
    vertical = (y1 - y0) > (x1 - x0)
    flip = bool(rng.integers(2))

    def p(u, v):
        if flip:
            u = 1 - u
        return p0(v, u) if vertical else p0(u, v)

    color = CLIPART_PALETTE[int(rng.integers(len(CLIPART_PALETTE)))]
    pts = [(0.0, 0.3), (0.6, 0.3), (0.6, 0.0), (1.0, 0.5), (0.6, 1.0),
           (0.6, 0.7), (0.0, 0.7)]
    draw.polygon([p(u, v) for u, v in pts], fill=color, outline=(0, 0, 0),
                 width=1)


# --- aerial -----------------------------------------------------------------

def _oriented(box):
    """Relative mapping whose u axis runs along the box's long side."""
    p0 = _rel(box)
    x0, y0, x1, y1 = box
    if (y1 - y0) > (x1 - x0):
        return lambda u, v: p0(v, u)
    return p0


def _draw_plane(draw, box, rng, flat=False):
    p0 = _rel(box)
    turn = int(rng.integers(4))

    def p(u, v):
        for _ in range(turn):
            u, v = 1 - v, u
        return p0(u, v)

    color = _jitter(rng, (235, 235, 240), 12)
    _poly(draw, p, [(0.0, 0.42), (1.0, 0.42), (1.0, 0.58), (0.0, 0.58)],
          fill=color)
    _poly(draw, p, [(0.42, 0.0), (0.62, 0.0), (0.66, 1.0), (0.38, 1.0)],
          fill=color)
    _poly(draw, p, [(0.0, 0.28), (0.12, 0.28), (0.12, 0.72), (0.0, 0.72)],
          fill=color)


def _draw_ship(draw, box, rng, flat=False):
    p = _oriented(box)
    hull = _jitter(rng, (200, 200, 205), 25)
    _poly(draw, p, [(0.0, 0.5), (0.18, 0.0), (0.82, 0.0), (1.0, 0.5),
                    (0.82, 1.0), (0.18, 1.0)], fill=hull)
    _poly(draw, p, [(0.3, 0.3), (0.6, 0.3), (0.6, 0.7), (0.3, 0.7)],
          fill=(70, 70, 80))


def _draw_aerial_car(draw, box, rng, flat=False):
    p = _oriented(box)
    color = CLIPART_PALETTE[int(rng.integers(len(CLIPART_PALETTE)))]
    _poly(draw, p, [(0.0, 0.0), (1.0, 0.0), (1.0, 1.0), (0.0, 1.0)],
          fill=color)
    _poly(draw, p, [(0.62, 0.1), (0.78, 0.1), (0.78, 0.9), (0.62, 0.9)],
          fill=(30, 30, 40))


# --- signs ------------------------------------------------------------------

def _draw_stop(draw, box, rng, flat=False):
    p = _rel(box)
    a, b = 0.29, 0.71
    outer = [(a, 0), (b, 0), (1, a), (1, b), (b, 1), (a, 1), (0, b), (0, a)]
    inner = [(0.1 + 0.8 * u, 0.1 + 0.8 * v) for u, v in outer]
    _poly(draw, p, outer, fill=(245, 245, 245))
    _poly(draw, p, inner, fill=_jitter(rng, (200, 20, 30), 15))
    _rect(draw, p, 0.25, 0.44, 0.75, 0.56, fill=(245, 245, 245))


def _draw_warning(draw, box, rng, flat=False):
    p = _rel(box)
    _poly(draw, p, [(0.5, 0), (1, 0.5), (0.5, 1), (0, 0.5)], fill=(20, 20, 20))
    _poly(draw, p, [(0.5, 0.1), (0.9, 0.5), (0.5, 0.9), (0.1, 0.5)],
          fill=_jitter(rng, (250, 200, 0), 15))
    _rect(draw, p, 0.45, 0.3, 0.55, 0.58, fill=(20, 20, 20))
    _rect(draw, p, 0.45, 0.64, 0.55, 0.72, fill=(20, 20, 20))


def _draw_speedlimit(draw, box, rng, flat=False):
    p = _rel(box)
    _rect(draw, p, 0, 0, 1, 1, fill=(20, 20, 20))
    _rect(draw, p, 0.1, 0.08, 0.9, 0.92, fill=(245, 245, 245))
    _rect(draw, p, 0.22, 0.2, 0.78, 0.32, fill=(20, 20, 20))
    _rect(draw, p, 0.22, 0.5, 0.42, 0.8, fill=(20, 20, 20))
    _rect(draw, p, 0.58, 0.5, 0.78, 0.8, fill=(20, 20, 20))


DRAWERS = {
    'person': _draw_person, 'car': _draw_car, 'dog': _draw_dog,
    'bird': _draw_bird, 'star': _draw_star, 'heart': _draw_heart,
    'arrow': _draw_arrow, 'plane': _draw_plane, 'ship': _draw_ship,
    'stop': _draw_stop, 'warning': _draw_warning,
    'speedlimit': _draw_speedlimit,
}


# --- scenes -----------------------------------------------------------------

def _natural(rng, w, h, objects):
    sky = np.array(_jitter(rng, (150, 185, 220), 25), np.float32)
    ground = np.array(
        [(90, 130, 60), (140, 115, 80), (110, 110, 100)][int(rng.integers(3))],
        np.float32)
    horizon = rng.uniform(0.25, 0.55)
    t = np.clip((np.arange(h)[:, None] / h - horizon) * 8 + 0.5, 0, 1)
    base = sky * (1 - t[..., None]) + ground * t[..., None]
    base = base + 30 * _smooth_noise(rng, w, h, 6) \
        + 12 * _smooth_noise(rng, w, h, 24)
    img = Image.fromarray(np.clip(base, 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(img)
    for name, box in objects:
        DRAWERS[name](draw, box, rng, False)
    img = img.filter(ImageFilter.GaussianBlur(0.7))
    arr = np.asarray(img, np.float32) + rng.normal(0, 7, size=(h, w, 3))
    return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8))


def _flat(rng, w, h, objects):
    img = Image.new('RGB', (w, h), PASTELS[int(rng.integers(len(PASTELS)))])
    draw = ImageDraw.Draw(img)
    for _ in range(int(rng.integers(1, 4))):  # decorative, not objects
        cx, cy = rng.uniform(0, w), rng.uniform(0, h)
        r = rng.uniform(20, 60)
        color = PASTELS[int(rng.integers(len(PASTELS)))]
        draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=color)
    for name, box in objects:
        DRAWERS[name](draw, box, rng, True)
    return img


def _aerial(rng, w, h, objects):
    base = np.array(_jitter(rng, (105, 120, 95), 15), np.float32)
    arr = base + 25 * _smooth_noise(rng, w, h, 8) \
        + 10 * _smooth_noise(rng, w, h, 40)
    img = Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(img)
    if rng.random() < 0.6:  # water
        x0, y0 = rng.uniform(0, w * 0.6), rng.uniform(0, h * 0.6)
        draw.rectangle([x0, y0, x0 + rng.uniform(40, 90),
                        y0 + rng.uniform(40, 90)], fill=(45, 75, 120))
    for _ in range(int(rng.integers(1, 4))):  # roads
        width = int(rng.integers(8, 14))
        if rng.random() < 0.5:
            y = rng.uniform(0, h)
            draw.rectangle([0, y, w, y + width], fill=(85, 85, 90))
        else:
            x = rng.uniform(0, w)
            draw.rectangle([x, 0, x + width, h], fill=(85, 85, 90))
    for name, box in objects:
        drawer = _draw_aerial_car if name == 'car' else DRAWERS[name]
        drawer(draw, box, rng, False)
    arr = np.asarray(img, np.float32) + rng.normal(0, 5, size=(h, w, 3))
    return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8))


def _signs(rng, w, h, objects):
    horizon = int(h * rng.uniform(0.45, 0.6))
    sky = np.array(_jitter(rng, (170, 200, 230), 20), np.float32)
    road = np.array(_jitter(rng, (80, 80, 85), 10), np.float32)
    rows = np.where(np.arange(h)[:, None, None] < horizon, sky, road)
    arr = np.broadcast_to(rows, (h, w, 3)) + 18 * _smooth_noise(rng, w, h, 10)
    img = Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(img)
    x = 0.0
    while x < w:  # buildings on the horizon
        bw, bh = rng.uniform(15, 40), rng.uniform(10, horizon * 0.8)
        draw.rectangle([x, horizon - bh, x + bw, horizon],
                       fill=_jitter(rng, (130, 120, 115), 30))
        x += bw + rng.uniform(0, 10)
    for _, box in objects:  # poles under the signs
        cx = (box[0] + box[2]) / 2
        draw.rectangle([cx - 1, box[3], cx + 1, h], fill=(120, 120, 120))
    for name, box in objects:
        DRAWERS[name](draw, box, rng, False)
    img = img.filter(ImageFilter.GaussianBlur(0.5))
    arr = np.asarray(img, np.float32) + rng.normal(0, 6, size=(h, w, 3))
    return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8))


def _medical(rng, w, h, objects):
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    cx, cy = w / 2, h / 2
    body = ((xx - cx) / (w * 0.47))**2 + ((yy - cy) / (h * 0.42))**2 <= 1
    arr = np.zeros((h, w), np.float32)
    tissue = rng.uniform(90, 115) + 18 * _smooth_noise(rng, w, h, 8, 1)[..., 0]
    arr[body] = tissue[body]
    for _ in range(2):  # dark organs
        ox, oy = rng.uniform(0.3, 0.7) * w, rng.uniform(0.3, 0.6) * h
        rx, ry = rng.uniform(10, 22), rng.uniform(8, 16)
        organ = ((xx - ox) / rx)**2 + ((yy - oy) / ry)**2 <= 1
        arr[organ & body] = rng.uniform(50, 70)
    spine = (xx - cx)**2 + (yy - h * 0.78)**2 <= rng.uniform(5, 8)**2
    arr[spine] = 210
    for _, (x0, y0, x1, y1) in objects:
        lx, ly = (x0 + x1) / 2, (y0 + y1) / 2
        rx, ry = (x1 - x0) / 2, (y1 - y0) / 2
        d2 = ((xx + 0.5 - lx) / rx)**2 + ((yy + 0.5 - ly) / ry)**2
        arr += rng.uniform(60, 90) * np.sqrt(np.clip(1 - d2, 0, 1))
    arr += rng.normal(0, 5, size=(h, w))
    return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8), 'L')


SCENES = {
    'natural': _natural, 'clipart': _flat, 'icons': _flat,
    'aerial': _aerial, 'signs': _signs, 'medical': _medical,
}


def _medical_boxes(rng, w, h, style, classes):
    """Lesions lie inside the body ellipse."""
    boxes = []
    for name, box in _place_boxes(rng, w, h, style, classes):
        cx, cy = (box[0] + box[2]) / 2 - w / 2, (box[1] + box[3]) / 2 - h / 2
        if (cx / (w * 0.4))**2 + (cy / (h * 0.36))**2 <= 1:
            boxes.append((name, box))
    if not boxes:  # always at least one lesion, at the centre-left
        s = int(style['size'][0])
        x0, y0 = int(w * 0.35), int(h * 0.4)
        boxes.append((classes[0], (x0, y0, x0 + s, y0 + s)))
    return boxes


def _voc_xml(domain: str, stem: str, w: int, h: int, depth: int,
             objects: Sequence[tuple]) -> bytes:
    """VOC XML of one image; an object is ``(class, box[, difficult])``."""
    root = ET.Element('annotation')
    ET.SubElement(root, 'folder').text = domain
    ET.SubElement(root, 'filename').text = f'{stem}.jpg'
    source = ET.SubElement(root, 'source')
    ET.SubElement(source, 'database').text = 'mini-UODB (mmgem, synthetic)'
    size = ET.SubElement(root, 'size')
    ET.SubElement(size, 'width').text = str(w)
    ET.SubElement(size, 'height').text = str(h)
    ET.SubElement(size, 'depth').text = str(depth)
    ET.SubElement(root, 'segmented').text = '0'
    for name, (x0, y0, x1, y1), *difficult in objects:
        obj = ET.SubElement(root, 'object')
        ET.SubElement(obj, 'name').text = name
        ET.SubElement(obj, 'pose').text = 'Unspecified'
        ET.SubElement(obj, 'truncated').text = '0'
        ET.SubElement(obj, 'difficult').text = str(int(bool(difficult and difficult[0])))
        bnd = ET.SubElement(obj, 'bndbox')
        for tag, v in zip(('xmin', 'ymin', 'xmax', 'ymax'),
                          (x0 + 1, y0 + 1, x1 + 1, y1 + 1)):
            ET.SubElement(bnd, tag).text = str(v)
    ET.indent(root, space='\t')
    return ET.tostring(root, encoding='utf-8') + b'\n'


def draw_image(domain: str, seed: int, split_index: int,
               image_index: int) -> Tuple[Image.Image, List[Tuple[str, Box]]]:
    """Draw one image of a domain.

    Args:
        domain (str): A name of ``MINI_UODB_DATASETS``.
        seed (int): The dataset seed.
        split_index (int): 0 for the train split, 1 for the test split.
        image_index (int): Index of the image in its split.

    Returns:
        tuple: The PIL image and its objects as ``(class, (x0, y0, x1, y1))``
        with exclusive ``x1``, ``y1`` (pixels ``x0..x1-1`` are covered).
    """
    if domain not in DOMAIN_STYLES:
        raise ValueError(f'unknown mini-UODB domain {domain!r}, expected one '
                         f'of {MINI_UODB_DATASETS}')
    d = MINI_UODB_DATASETS.index(domain)
    rng = np.random.default_rng([seed, d, split_index, image_index])
    style = DOMAIN_STYLES[domain]
    w = int(rng.integers(style['width'][0], style['width'][1] + 1))
    h = int(rng.integers(style['height'][0], style['height'][1] + 1))
    classes = MINI_UODB_CLASSES[domain]
    if domain == 'medical':
        objects = _medical_boxes(rng, w, h, style, classes)
    else:
        objects = _place_boxes(rng, w, h, style, classes)
    return SCENES[domain](rng, w, h, objects), objects


def _load_converter():
    from mmgem.datasets import converters
    return converters


#: What each version draws: domains, classes, splits, sizes, the drawing
#: function, the domains that share a look (reported apart by the
#: identifiability check), the bound their 1-NN accuracy must stay below,
#: and the default output root.
VERSIONS: Dict[int, dict] = {
    1: dict(datasets=MINI_UODB_DATASETS, classes=MINI_UODB_CLASSES,
            splits=MINI_UODB_SPLITS, sizes=MINI_UODB_SIZES, draw=draw_image,
            shared_look=('icons', 'clipart'), bound=None,
            out='data/mini_uodb'),
    2: dict(datasets=MINI_UODB_V2_DATASETS, classes=MINI_UODB_V2_CLASSES,
            splits=MINI_UODB_V2_SPLITS, sizes=MINI_UODB_V2_SIZES,
            draw=draw_image_v2,
            shared_look=tuple(
                d for d in MINI_UODB_V2_DATASETS
                if list(MINI_UODB_V2_LOOKS.values()).count(
                    MINI_UODB_V2_LOOKS[d]) > 1),
            bound=0.6, out='data/mini_uodb_v2'),
}


def _version(version: int) -> dict:
    if version not in VERSIONS:
        raise ValueError(f'unknown mini-UODB version {version!r}, expected '
                         f'one of {sorted(VERSIONS)}')
    return VERSIONS[version]


def make_mini_uodb(out: str,
                   seed: int = 0,
                   scale: str = 'tiny',
                   convert: bool = True,
                   domains: Optional[Sequence[str]] = None,
                   version: int = 1) -> dict:
    """Write mini-UODB in UODB's VOC-style layout (and convert it).

    Args:
        out (str): Output root; one folder per domain is (re)created in it.
        seed (int): Random seed; the same seed gives identical files.
        scale (str): ``'tiny'`` (a few dozen images per domain, for tests)
            or ``'small'`` (a few thousand in all, for the demo and the
            benchmarks).
        convert (bool): Also run ``uodb2coco`` to write
            ``<domain>/annotations/<split>.json``. Defaults to True.
        domains (Sequence[str], optional): A subset of the domains.
        version (int): 1 (the six domains of ``mini_uodb_meta``, kept
            byte-identical) or 2 (the eleven of ``mini_uodb_v2_meta``).
            Defaults to 1.

    Returns:
        dict: The manifest also written to ``OUT/mini_uodb.json``: seed,
        scale, and per domain its classes and, per split, the image stems
        with their objects (``[class, [x0, y0, x1, y1]]``, exclusive
        ``x1``/``y1``). Version 2 adds ``version``, each domain's ``look``
        and ``stands_for``, and a third entry per object, 1 for
        ``difficult`` (mostly occluded) objects, else 0.
    """
    spec = _version(version)
    if scale not in spec['sizes']:
        raise ValueError(f'unknown scale {scale!r}, expected one of '
                         f'{sorted(spec["sizes"])}')
    domains = tuple(domains) if domains else spec['datasets']
    for domain in domains:
        if domain not in spec['datasets']:
            raise ValueError(f'unknown mini-UODB domain {domain!r}, expected '
                             f'one of {spec["datasets"]} (version {version})')
    os.makedirs(out, exist_ok=True)
    manifest = dict(seed=seed, scale=scale, domains={})
    if version != 1:  # version 1's manifest stays byte-identical
        manifest['version'] = version
    for domain in domains:
        ddir = osp.join(out, domain)
        if osp.isdir(ddir):  # remove stale images of an earlier run
            shutil.rmtree(ddir)
        for sub in ('Annotations', 'JPEGImages',
                    osp.join('ImageSets', 'Main')):
            os.makedirs(osp.join(ddir, sub))
        entry = dict(classes=list(spec['classes'][domain]), splits={})
        if version == 2:
            entry.update(look=MINI_UODB_V2_LOOKS[domain],
                         stands_for=MINI_UODB_V2_STANDS_FOR[domain])
        offset = 0
        for split_index, (split, count) in enumerate(
                zip(spec['splits'][domain], spec['sizes'][scale][domain])):
            stems, objects_of = [], {}
            for i in range(count):
                stem = f'{offset + i:06d}'
                img, objects = spec['draw'](domain, seed, split_index, i)
                buf = io.BytesIO()
                img.save(buf, format='JPEG', quality=92)
                atomic_write(
                    osp.join(ddir, 'JPEGImages', f'{stem}.jpg'),
                    buf.getvalue())
                depth = 1 if img.mode == 'L' else 3
                atomic_write(
                    osp.join(ddir, 'Annotations', f'{stem}.xml'),
                    _voc_xml(domain, stem, img.width, img.height, depth,
                             objects))
                stems.append(stem)
                objects_of[stem] = [[n, list(b), *[int(x) for x in rest]]
                                    for n, b, *rest in objects]
            offset += count
            atomic_write(
                osp.join(ddir, 'ImageSets', 'Main', f'{split}.txt'),
                ''.join(s + '\n' for s in stems).encode())
            entry['splits'][split] = dict(stems=stems, objects=objects_of)
        manifest['domains'][domain] = entry
    atomic_write(
        osp.join(out, MANIFEST),
        json.dumps(manifest, separators=(',', ':')).encode())
    if convert:
        _load_converter().convert_uodb(
            out, datasets=domains, preset='mini_uodb',
            classes={d: spec['classes'][d] for d in domains})
    return manifest


def check_identifiability(out: str, version: int = 1,
                          domains: Optional[Sequence[str]] = None,
                          max_images: Optional[int] = 200) -> dict:
    """How well global statistics name the domain of a generated image.

    Leave-one-out 1-NN on the 14 statistics of
    :mod:`mmgem.datasets.domain_identifiability` over the first
    ``max_images`` training images of every domain.

    Args:
        out (str): A root written by :func:`make_mini_uodb`.
        version (int): Its version.
        domains (Sequence[str], optional): The domains written (default:
            all of the version).
        max_images (int, optional): Images per domain.

    Returns:
        dict: :func:`domain_identifiability`'s result plus ``bound`` (the
        version's bound on the shared-look accuracy, or None) and ``met``.
    """
    spec = _version(version)
    domains = tuple(domains) if domains else spec['datasets']
    split = {d: spec['splits'][d][0] for d in domains}
    stats = {}
    for d in domains:
        stats.update(read_statistics(out, [d], split[d], max_images))
    shared = [d for d in spec['shared_look'] if d in domains]
    # a look shared by only one of the chosen domains is shared with nobody
    if version == 2:
        shared = [d for d in shared if sum(
            MINI_UODB_V2_LOOKS[o] == MINI_UODB_V2_LOOKS[d] for o in domains) > 1]
    elif len(shared) < 2:
        shared = []
    result = domain_identifiability(stats, shared)
    result['bound'] = spec['bound']
    result['met'] = (None if spec['bound'] is None or result['shared_look'] is None
                     else bool(result['shared_look'] < spec['bound']))
    return result


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description='Generate mini-UODB in UODB\'s VOC-style layout')
    parser.add_argument(
        '--version', type=int, default=1, choices=sorted(VERSIONS),
        help='1: six domains (the original, byte-identical); 2: eleven '
        'domains standing for UODB\'s eleven datasets')
    parser.add_argument(
        '--out', default=None,
        help='output root (default: data/mini_uodb, data/mini_uodb_v2)')
    parser.add_argument('--seed', type=int, default=0, help='random seed')
    parser.add_argument(
        '--scale', default='tiny', choices=sorted(MINI_UODB_SIZES),
        help='tiny: a few dozen images per domain; small: a few thousand')
    parser.add_argument(
        '--domains', nargs='+',
        choices=sorted(set(MINI_UODB_DATASETS) | set(MINI_UODB_V2_DATASETS)),
        help='only these domains of the version (default: all)')
    parser.add_argument(
        '--no-convert', action='store_true',
        help='only write the VOC-style layout, not the COCO JSON')
    parser.add_argument(
        '--check-images', type=int, default=200,
        help='training images per domain of the identifiability check '
        '(0: no check)')
    return parser.parse_args(argv)


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse_args(argv)
    out = args.out or _version(args.version)['out']
    start = time.perf_counter()
    manifest = make_mini_uodb(out, args.seed, args.scale,
                              convert=not args.no_convert,
                              domains=args.domains, version=args.version)
    print('| domain | classes | ' + ' | '.join(
        f'{s} images' for s in ('train', 'test')) + ' | boxes |')
    print('|---|---|---|---|---|')
    for domain, entry in manifest['domains'].items():
        counts = [len(v['stems']) for v in entry['splits'].values()]
        boxes = sum(
            len(objs) for v in entry['splits'].values()
            for objs in v['objects'].values())
        print(f'| {domain} | {", ".join(entry["classes"])} | '
              f'{counts[0]} | {counts[1]} | {boxes} |')
    print(f'wrote {out} (version {args.version}, seed {args.seed}, scale '
          f'{args.scale}) in {time.perf_counter() - start:.1f} s')
    if args.check_images > 0:
        result = check_identifiability(out, args.version, args.domains,
                                       args.check_images)
        print()
        print(format_identifiability(result, result['bound']))
    return 0


if __name__ == '__main__':
    sys.exit(main())
