# Copyright (c) mmgem contributors. All rights reserved.
"""Scenes and objects of mini-UODB v2 (drawn with PIL, no torch).

:func:`draw_image` draws one image of a domain of
:mod:`mmgem.datasets.mini_uodb_v2_meta` and returns its labelled objects.
``tools/misc/make_mini_uodb.py --version 2`` writes them in UODB's
VOC-style layout.

How an image is made:

- Each *look* (``photo``, ``clipart``, ``comic``, ``watercolor``,
  ``street``, ``aerial``, ``crowd``, ``kitchen``, ``medical``) has its own
  scene generator: image size and aspect range, background and clutter
  (things that are no object class), which objects appear and how large,
  how much they may occlude each other, and a colouring and
  post-processing style. Domains of one look (``photo_full`` /
  ``photo_part``, ``street`` / ``signs``) call the same generator with the
  same random draws; the domain only decides which of the drawn objects
  are labelled. Objects of the other domain's classes stay in the image,
  unlabelled.
- Every primitive is drawn twice: in colour on the image and with the
  object's id on an id mask (clutter writes id 0). Objects drawn later
  occlude earlier ones, and foreground clutter (posts, branches, bodies in
  front rows) occludes objects. A label's box is the tight box of the
  object's *visible* pixels in the final mask, as VOC and COCO boxes are.
  An object of which less than 30 % of its drawn pixels stay visible is
  written ``difficult`` (mmdet and COCO evaluation ignore it); one with
  nothing visible is dropped.
- Sizes are given in pixels after mmgem's tiny-model resize (long side
  160) and scaled to the drawn image, so objects keep their size in the
  model's input whatever the image size.

Generation is deterministic: every image has its own generator seeded by
``(seed, 2, domain index, split, index)``.
"""
import math
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from mmgem.datasets.mini_uodb_v2_meta import (
    MINI_UODB_V2_CLASSES,
    MINI_UODB_V2_DATASETS,
    MINI_UODB_V2_LOOKS,
)

Color = Tuple[int, int, int]
Point = Tuple[float, float]
Frame = Callable[[float, float], Point]
#: A labelled object: class name, box ``(x0, y0, x1, y1)`` with exclusive
#: ``x1`` / ``y1``, and whether it is difficult (mostly occluded).
LabelledObject = Tuple[str, Tuple[int, int, int, int], bool]

VERSION_TAG = 2  # part of every image's seed, so v2 never repeats v1's draws
MODEL_SIDE = 160.0  # sizes below are pixels at this long side
MIN_VISIBLE = 0.3  # visible share of its pixels under which an object is difficult

# image size of each look: long side range (pixels) and width / height range
IMAGE_SIZES: Dict[str, Tuple[Tuple[int, int], Tuple[float, float]]] = {
    'photo': ((176, 256), (0.67, 1.6)),
    'clipart': ((144, 208), (0.75, 1.33)),
    'comic': ((160, 256), (0.5, 2.0)),
    'watercolor': ((160, 240), (1.15, 1.6)),
    'street': ((256, 352), (1.8, 2.6)),
    'aerial': ((224, 320), (0.9, 1.1)),
    'crowd': ((192, 288), (1.2, 1.8)),
    'kitchen': ((160, 224), (1.25, 1.45)),
    'medical': ((128, 160), (1.0, 1.0)),
}

# width / height of each class's drawing box
ASPECTS: Dict[str, float] = {
    'person': 0.45, 'car': 2.0, 'dog': 1.4, 'bird': 1.2, 'cat': 1.1,
    'bicycle': 1.6, 'bottle': 0.35, 'chair': 0.7, 'umbrella': 1.3,
    'clock': 1.0, 'pedestrian': 0.42, 'cyclist': 0.8, 'stop': 1.0,
    'speedlimit': 0.8, 'warning': 1.0, 'noturn': 1.0, 'plane': 1.0,
    'ship': 3.2, 'small-vehicle': 2.0, 'storage-tank': 1.0, 'face': 0.8,
    'cereal_box': 0.7, 'soda_can': 0.55, 'sauce_jar': 0.8,
    'chips_tube': 0.35, 'soap_bottle': 0.45, 'lesion': 1.0,
}

PHOTO_CLASSES = MINI_UODB_V2_CLASSES['photo_full']
STREET_CLASSES = MINI_UODB_V2_CLASSES['street']
SIGN_CLASSES = MINI_UODB_V2_CLASSES['signs']

FLAT_PALETTE: Tuple[Color, ...] = (
    (231, 76, 60), (46, 134, 193), (39, 174, 96), (241, 196, 15),
    (155, 89, 182), (230, 126, 34), (26, 188, 156), (52, 73, 94),
    (236, 112, 160), (149, 165, 166))
COMIC_INKS: Tuple[Color, ...] = (
    (220, 30, 40), (20, 70, 200), (250, 210, 0), (20, 150, 60),
    (250, 250, 250), (30, 30, 30), (240, 120, 20), (200, 170, 130))
PASTEL_BACKGROUNDS: Tuple[Color, ...] = (
    (250, 243, 224), (232, 244, 250), (238, 250, 236), (252, 232, 240),
    (240, 236, 252))


# --------------------------------------------------------------------------
# colours and looks
# --------------------------------------------------------------------------
def _clip(c) -> Color:
    return tuple(int(v) for v in np.clip(np.round(c), 0, 255))


def _jit(rng: np.random.Generator, base: Sequence[float], amount: float) -> Color:
    return _clip(np.asarray(base, np.float64) + rng.uniform(-amount, amount, 3))


class Look:
    """How a look colours the parts of an object.

    Args:
        name (str): The look.
        scale (float): Image pixels per model pixel (outline widths scale).
    """

    def __init__(self, name: str, scale: float) -> None:
        self.name = name
        self.scale = scale
        self.flat = name in ('clipart', 'comic')
        widths = dict(clipart=1.0, comic=2.2)
        self.outline: Optional[Color] = (15, 15, 15) if self.flat else None
        self.width = max(1, int(round(widths.get(name, 0) * scale)))

    def color(self, rng: np.random.Generator, base: Sequence[float], fixed: bool = False
              ) -> Color:
        """The colour of a part whose natural colour is ``base``.

        Args:
            rng (np.random.Generator): The image's generator.
            base (Sequence[float]): Natural RGB colour of the part.
            fixed (bool): A part whose colour identifies the class (skin,
                tyres, sign faces): flat looks keep its hue.

        Returns:
            tuple: RGB colour.
        """
        if self.name == 'clipart':
            if fixed:
                return _jit(rng, base, 10)
            return FLAT_PALETTE[int(rng.integers(len(FLAT_PALETTE)))]
        if self.name == 'comic':
            c = np.asarray(_jit(rng, base, 25), np.float64)
            inks = np.asarray(COMIC_INKS, np.float64)
            return _clip(inks[np.argmin(((inks - c)**2).sum(1))])
        if self.name == 'watercolor':
            c = np.asarray(_jit(rng, base, 35), np.float64)
            return _clip(0.7 * c + 0.3 * 245)
        return _jit(rng, base, 35)

    def outline_kw(self) -> dict:
        """dict: ``outline`` and ``width`` for the canvas primitives."""
        return dict(outline=self.outline, width=self.width) if self.flat else {}


