# Copyright (c) mmgem contributors. All rights reserved.
"""Scenes and objects of mini-UODB v1 (drawn with PIL, no torch).

:func:`draw_image` draws one image of a domain of
:mod:`mmgem.datasets.mini_uodb_meta` and returns its objects;
``tools/misc/make_mini_uodb.py`` writes them in UODB's VOC-style layout.
Every image is drawn from its own random generator seeded by
``(seed, domain, split, index)``.
"""
import math
from typing import Callable, Dict, List, Sequence, Tuple

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from mmgem.datasets.mini_uodb_meta import MINI_UODB_CLASSES, MINI_UODB_DATASETS

Box = Tuple[int, int, int, int]  # x0, y0, x1, y1 with x1, y1 exclusive
Color = Tuple[int, int, int]


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

def _photographed(img, draw, objects, rng, blur: float, noise: float) -> Image.Image:
    """Draw the objects as photos (not flat), blur, add Gaussian noise."""
    for name, box in objects:
        DRAWERS[name](draw, box, rng, False)
    img = img.filter(ImageFilter.GaussianBlur(blur))
    h, w = img.height, img.width
    arr = np.asarray(img, np.float32) + rng.normal(0, noise, size=(h, w, 3))
    return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8))


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
    return _photographed(img, draw, objects, rng, 0.7, 7)


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
    return _photographed(img, draw, objects, rng, 0.5, 6)


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



__all__ = ['draw_image', 'DOMAIN_STYLES', 'DRAWERS', 'SCENES']