# --------------------------------------------------------------------------
# the canvas: colour image and object-id mask drawn together
# --------------------------------------------------------------------------
def frame(box: Sequence[float], angle: float = 0.0, flip: bool = False) -> Frame:
    """Map relative ``(u, v)`` in ``[0, 1]^2`` of a box to image pixels.

    Args:
        box (Sequence[float]): The unrotated drawing box ``(x0, y0, x1, y1)``.
        angle (float): Rotation about the box centre, radians.
        flip (bool): Mirror ``u``.

    Returns:
        Callable: ``p(u, v) -> (x, y)``.
    """
    x0, y0, x1, y1 = box
    cx, cy, bw, bh = (x0 + x1) / 2, (y0 + y1) / 2, x1 - x0, y1 - y0
    c, s = math.cos(angle), math.sin(angle)

    def p(u: float, v: float) -> Point:
        if flip:
            u = 1 - u
        dx, dy = (u - 0.5) * bw, (v - 0.5) * bh
        return cx + c * dx - s * dy, cy + s * dx + c * dy

    return p


def _oval(u0: float, v0: float, u1: float, v1: float, n: int = 20,
          start: float = 0.0, end: float = 2 * math.pi) -> List[Point]:
    cu, cv, ru, rv = (u0 + u1) / 2, (v0 + v1) / 2, (u1 - u0) / 2, (v1 - v0) / 2
    ts = np.linspace(start, end, n, endpoint=end - start < 2 * math.pi)
    return [(cu + ru * math.cos(t), cv + rv * math.sin(t)) for t in ts]


class Canvas:
    """An RGB image and its object-id mask, drawn with the same primitives.

    ``obj`` is the id the primitives write to the mask (0: clutter, which
    occludes objects but is no object).

    Args:
        img (Image.Image): The RGB image to draw on.
    """

    def __init__(self, img: Image.Image) -> None:
        self.img = img
        self.draw = ImageDraw.Draw(img)
        self.mask = Image.new('L', img.size, 0)
        self._mask = ImageDraw.Draw(self.mask)
        self.obj = 0

    def poly(self, pts: Sequence[Point], fill: Color, outline: Optional[Color] = None,
             width: int = 1) -> None:
        """Fill a polygon given in image pixels."""
        pts = [(float(x), float(y)) for x, y in pts]
        w = int(width) if outline is not None else 1
        self.draw.polygon(pts, fill=fill, outline=outline, width=w)
        self._mask.polygon(pts, fill=self.obj, outline=self.obj, width=w)

    def shape(self, p: Frame, pts: Sequence[Point], fill: Color, **kw) -> None:
        """Fill a polygon given in the relative coordinates of frame ``p``."""
        self.poly([p(u, v) for u, v in pts], fill, **kw)

    def rect(self, p: Frame, u0: float, v0: float, u1: float, v1: float, fill: Color,
             **kw) -> None:
        """Fill a (possibly rotated) rectangle of frame ``p``."""
        self.shape(p, [(u0, v0), (u1, v0), (u1, v1), (u0, v1)], fill, **kw)

    def oval(self, p: Frame, u0: float, v0: float, u1: float, v1: float, fill: Color,
             **kw) -> None:
        """Fill a (possibly rotated) ellipse of frame ``p``."""
        self.shape(p, _oval(u0, v0, u1, v1), fill, **kw)

    def line(self, pts: Sequence[Point], fill: Color, width: float) -> None:
        """Draw a polyline given in image pixels."""
        pts = [(float(x), float(y)) for x, y in pts]
        w = max(1, int(round(width)))
        self.draw.line(pts, fill=fill, width=w)
        self._mask.line(pts, fill=self.obj, width=w)

    def border(self, fill: Color, width: int) -> None:
        """Draw a frame of ``width`` pixels along the image border."""
        box = [0, 0, self.img.width - 1, self.img.height - 1]
        self.draw.rectangle(box, outline=fill, width=width)
        self._mask.rectangle(box, outline=self.obj, width=width)

    def rel_line(self, p: Frame, pts: Sequence[Point], fill: Color, width: float) -> None:
        """Draw a polyline given in the relative coordinates of frame ``p``."""
        self.line([p(u, v) for u, v in pts], fill, width)


# --------------------------------------------------------------------------
# object drawers: (canvas, frame, rng, look, box size in image pixels)
# --------------------------------------------------------------------------
def _person(cv: Canvas, p: Frame, rng, look: Look, size: float) -> None:
    ol = look.outline_kw()
    skin = look.color(rng, (224, 172, 125), fixed=True)
    shirt = look.color(rng, _jit(rng, (150, 60, 60), 90))
    legs = look.color(rng, (45, 55, 110))
    cv.rect(p, 0.22, 0.58, 0.46, 1.0, legs, **ol)
    cv.rect(p, 0.54, 0.58, 0.78, 1.0, legs, **ol)
    cv.shape(p, [(0.0, 0.52), (0.12, 0.26), (0.22, 0.3), (0.14, 0.56)], shirt, **ol)
    cv.shape(p, [(1.0, 0.52), (0.88, 0.26), (0.78, 0.3), (0.86, 0.56)], shirt, **ol)
    cv.oval(p, 0.12, 0.2, 0.88, 0.66, shirt, **ol)
    cv.oval(p, 0.26, 0.0, 0.74, 0.23, skin, **ol)


def _car(cv: Canvas, p: Frame, rng, look: Look, size: float) -> None:
    ol = look.outline_kw()
    body = look.color(rng, _jit(rng, (60, 90, 170), 90))
    glass = look.color(rng, (170, 205, 230), fixed=True)
    tyre = look.color(rng, (25, 25, 25), fixed=True)
    cv.shape(p, [(0.2, 0.45), (0.32, 0.02), (0.7, 0.02), (0.84, 0.45)], body, **ol)
    cv.shape(p, [(0.29, 0.42), (0.37, 0.1), (0.66, 0.1), (0.75, 0.42)], glass)
    cv.rect(p, 0.0, 0.4, 1.0, 0.8, body, **ol)
    cv.rect(p, 0.02, 0.48, 0.08, 0.58, look.color(rng, (250, 230, 120), fixed=True))
    cv.oval(p, 0.12, 0.6, 0.34, 1.0, tyre, **ol)
    cv.oval(p, 0.66, 0.6, 0.88, 1.0, tyre, **ol)


def _dog(cv: Canvas, p: Frame, rng, look: Look, size: float) -> None:
    ol = look.outline_kw()
    fur = look.color(rng, (150, 95, 45))
    dark = _clip(np.asarray(fur) * 0.6)
    for u in (0.2, 0.34, 0.58, 0.72):
        cv.rect(p, u, 0.55, u + 0.08, 1.0, dark, **ol)
    cv.rel_line(p, [(0.16, 0.42), (0.02, 0.12)], dark, max(2, size * 0.05))
    cv.oval(p, 0.12, 0.3, 0.86, 0.72, fur, **ol)
    cv.oval(p, 0.66, 0.0, 1.0, 0.44, fur, **ol)
    cv.shape(p, [(0.66, 0.06), (0.74, 0.0), (0.72, 0.3)], dark)  # floppy ear
    cv.oval(p, 0.9, 0.18, 1.0, 0.28, (20, 20, 20))


def _cat(cv: Canvas, p: Frame, rng, look: Look, size: float) -> None:
    ol = look.outline_kw()
    fur = look.color(rng, _jit(rng, (130, 130, 130), 80))
    stripe = _clip(np.asarray(fur) * 0.55)
    cv.rel_line(p, [(0.1, 0.7), (0.02, 0.35), (0.08, 0.08)], fur, max(2, size * 0.07))
    cv.oval(p, 0.08, 0.42, 0.78, 0.95, fur, **ol)
    for u in (0.3, 0.42, 0.54):
        cv.rect(p, u, 0.46, u + 0.05, 0.62, stripe)
    cv.rect(p, 0.18, 0.8, 0.28, 1.0, fur, **ol)
    cv.rect(p, 0.6, 0.8, 0.7, 1.0, fur, **ol)
    cv.shape(p, [(0.6, 0.2), (0.64, 0.0), (0.74, 0.14)], fur, **ol)  # pointed ears
    cv.shape(p, [(0.86, 0.14), (0.96, 0.0), (1.0, 0.2)], fur, **ol)
    cv.oval(p, 0.58, 0.1, 1.0, 0.5, fur, **ol)
    eye = look.color(rng, (120, 200, 60), fixed=True)
    cv.oval(p, 0.68, 0.24, 0.76, 0.32, eye)
    cv.oval(p, 0.84, 0.24, 0.92, 0.32, eye)


def _bird(cv: Canvas, p: Frame, rng, look: Look, size: float) -> None:
    ol = look.outline_kw()
    body = look.color(rng, _jit(rng, (90, 110, 140), 80))
    cv.shape(p, [(0.0, 0.55), (0.22, 0.48), (0.22, 0.76)], body, **ol)
    cv.oval(p, 0.12, 0.35, 0.78, 1.0, body, **ol)
    cv.oval(p, 0.56, 0.12, 0.9, 0.55, body, **ol)
    cv.shape(p, [(0.88, 0.25), (1.0, 0.34), (0.88, 0.42)],
             look.color(rng, (250, 170, 20), fixed=True))
    cv.shape(p, [(0.3, 0.0), (0.56, 0.55), (0.24, 0.6)], _clip(np.asarray(body) * 0.7), **ol)


def _bicycle(cv: Canvas, p: Frame, rng, look: Look, size: float) -> None:
    frame_c = look.color(rng, _jit(rng, (180, 40, 40), 80))
    tyre = look.color(rng, (30, 30, 30), fixed=True)
    w = max(2, size * 0.06)
    for u0 in (0.0, 0.6):  # wheels: rings of polylines
        cv.rel_line(p, _oval(u0, 0.42, u0 + 0.4, 1.0, n=18, end=2 * math.pi) +
                    [(u0 + 0.4, 0.71)], tyre, w)
    cv.rel_line(p, [(0.2, 0.71), (0.45, 0.71), (0.62, 0.38), (0.36, 0.38), (0.2, 0.71)],
                frame_c, w)
    cv.rel_line(p, [(0.45, 0.71), (0.34, 0.2)], frame_c, w)
    cv.rel_line(p, [(0.62, 0.38), (0.8, 0.71)], frame_c, w)
    cv.rel_line(p, [(0.62, 0.38), (0.66, 0.12), (0.78, 0.08)], frame_c, w)
    cv.rect(p, 0.26, 0.12, 0.44, 0.2, tyre)  # seat


def _bottle(cv: Canvas, p: Frame, rng, look: Look, size: float) -> None:
    ol = look.outline_kw()
    glass = look.color(rng, _jit(rng, (60, 140, 80), 70))
    label = look.color(rng, (235, 225, 200))
    cv.rect(p, 0.05, 0.4, 0.95, 1.0, glass, **ol)
    cv.shape(p, [(0.05, 0.42), (0.3, 0.22), (0.7, 0.22), (0.95, 0.42)], glass, **ol)
    cv.rect(p, 0.32, 0.06, 0.68, 0.24, glass, **ol)
    cv.rect(p, 0.28, 0.0, 0.72, 0.07, look.color(rng, (200, 170, 40), fixed=True))
    cv.rect(p, 0.05, 0.56, 0.95, 0.78, label)


def _chair(cv: Canvas, p: Frame, rng, look: Look, size: float) -> None:
    ol = look.outline_kw()
    wood = look.color(rng, _jit(rng, (140, 95, 55), 50))
    w = max(2, size * 0.07)
    cv.rect(p, 0.05, 0.0, 0.25, 0.62, wood, **ol)  # back post
    cv.rect(p, 0.05, 0.05, 0.6, 0.3, wood, **ol)  # backrest
    cv.rect(p, 0.05, 0.52, 1.0, 0.64, wood, **ol)  # seat
    for u in (0.1, 0.9):
        cv.rel_line(p, [(u, 0.62), (u, 1.0)], wood, w)
    cv.rel_line(p, [(0.1, 0.82), (0.9, 0.82)], wood, max(1, w * 0.6))


def _umbrella(cv: Canvas, p: Frame, rng, look: Look, size: float) -> None:
    ol = look.outline_kw()
    cloth = look.color(rng, _jit(rng, (120, 60, 160), 90))
    dark = _clip(np.asarray(cloth) * 0.65)
    canopy = _oval(0.0, 0.0, 1.0, 0.9, n=16, start=math.pi, end=2 * math.pi)
    scallop = [(1.0, 0.45), (0.83, 0.38), (0.67, 0.45), (0.5, 0.38), (0.33, 0.45),
               (0.17, 0.38), (0.0, 0.45)]
    cv.shape(p, canopy + scallop, cloth, **ol)
    for u in (0.33, 0.67):
        cv.rel_line(p, [(0.5, 0.0), (u, 0.42)], dark, max(1, size * 0.03))
    w = max(2, size * 0.05)
    cv.rel_line(p, [(0.5, 0.4), (0.5, 0.92), (0.42, 1.0), (0.35, 0.92)], (40, 40, 40), w)


def _clock(cv: Canvas, p: Frame, rng, look: Look, size: float) -> None:
    ol = look.outline_kw()
    rim = look.color(rng, _jit(rng, (90, 60, 40), 60))
    cv.oval(p, 0.0, 0.0, 1.0, 1.0, rim, **ol)
    cv.oval(p, 0.1, 0.1, 0.9, 0.9, look.color(rng, (245, 245, 240), fixed=True))
    ink = (20, 20, 20)
    for k in range(12):
        a = k * math.pi / 6
        cv.rel_line(p, [(0.5 + 0.34 * math.cos(a), 0.5 + 0.34 * math.sin(a)),
                        (0.5 + 0.4 * math.cos(a), 0.5 + 0.4 * math.sin(a))], ink, 1)
    a1, a2 = rng.uniform(0, 2 * math.pi, 2)
    w = max(1, size * 0.05)
    cv.rel_line(p, [(0.5, 0.5), (0.5 + 0.22 * math.cos(a1), 0.5 + 0.22 * math.sin(a1))], ink, w)
    cv.rel_line(p, [(0.5, 0.5), (0.5 + 0.34 * math.cos(a2), 0.5 + 0.34 * math.sin(a2))], ink, w)


def _cyclist(cv: Canvas, p: Frame, rng, look: Look, size: float) -> None:
    def lower(u, v):  # the bicycle in the lower 60 %
        return p(u, 0.4 + 0.6 * v)

    def upper(u, v):  # the rider above its seat
        return p(0.25 + 0.35 * u, 0.72 * v)

    _bicycle(cv, lower, rng, look, size)
    ol = look.outline_kw()
    shirt = look.color(rng, _jit(rng, (60, 130, 60), 90))
    cv.oval(upper, 0.1, 0.18, 0.9, 0.7, shirt, **ol)
    cv.rel_line(upper, [(0.5, 0.65), (0.45, 0.95), (0.6, 1.0)], look.color(rng, (45, 55, 110)),
                max(2, size * 0.08))
    cv.rel_line(upper, [(0.7, 0.3), (1.2, 0.55)], shirt, max(2, size * 0.06))  # arm to bar
    cv.oval(upper, 0.22, 0.0, 0.78, 0.22, look.color(rng, (224, 172, 125), fixed=True), **ol)


def _stop(cv: Canvas, p: Frame, rng, look: Look, size: float) -> None:
    a, b = 0.29, 0.71
    outer = [(a, 0), (b, 0), (1, a), (1, b), (b, 1), (a, 1), (0, b), (0, a)]
    cv.shape(p, outer, (245, 245, 245))
    cv.shape(p, [(0.1 + 0.8 * u, 0.1 + 0.8 * v) for u, v in outer], _jit(rng, (200, 20, 30), 15))
    cv.rect(p, 0.22, 0.44, 0.78, 0.56, (245, 245, 245))


def _speedlimit(cv: Canvas, p: Frame, rng, look: Look, size: float) -> None:
    cv.rect(p, 0, 0, 1, 1, (20, 20, 20))
    cv.rect(p, 0.1, 0.07, 0.9, 0.93, _jit(rng, (245, 245, 245), 8))
    cv.rect(p, 0.2, 0.16, 0.8, 0.3, (20, 20, 20))
    cv.rect(p, 0.2, 0.48, 0.42, 0.82, (20, 20, 20))
    cv.rect(p, 0.58, 0.48, 0.8, 0.82, (20, 20, 20))


def _warning(cv: Canvas, p: Frame, rng, look: Look, size: float) -> None:
    cv.shape(p, [(0.5, 0), (1, 0.5), (0.5, 1), (0, 0.5)], (20, 20, 20))
    cv.shape(p, [(0.5, 0.1), (0.9, 0.5), (0.5, 0.9), (0.1, 0.5)], _jit(rng, (250, 200, 0), 15))
    cv.rect(p, 0.45, 0.28, 0.55, 0.58, (20, 20, 20))
    cv.rect(p, 0.45, 0.64, 0.55, 0.72, (20, 20, 20))


def _noturn(cv: Canvas, p: Frame, rng, look: Look, size: float) -> None:
    cv.oval(p, 0, 0, 1, 1, _jit(rng, (210, 25, 35), 15))
    cv.oval(p, 0.14, 0.14, 0.86, 0.86, (245, 245, 245))
    w = max(1, size * 0.1)
    cv.rel_line(p, [(0.38, 0.78), (0.38, 0.38), (0.66, 0.38)], (20, 20, 20), w)
    cv.shape(p, [(0.62, 0.26), (0.76, 0.38), (0.62, 0.5)], (20, 20, 20))
    cv.rel_line(p, [(0.24, 0.24), (0.76, 0.76)], _jit(rng, (210, 25, 35), 15), w * 1.2)


def _plane(cv: Canvas, p: Frame, rng, look: Look, size: float) -> None:
    c = _jit(rng, (232, 232, 238), 12)
    cv.shape(p, [(0.0, 0.44), (1.0, 0.44), (1.0, 0.56), (0.0, 0.56)], c)  # fuselage
    cv.shape(p, [(0.4, 0.0), (0.6, 0.0), (0.66, 1.0), (0.34, 1.0)], c)  # wings
    cv.shape(p, [(0.0, 0.3), (0.12, 0.3), (0.12, 0.7), (0.0, 0.7)], c)  # tail
    cv.shape(p, [(0.9, 0.46), (1.0, 0.5), (0.9, 0.54)], (60, 60, 70))


def _ship(cv: Canvas, p: Frame, rng, look: Look, size: float) -> None:
    hull = _jit(rng, (205, 205, 210), 25)
    cv.shape(p, [(0.0, 0.5), (0.16, 0.0), (0.84, 0.0), (1.0, 0.5), (0.84, 1.0), (0.16, 1.0)],
             hull)
    cv.rect(p, 0.3, 0.25, 0.58, 0.75, (70, 70, 82))
    cv.rect(p, 0.64, 0.35, 0.74, 0.65, _jit(rng, (180, 60, 40), 30))


def _small_vehicle(cv: Canvas, p: Frame, rng, look: Look, size: float) -> None:
    cv.rect(p, 0, 0, 1, 1, FLAT_PALETTE[int(rng.integers(len(FLAT_PALETTE)))])
    cv.rect(p, 0.6, 0.1, 0.76, 0.9, (30, 30, 40))
    cv.rect(p, 0.1, 0.15, 0.22, 0.85, (60, 60, 70))


def _storage_tank(cv: Canvas, p: Frame, rng, look: Look, size: float) -> None:
    cv.oval(p, 0.08, 0.12, 1.0, 1.0, (55, 60, 50))  # shadow
    cv.oval(p, 0.0, 0.0, 0.92, 0.9, _jit(rng, (215, 215, 205), 15))
    cv.oval(p, 0.16, 0.14, 0.76, 0.74, _jit(rng, (185, 185, 178), 15))


def _face(cv: Canvas, p: Frame, rng, look: Look, size: float) -> None:
    skin = _jit(rng, (rng.uniform(120, 235), 150, 110), 25)
    skin = _clip((skin[0], skin[0] * 0.76, skin[0] * 0.6))
    cv.oval(p, 0.0, 0.0, 1.0, 1.0, skin)
    ink = (30, 25, 25)
    for u in (0.28, 0.6):
        cv.rect(p, u, 0.38, u + 0.13, 0.46, ink)
    cv.rect(p, 0.36, 0.7, 0.64, 0.76, _jit(rng, (150, 60, 60), 20))


def _product_panel(cv, p, rng, body: Color) -> None:
    cv.oval(p, 0.25, 0.3, 0.75, 0.6, _jit(rng, (245, 245, 235), 10))
    cv.rect(p, 0.15, 0.7, 0.85, 0.8, _clip(np.asarray(body) * 0.5))


def _lesion(cv: Canvas, p: Frame, rng, look: Look, size: float) -> None:
    cv.oval(p, 0, 0, 1, 1, (0, 0, 0))  # the grey-level blob is added by the scene


def _cereal_box(cv: Canvas, p: Frame, rng, look: Look, size: float) -> None:
    body = _jit(rng, (230, 160, 30), 30)
    cv.rect(p, 0, 0, 1, 1, body)
    cv.rect(p, 0, 0, 1, 0.12, _jit(rng, (200, 40, 40), 20))
    _product_panel(cv, p, rng, body)


def _soda_can(cv: Canvas, p: Frame, rng, look: Look, size: float) -> None:
    body = _jit(rng, (200, 20, 30), 25)
    cv.rect(p, 0, 0.06, 1, 0.94, body)
    cv.oval(p, 0, 0, 1, 0.12, (190, 190, 195))
    cv.oval(p, 0, 0.88, 1, 1.0, (150, 150, 155))
    cv.rect(p, 0, 0.42, 1, 0.56, (245, 245, 245))


def _sauce_jar(cv: Canvas, p: Frame, rng, look: Look, size: float) -> None:
    body = _jit(rng, (170, 40, 30), 25)
    cv.oval(p, 0, 0.15, 1, 1.0, body)
    cv.rect(p, 0.12, 0.0, 0.88, 0.2, (40, 40, 45))
    cv.rect(p, 0.1, 0.45, 0.9, 0.72, _jit(rng, (240, 230, 190), 10))


def _chips_tube(cv: Canvas, p: Frame, rng, look: Look, size: float) -> None:
    body = _jit(rng, (40, 120, 60), 30)
    cv.rect(p, 0, 0.05, 1, 1, body)
    cv.oval(p, 0, 0, 1, 0.1, (220, 60, 40))
    cv.oval(p, 0.15, 0.35, 0.85, 0.55, _jit(rng, (250, 220, 120), 10))


def _soap_bottle(cv: Canvas, p: Frame, rng, look: Look, size: float) -> None:
    body = _jit(rng, (240, 140, 40), 30)
    cv.rect(p, 0.05, 0.3, 0.95, 1.0, body)
    cv.rect(p, 0.38, 0.12, 0.62, 0.3, (235, 235, 235))
    cv.rect(p, 0.38, 0.05, 0.95, 0.13, (235, 235, 235))  # pump nozzle
    cv.rect(p, 0.15, 0.55, 0.85, 0.75, _jit(rng, (250, 250, 250), 5))


DRAWERS: Dict[str, Callable] = {
    'person': _person, 'car': _car, 'dog': _dog, 'bird': _bird, 'cat': _cat,
    'bicycle': _bicycle, 'bottle': _bottle, 'chair': _chair,
    'umbrella': _umbrella, 'clock': _clock, 'pedestrian': _person,
    'cyclist': _cyclist, 'stop': _stop, 'speedlimit': _speedlimit,
    'warning': _warning, 'noturn': _noturn, 'plane': _plane, 'ship': _ship,
    'small-vehicle': _small_vehicle, 'storage-tank': _storage_tank,
    'face': _face, 'cereal_box': _cereal_box, 'soda_can': _soda_can,
    'sauce_jar': _sauce_jar, 'chips_tube': _chips_tube,
    'soap_bottle': _soap_bottle, 'lesion': _lesion,
}


# --------------------------------------------------------------------------
# scene plumbing
# --------------------------------------------------------------------------
class Scene:
    """The objects of one image while it is drawn.

    Args:
        canvas (Canvas): Where everything is drawn.
        look (Look): The look of the scene.
    """

    def __init__(self, canvas: Canvas, look: Look) -> None:
        self.cv = canvas
        self.look = look
        self.names: List[str] = []
        self.drawn: List[int] = []  # pixels of each object right after drawing
        self.boxes: List[Tuple[float, float, float, float]] = []

    def add(self, name: str, box: Sequence[float], rng: np.random.Generator,
            angle: float = 0.0, flip: bool = False) -> None:
        """Draw object ``name`` in ``box`` (rotated by ``angle``)."""
        if len(self.names) >= 254:
            return
        self.cv.obj = len(self.names) + 1
        size = math.sqrt(max(1.0, (box[2] - box[0]) * (box[3] - box[1])))
        DRAWERS[name](self.cv, frame(box, angle, flip), rng, self.look, size)
        self.cv.obj = 0
        self.names.append(name)
        self.boxes.append(tuple(box))
        self.drawn.append(int(np.count_nonzero(np.asarray(self.cv.mask) == len(self.names))))

    def objects(self) -> List[dict]:
        """Every drawn object: ``name``, ``box`` (tight box of its visible
        pixels, None when nothing is visible), ``visible`` and ``drawn``
        pixel counts."""
        mask = np.asarray(self.cv.mask)
        out = []
        for i, name in enumerate(self.names):
            ys, xs = np.nonzero(mask == i + 1)
            box = None
            if xs.size:
                box = (int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1)
            out.append(dict(name=name, box=box, visible=int(xs.size), drawn=self.drawn[i]))
        return out

    def labelled(self, classes: Sequence[str]) -> List[LabelledObject]:
        """The labels of the objects of ``classes``: see the module doc."""
        out: List[LabelledObject] = []
        for obj in self.objects():
            box = obj['box']
            if obj['name'] not in classes or box is None:
                continue
            if box[2] - box[0] < 2 or box[3] - box[1] < 2:
                continue
            difficult = obj['visible'] < MIN_VISIBLE * max(1, obj['drawn'])
            out.append((obj['name'], box, bool(difficult)))
        return out


def _extent(bw: float, bh: float, angle: float) -> Tuple[float, float]:
    c, s = abs(math.cos(angle)), abs(math.sin(angle))
    return c * bw + s * bh, s * bw + c * bh


def _fits(box: Sequence[float], placed: Sequence[Sequence[float]], max_cover: float) -> bool:
    """Whether ``box`` covers at most ``max_cover`` of every placed box."""
    for other in placed:
        iw = min(box[2], other[2]) - max(box[0], other[0])
        ih = min(box[3], other[3]) - max(box[1], other[1])
        if iw <= 0 or ih <= 0:
            continue
        inter = iw * ih
        area_o = (other[2] - other[0]) * (other[3] - other[1])
        area_b = (box[2] - box[0]) * (box[3] - box[1])
        if inter > max_cover * area_o or inter > 0.6 * area_b:
            return False
    return True


def _place(rng: np.random.Generator, w: int, h: int, name: str, size: float,
           placed: List[Sequence[float]], max_cover: float, angle: float = 0.0,
           region: Optional[Sequence[float]] = None, tries: int = 25
           ) -> Optional[Tuple[float, float, float, float]]:
    """An unrotated box for ``name`` of sqrt-area ``size`` that fits.

    The box's rotated extent lies inside ``region`` (default: the image)
    and covers at most ``max_cover`` of every box already in ``placed``
    (extents, appended on success).
    """
    rx0, ry0, rx1, ry1 = region or (0, 0, w, h)
    aspect = ASPECTS[name] * rng.uniform(0.85, 1.15)
    bw, bh = size * math.sqrt(aspect), size / math.sqrt(aspect)
    ew, eh = _extent(bw, bh, angle)
    for _ in range(tries):
        if ew >= rx1 - rx0 - 2 or eh >= ry1 - ry0 - 2:
            ew, eh, bw, bh = ew * 0.8, eh * 0.8, bw * 0.8, bh * 0.8
            continue
        cx = rng.uniform(rx0 + 1 + ew / 2, rx1 - 1 - ew / 2)
        cy = rng.uniform(ry0 + 1 + eh / 2, ry1 - 1 - eh / 2)
        ext = (cx - ew / 2, cy - eh / 2, cx + ew / 2, cy + eh / 2)
        if _fits(ext, placed, max_cover):
            placed.append(ext)
            return (cx - bw / 2, cy - bh / 2, cx + bw / 2, cy + bh / 2)
    return None


def _value_noise(rng: np.random.Generator, w: int, h: int, cells: int,
                 channels: int = 1) -> np.ndarray:
    """Smooth noise in about ``[-1, 1]``, shape ``(h, w, channels)``."""
    out = np.empty((h, w, channels), np.float32)
    gw, gh = max(2, cells), max(2, int(round(cells * h / max(w, 1))))
    for c in range(channels):
        grid = rng.uniform(-1, 1, size=(gh, gw)).astype(np.float32)
        out[..., c] = np.asarray(Image.fromarray(grid, 'F').resize((w, h), Image.BILINEAR))
    return out


def _to_image(arr: np.ndarray) -> Image.Image:
    return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8))


def _finish(img: Image.Image, rng: np.random.Generator, blur: float, noise: float
            ) -> Image.Image:
    if blur > 0:
        img = img.filter(ImageFilter.GaussianBlur(blur))
    if noise > 0:
        arr = np.asarray(img, np.float32)
        img = _to_image(arr + rng.normal(0, noise, size=arr.shape).astype(np.float32))
    return img


def _image_size(rng: np.random.Generator, look: str) -> Tuple[int, int]:
    (lo, hi), (a0, a1) = IMAGE_SIZES[look]
    long_side = int(rng.integers(lo, hi + 1))
    aspect = math.exp(rng.uniform(math.log(a0), math.log(a1)))
    if aspect >= 1:
        return long_side, max(32, int(round(long_side / aspect)))
    return max(32, int(round(long_side * aspect))), long_side


# --------------------------------------------------------------------------
# scene generators of the looks
# --------------------------------------------------------------------------
def _objects_scene(rng, w, h, k, look, classes, count, size, max_cover,
                   background: Callable) -> Tuple[Image.Image, Scene]:
    """Side-view objects of ``classes`` on a background, with clutter."""
    img = background(rng, w, h, k)
    scene = Scene(Canvas(img), look)
    placed: List[Sequence[float]] = []
    for _ in range(int(rng.integers(count[0], count[1] + 1))):
        name = classes[int(rng.integers(len(classes)))]
        s = rng.uniform(*size) * k
        box = _place(rng, w, h, name, s, placed, max_cover)
        if box is not None:
            scene.add(name, box, rng, flip=bool(rng.integers(2)))
    return img, scene


def _photo_background(rng, w, h, k) -> Image.Image:
    indoor = rng.random() < 0.4
    yy = np.arange(h, dtype=np.float32)[:, None, None] / h
    if indoor:
        wall = np.array(_jit(rng, (190, 175, 150), 40), np.float32)
        floor = np.array(_jit(rng, (120, 90, 60), 30), np.float32)
    else:
        wall = np.array(_jit(rng, (150, 185, 220), 30), np.float32)
        floor = np.array([(90, 130, 60), (140, 115, 80), (110, 110, 100)][int(rng.integers(3))],
                         np.float32)
    horizon = rng.uniform(0.3, 0.65)
    t = np.clip((yy - horizon) * 10 + 0.5, 0, 1)
    arr = wall * (1 - t) + floor * t
    arr = arr + 26 * _value_noise(rng, w, h, 6) + 8 * _value_noise(rng, w, h, 6, 3) \
        + 12 * _value_noise(rng, w, h, 30)
    img = _to_image(arr)
    cv = Canvas(img)
    for _ in range(int(rng.integers(2, 7))):  # rocks, bushes, furniture blobs
        cx, cy = rng.uniform(0, w), rng.uniform(horizon * h, h)
        r = rng.uniform(6, 26) * k
        base = (60, 110, 50) if not indoor else (150, 120, 90)
        cv.poly(_oval(cx - r, cy - r * 0.6, cx + r, cy + r * 0.6, n=12), _jit(rng, base, 35))
    if rng.random() < 0.5:  # a fence or shelf line
        y = rng.uniform(0.2, 0.8) * h
        cv.line([(0, y), (w, y + rng.uniform(-10, 10))], _jit(rng, (160, 140, 110), 30), 2 * k)
    return img


def _foreground_clutter(rng, scene: Scene, w, h, k, color, prob: float) -> None:
    """Posts or branches in front of the objects (they occlude them)."""
    if rng.random() < prob:
        x = rng.uniform(0, w)
        scene.cv.line([(x, 0), (x + rng.uniform(-30, 30) * k, h)], _jit(rng, color, 25),
                      rng.uniform(3, 7) * k)


def _photo(rng, w, h, k, look):
    img, scene = _objects_scene(rng, w, h, k, look, PHOTO_CLASSES, (2, 7), (20, 62), 0.45,
                                _photo_background)
    _foreground_clutter(rng, scene, w, h, k, (90, 70, 50), 0.35)
    return _finish(img, rng, 0.6 * k, 6.0), scene


def _flat_background(rng, w, h, k) -> Image.Image:
    img = Image.new('RGB', (w, h), PASTEL_BACKGROUNDS[int(rng.integers(len(PASTEL_BACKGROUNDS)))])
    cv = Canvas(img)
    for _ in range(int(rng.integers(1, 4))):
        cx, cy, r = rng.uniform(0, w), rng.uniform(0, h), rng.uniform(15, 55) * k
        cv.poly(_oval(cx - r, cy - r, cx + r, cy + r),
                PASTEL_BACKGROUNDS[int(rng.integers(len(PASTEL_BACKGROUNDS)))])
    for _ in range(int(rng.integers(3, 10))):  # confetti
        cx, cy, r = rng.uniform(0, w), rng.uniform(0, h), rng.uniform(2, 5) * k
        cv.poly([(cx, cy - r), (cx + r, cy), (cx, cy + r), (cx - r, cy)],
                FLAT_PALETTE[int(rng.integers(len(FLAT_PALETTE)))])
    return img


def _clipart(rng, w, h, k, look):
    img, scene = _objects_scene(rng, w, h, k, look, MINI_UODB_V2_CLASSES['clipart'], (1, 5),
                                (22, 60), 0.35, _flat_background)
    return img, scene


def _comic_background(rng, w, h, k) -> Image.Image:
    paper = _jit(rng, (250, 245, 225), 8)
    img = Image.new('RGB', (w, h), paper)
    cv = Canvas(img)
    dot = _jit(rng, (230, 180, 170), 20)
    step = max(4, int(round(rng.uniform(5, 8) * k)))
    r = step * rng.uniform(0.15, 0.3)
    for y in range(step // 2, h, step):  # halftone
        off = step // 2 if (y // step) % 2 else 0
        for x in range(off, w, step):
            cv.draw.ellipse([x - r, y - r, x + r, y + r], fill=dot)
    for _ in range(int(rng.integers(0, 5))):  # action lines
        x, y = rng.uniform(0, w), rng.uniform(0, h)
        a = rng.uniform(0, math.pi)
        length = rng.uniform(20, 60) * k
        cv.line([(x, y), (x + length * math.cos(a), y + length * math.sin(a))], (30, 30, 30),
                max(1, k))
    return img


def _comic(rng, w, h, k, look):
    img, scene = _objects_scene(rng, w, h, k, look, MINI_UODB_V2_CLASSES['comic'], (1, 5),
                                (20, 60), 0.35, _comic_background)
    cv = scene.cv
    if rng.random() < 0.7:  # a speech bubble, in front
        bw, bh = rng.uniform(30, 60) * k, rng.uniform(16, 30) * k
        x, y = rng.uniform(0, max(1, w - bw)), rng.uniform(0, max(1, h * 0.4))
        cv.poly(_oval(x, y, x + bw, y + bh), (252, 252, 252), outline=(15, 15, 15),
                width=max(1, int(k)))
        for j in range(2):
            yy = y + bh * (0.38 + 0.25 * j)
            cv.line([(x + bw * 0.2, yy), (x + bw * 0.8, yy)], (60, 60, 60), max(1, k))
    cv.border((15, 15, 15), max(2, int(round(3 * k))))  # the panel frame
    if w > 1.3 * h and rng.random() < 0.6:  # a gutter between two panels
        x = rng.uniform(0.35, 0.65) * w
        cv.line([(x, 0), (x, h)], (250, 250, 250), 4 * k)
    return _finish(img, rng, 0.0, 2.0), scene


def _watercolor_background(rng, w, h, k) -> Image.Image:
    sky = np.array(_jit(rng, (200, 220, 235), 20), np.float32)
    land = np.array(_jit(rng, (200, 215, 170), 25), np.float32)
    yy = np.arange(h, dtype=np.float32)[:, None, None] / h
    t = np.clip((yy - rng.uniform(0.4, 0.7)) * 4 + 0.5, 0, 1)
    arr = sky * (1 - t) + land * t + 14 * _value_noise(rng, w, h, 4) \
        + 6 * _value_noise(rng, w, h, 4, 3)
    img = _to_image(arr)
    cv = Canvas(img)
    for _ in range(int(rng.integers(2, 5))):  # washes
        cx, cy, r = rng.uniform(0, w), rng.uniform(0, h), rng.uniform(20, 60) * k
        c = _clip(0.5 * np.asarray(_jit(rng, (150, 170, 200), 60)) + 0.5 * 235)
        cv.poly(_oval(cx - r, cy - r * 0.5, cx + r, cy + r * 0.5, n=14), c)
    return img


def _watercolor(rng, w, h, k, look):
    img, scene = _objects_scene(rng, w, h, k, look, MINI_UODB_V2_CLASSES['watercolor'], (1, 4),
                                (22, 64), 0.35, _watercolor_background)
    img = _finish(img, rng, 1.3 * k, 0.0)
    grain = 1 + 0.06 * _value_noise(rng, w, h, int(w / 3), 1)
    return _to_image(np.asarray(img, np.float32) * grain), scene


def _street(rng, w, h, k, look):
    horizon = h * rng.uniform(0.35, 0.5)
    yy = np.arange(h, dtype=np.float32)[:, None, None]
    sky = np.array(_jit(rng, (170, 195, 225), 25), np.float32)
    road = np.array(_jit(rng, (85, 85, 90), 12), np.float32)
    arr = np.where(yy < horizon, sky, road) + 14 * _value_noise(rng, w, h, 12, 3)
    img = _to_image(np.broadcast_to(arr, (h, w, 3)))
    scene = Scene(Canvas(img), look)
    cv = scene.cv
    x = 0.0
    while x < w:  # buildings and trees on the horizon
        bw, bh = rng.uniform(14, 40) * k, rng.uniform(8, horizon * 0.9)
        color = _jit(rng, (130, 120, 115), 35) if rng.random() < 0.7 else _jit(rng, (60, 110, 50),
                                                                                20)
        cv.poly([(x, horizon - bh), (x + bw, horizon - bh), (x + bw, horizon), (x, horizon)],
                color)
        x += bw + rng.uniform(0, 10) * k
    vx = w * rng.uniform(0.35, 0.65)  # lane lines to the vanishing point
    for end in (0.1, 0.5, 0.9):
        cv.line([(vx, horizon), (w * end, h)], (230, 230, 210), max(1, 1.5 * k))
    for _ in range(int(rng.integers(0, 3))):  # shop boards (not traffic signs)
        bx, by = rng.uniform(0, w - 20 * k), rng.uniform(horizon * 0.3, horizon * 0.9)
        cv.poly([(bx, by), (bx + rng.uniform(12, 24) * k, by),
                 (bx + rng.uniform(12, 24) * k, by + 6 * k), (bx, by + 6 * k)],
                _jit(rng, (40, 120, 160), 60))

    def perspective(y_bottom: float) -> float:
        return 0.35 + 0.65 * (y_bottom - horizon) / max(1.0, h - horizon)

    placed: List[Sequence[float]] = []
    movers = []
    for _ in range(int(rng.integers(1, 5))):  # cars, pedestrians, cyclists
        name = STREET_CLASSES[int(rng.choice(3, p=[0.55, 0.28, 0.17]))]
        yb = rng.uniform(horizon + 0.15 * (h - horizon), h - 1)
        s = rng.uniform(*{'car': (22, 42), 'pedestrian': (12, 24), 'cyclist': (14, 28)}[name])
        s *= k * perspective(yb)
        region = (0, max(0.0, yb - 4 * s), w, yb)
        box = _place(rng, w, h, name, s, placed, 0.4, region=region)
        if box is not None:
            movers.append((box[3], name, box, bool(rng.integers(2))))
    signs = []
    for _ in range(int(rng.integers(1, 3))):  # traffic signs on poles
        name = SIGN_CLASSES[int(rng.integers(len(SIGN_CLASSES)))]
        yb = rng.uniform(horizon + 0.1 * (h - horizon), h - 1)  # foot of the pole
        s = rng.uniform(9, 16) * k * perspective(yb)
        top = max(0.0, yb - 5 * s)
        box = _place(rng, w, h, name, s, placed, 0.2, region=(0, top, w, max(top + 3 * s,
                                                                               yb - 2 * s)))
        if box is not None:
            signs.append((name, box, yb))
    for name, box, yb in signs:  # poles behind everything, then signs
        cx = (box[0] + box[2]) / 2
        cv.line([(cx, box[3]), (cx, yb)], (120, 120, 120), max(1, 0.12 * (box[2] - box[0])))
    for name, box, _ in signs:
        scene.add(name, box, rng)
    for _, name, box, flip in sorted(movers, key=lambda m: m[0]):  # far to near
        scene.add(name, box, rng, flip=flip)
    return _finish(img, rng, 0.5 * k, 5.0), scene


def _aerial(rng, w, h, k, look):
    base = np.array(_jit(rng, (110, 122, 95), 15), np.float32)
    arr = base + 22 * _value_noise(rng, w, h, 8, 3) + 9 * _value_noise(rng, w, h, 40, 3)
    img = _to_image(arr)
    scene = Scene(Canvas(img), look)
    cv = scene.cv
    for _ in range(int(rng.integers(1, 4))):  # fields
        x, y = rng.uniform(0, w), rng.uniform(0, h)
        fw, fh = rng.uniform(30, 90) * k, rng.uniform(30, 90) * k
        cv.poly([(x, y), (x + fw, y), (x + fw, y + fh), (x, y + fh)],
                _jit(rng, (150, 140, 90), 30))
    water = rng.random() < 0.5
    if water:
        x, y = rng.uniform(0, w * 0.5), rng.uniform(0, h * 0.5)
        cv.poly(_oval(x, y, x + rng.uniform(60, 130) * k, y + rng.uniform(50, 110) * k, n=18),
                _jit(rng, (45, 75, 120), 10))
    for _ in range(int(rng.integers(1, 4))):  # roads
        width = rng.uniform(6, 12) * k
        if rng.random() < 0.5:
            y = rng.uniform(0, h)
            cv.line([(0, y), (w, y + rng.uniform(-40, 40))], (90, 90, 95), width)
        else:
            x = rng.uniform(0, w)
            cv.line([(x, 0), (x + rng.uniform(-40, 40), h)], (90, 90, 95), width)
    for _ in range(int(rng.integers(2, 9))):  # buildings and trees
        x, y = rng.uniform(0, w), rng.uniform(0, h)
        if rng.random() < 0.5:
            bw, bh = rng.uniform(10, 24) * k, rng.uniform(10, 24) * k
            cv.poly([(x, y), (x + bw, y), (x + bw, y + bh), (x, y + bh)],
                    _jit(rng, (150, 130, 120), 30))
        else:
            r = rng.uniform(3, 8) * k
            cv.poly(_oval(x - r, y - r, x + r, y + r, n=10), _jit(rng, (40, 80, 35), 15))
    placed: List[Sequence[float]] = []
    names = MINI_UODB_V2_CLASSES['aerial']
    for _ in range(int(rng.integers(5, 18))):
        name = names[int(rng.choice(4, p=[0.2, 0.2, 0.45, 0.15]))]
        s = rng.uniform(*{'plane': (12, 22), 'ship': (8, 16), 'small-vehicle': (5, 9),
                          'storage-tank': (8, 15)}[name]) * k
        angle = 0.0 if name == 'storage-tank' else rng.uniform(0, math.pi)
        box = _place(rng, w, h, name, s, placed, 0.1, angle=angle)
        if box is not None:
            scene.add(name, box, rng, angle=angle)
    return _finish(img, rng, 0.0, 5.0), scene


def _crowd(rng, w, h, k, look):
    top = np.array(_jit(rng, (120, 110, 100), 40), np.float32)
    yy = np.arange(h, dtype=np.float32)[:, None, None] / h
    arr = top * (1 - 0.3 * yy) + 20 * _value_noise(rng, w, h, 10, 3)
    img = _to_image(np.broadcast_to(arr, (h, w, 3)))
    scene = Scene(Canvas(img), look)
    cv = scene.cv
    rows = int(rng.integers(2, 5))
    for r in range(rows):  # back (small, high) to front (large, low)
        t = (r + 1) / rows
        face = rng.uniform(7, 11) * k * (0.6 + 0.8 * t)
        y = h * (0.15 + 0.7 * t * rng.uniform(0.85, 1.0))
        x = rng.uniform(-0.5, 0.5) * face
        while x < w:
            fw, fh = face * 0.8, face
            cx = x + fw / 2
            body = _jit(rng, (110, 90, 110), 100)
            cv.poly(_oval(cx - fw * 1.3, y + fh * 0.8, cx + fw * 1.3, y + fh * 3.2, n=14), body)
            hair = _jit(rng, (50, 35, 25), 25)
            if rng.random() < 0.15:  # seen from behind: hair only, no face
                cv.poly(_oval(cx - fw / 2, y, cx + fw / 2, y + fh, n=14), hair)
            else:
                cv.poly(_oval(cx - fw * 0.55, y - fh * 0.12, cx + fw * 0.55, y + fh * 0.6, n=14),
                        hair)
                scene.add('face', (cx - fw / 2, y, cx + fw / 2, y + fh), rng)
            x += fw * rng.uniform(1.1, 2.4)
    return _finish(img, rng, 0.5 * k, 6.0), scene


def _kitchen(rng, w, h, k, look):
    wall = np.array(_jit(rng, (225, 220, 205), 20), np.float32)
    arr = wall + 8 * _value_noise(rng, w, h, 20, 3)
    img = _to_image(np.broadcast_to(arr, (h, w, 3)))
    scene = Scene(Canvas(img), look)
    cv = scene.cv
    tile = max(8, int(round(rng.uniform(10, 18) * k)))
    for x in range(0, w, tile):  # tile grout
        cv.line([(x, 0), (x, h)], _jit(rng, (200, 195, 185), 5), 1)
    shelves = sorted(rng.uniform(0.35, 1.0, size=int(rng.integers(1, 3))) * h)
    names = MINI_UODB_V2_CLASSES['kitchen']
    placed: List[Sequence[float]] = []
    for sy in shelves:
        cv.poly([(0, sy - 3 * k), (w, sy - 3 * k), (w, sy + 2 * k), (0, sy + 2 * k)],
                _jit(rng, (140, 100, 60), 25))
        if rng.random() < 0.5:  # a plate or a towel (clutter)
            px = rng.uniform(0, w)
            cv.poly(_oval(px, sy - 12 * k, px + 28 * k, sy - 3 * k),
                    _jit(rng, (240, 240, 240), 10))
        x = rng.uniform(0, 15) * k
        while x < w:
            name = names[int(rng.integers(len(names)))]
            s = rng.uniform(18, 40) * k
            aspect = ASPECTS[name] * rng.uniform(0.9, 1.1)
            bw, bh = s * math.sqrt(aspect), s / math.sqrt(aspect)
            if x + bw >= w or sy - 3 * k - bh < 0:
                break
            box = (x, sy - 3 * k - bh, x + bw, sy - 3 * k)
            if _fits(box, placed, 0.4):
                placed.append(box)
                scene.add(name, box, rng)
            x += bw * rng.uniform(0.6, 1.6)
    return _finish(img, rng, 0.5 * k, 4.0), scene


def _medical(rng, w, h, k, look):
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    cx, cy = w / 2, h / 2 + rng.uniform(-4, 4) * k
    ax, ay = w * rng.uniform(0.42, 0.48), h * rng.uniform(0.36, 0.44)
    body = ((xx - cx) / ax)**2 + ((yy - cy) / ay)**2 <= 1
    arr = np.zeros((h, w), np.float32)
    tissue = rng.uniform(85, 120) + 16 * _value_noise(rng, w, h, 8)[..., 0]
    arr[body] = tissue[body]
    for _ in range(int(rng.integers(1, 4))):  # organs
        ox, oy = rng.uniform(0.3, 0.7) * w, rng.uniform(0.3, 0.6) * h
        rx, ry = rng.uniform(8, 20) * k, rng.uniform(6, 15) * k
        organ = ((xx - ox) / rx)**2 + ((yy - oy) / ry)**2 <= 1
        arr[organ & body] = rng.uniform(45, 75)
    spine = (xx - cx)**2 + (yy - (cy + ay * 0.75))**2 <= (rng.uniform(5, 8) * k)**2
    arr[spine] = 210
    for _ in range(int(rng.integers(0, 5))):  # vessels: small bright look-alikes
        vx, vy = rng.uniform(0.3, 0.7) * w, rng.uniform(0.3, 0.7) * h
        r = rng.uniform(1.2, 2.5) * k
        arr[(xx - vx)**2 + (yy - vy)**2 <= r * r] += rng.uniform(60, 100)
    scene = Scene(Canvas(Image.new('RGB', (w, h))), look)  # the mask only
    placed: List[Sequence[float]] = []
    count = int(rng.integers(1, 4))
    for _ in range(30):  # lesions inside the body
        if len(scene.names) >= count:
            break
        box = _place(rng, w, h, 'lesion', rng.uniform(7, 18) * k, placed, 0.0, tries=1)
        if box is None:
            continue
        lx, ly = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
        if ((lx - cx) / (ax * 0.85))**2 + ((ly - cy) / (ay * 0.85))**2 > 1:
            placed.pop()
            continue
        rx, ry = (box[2] - box[0]) / 2, (box[3] - box[1]) / 2
        d2 = ((xx + 0.5 - lx) / rx)**2 + ((yy + 0.5 - ly) / ry)**2
        arr += rng.uniform(45, 80) * np.sqrt(np.clip(1 - d2, 0, 1))
        scene.add('lesion', box, rng)
    arr += rng.normal(0, 5, size=(h, w))
    img = Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8), 'L')
    return img.filter(ImageFilter.GaussianBlur(0.4 * k)), scene


SCENES: Dict[str, Callable] = {
    'photo': _photo, 'clipart': _clipart, 'comic': _comic,
    'watercolor': _watercolor, 'street': _street, 'aerial': _aerial,
    'crowd': _crowd, 'kitchen': _kitchen, 'medical': _medical,
}


def draw_scene(domain: str, seed: int, split_index: int,
               image_index: int) -> Tuple[Image.Image, Scene]:
    """Draw one image of a mini-UODB v2 domain and keep its scene.

    Args:
        domain (str): A name of ``MINI_UODB_V2_DATASETS``.
        seed (int): The dataset seed.
        split_index (int): 0 for the train split, 1 for the test split.
        image_index (int): Index of the image in its split.

    Returns:
        tuple: The PIL image (RGB, or L for ``medical``) and its
        :class:`Scene`, which holds every drawn object, labelled or not
        (:meth:`Scene.objects`).
    """
    if domain not in MINI_UODB_V2_LOOKS:
        raise ValueError(f'unknown mini-UODB v2 domain {domain!r}, expected one of '
                         f'{MINI_UODB_V2_DATASETS}')
    d = MINI_UODB_V2_DATASETS.index(domain)
    look_name = MINI_UODB_V2_LOOKS[domain]
    # domains of one look share the whole random stream but for the domain
    # index in the seed, so their images follow one distribution
    rng = np.random.default_rng([seed, VERSION_TAG, d, split_index, image_index])
    w, h = _image_size(rng, look_name)
    k = max(w, h) / MODEL_SIDE
    return SCENES[look_name](rng, w, h, k, Look(look_name, k))


def draw_image(domain: str, seed: int, split_index: int,
               image_index: int) -> Tuple[Image.Image, List[LabelledObject]]:
    """Draw one image of a mini-UODB v2 domain with its labels.

    Args:
        domain, seed, split_index, image_index: As :func:`draw_scene`.

    Returns:
        tuple: The PIL image (RGB, or L for ``medical``) and its labelled
        objects ``(class, (x0, y0, x1, y1), difficult)`` with exclusive
        ``x1``, ``y1``: the tight box of the object's visible pixels. Objects
        of classes the domain does not label stay in the image, unlabelled.
    """
    img, scene = draw_scene(domain, seed, split_index, image_index)
    return img, scene.labelled(MINI_UODB_V2_CLASSES[domain])


__all__ = [
    'draw_image', 'draw_scene', 'Scene', 'SCENES', 'DRAWERS', 'IMAGE_SIZES', 'Canvas', 'Look',
    'frame'
]
