# Copyright (c) mmgem contributors. All rights reserved.
"""What every UODB importer shares: counts, the COCO writer, image checks.

These modules use only the standard library, Pillow and numpy (no torch, no
mmdet of their own), so converting needs no model.

Conventions of every importer:

- Boxes are continuous ``x1, y1, x2, y2`` pixel coordinates; the COCO box
  is ``[x1, y1, x2 - x1, y2 - y1]``. Each importer documents how its native
  format maps to them (VOC's 1-based corners lose 1 as in mmdet's
  ``XMLDataset``).
- Broken boxes are skipped and counted, never fatal: zero or negative width
  or height (``zero_area``) and boxes with no area inside the image
  (``outside``); boxes that stick out are clipped (``clipped``).
- Class names are compared lower-cased and stripped. A name that is not in
  the dataset's class list (after the dataset's name map and ignore list) is
  an error naming the file and the name, or is dropped and counted with
  ``drop_unknown=True``.
- The image file is the truth: its real size (as mmcv's loader sees it,
  EXIF orientation applied) wins over a size written in the annotation, and
  the file found on disk wins over a written file name; each disagreement
  is counted (``size_fixed``, ``filename_fixed``) and reported.
- A bad sample (unreadable annotation, missing or unreadable image, unknown
  class) raises :class:`SampleError` naming the file; with ``skip_bad`` the
  importer skips that image instead and counts it by reason.
- Annotations are not trusted with paths: every path read from one (an
  image name, an image id of a split list) goes through
  :func:`confined_path`, which refuses absolute paths, ``..`` components and
  paths whose symlinks resolve outside the folder they are relative to
  (:class:`UnsafePathError`, naming the annotation file, the field and the
  value; skipped and counted as ``unsafe path`` with ``skip_bad``). Outputs
  are only written inside the output folder being staged
  (:class:`ImageLinker` refuses anything else).
"""
import json
import os
import os.path as osp
import re
import shutil
from collections import Counter
from dataclasses import dataclass, field
from typing import Dict, Iterable, List, Mapping, Optional, Sequence, Tuple

from mmgem.utils import atomic_write

IMAGE_EXTENSIONS = ('.jpg', '.jpeg', '.png', '.bmp')

#: How many examples of each kind of warning a summary keeps.
MAX_EXAMPLES = 5


class SampleError(ValueError):
    """A bad sample (one image or annotation); the message names its file.

    Args:
        message (str): What is wrong, starting with the file.
        reason (str): A short key for the summary's counts, e.g.
            ``'missing image'``.
    """

    def __init__(self, message: str, reason: str = 'bad sample') -> None:
        super().__init__(message)
        self.reason = reason


class MissingImageError(SampleError, FileNotFoundError):
    """An image file that does not exist (a :class:`SampleError` that is
    also a ``FileNotFoundError``)."""

    def __init__(self, message: str) -> None:
        super().__init__(message, reason='missing image')


class UnsafePathError(SampleError):
    """A path read from an annotation that would leave its folder (absolute,
    with ``..``, or a symlink resolving outside); the message names the
    annotation file, the field and the value."""

    def __init__(self, message: str) -> None:
        super().__init__(message, reason='unsafe path')


def _inside(path: str, folder: str) -> bool:
    return path == folder or path.startswith(folder.rstrip(os.sep) + os.sep)


def confined_path(base: Optional[str], value: str, where: str, field: str) -> str:
    """Check that a path read from an annotation stays inside ``base``.

    This is the one check every importer applies to the paths its
    annotations give (image file names, image ids of split lists, ...).
    Refused: an empty value, a NUL byte, an absolute path (POSIX, UNC or a
    drive letter), any ``..`` component, and, when ``base`` is given, a path
    whose existing part resolves (through symlinks) outside the resolved
    ``base``.

    Args:
        base (str, optional): The folder ``value`` is relative to; None for
            the lexical checks only (nothing on disk is looked at).
        value (str): The path as written in the annotation.
        where (str): The annotation file (and line), for the message.
        field (str): The field it was read from, e.g. ``'<filename>'``.

    Returns:
        str: ``value``, unchanged.

    Raises:
        UnsafePathError: If the path would leave ``base``.
    """
    problem = None
    if not isinstance(value, str) or not value.strip():
        problem = 'empty'
    elif '\x00' in value:
        problem = 'a path with a NUL byte'
    elif osp.isabs(value) or value.startswith(('/', '\\')) or re.match(r'^[A-Za-z]:', value):
        problem = 'an absolute path'
    elif '..' in re.split(r'[/\\]', value):
        problem = "a path with a '..' component"
    elif base is not None:
        real_base = osp.realpath(base)
        real = osp.realpath(osp.join(base, value))
        if not _inside(real, real_base):
            problem = f'a link that resolves to {real}, outside {real_base}'
    if problem:
        inside = f' {base}' if base is not None else ' its dataset folder'
        raise UnsafePathError(
            f'{where}: {field} {value!r} is {problem}; paths read from an annotation must '
            f'stay inside{inside}')
    return value


@dataclass
class ConversionStats:
    """What a conversion kept, fixed and dropped.

    Attributes:
        dataset (str): Dataset name.
        split (str): Split name.
        out_file (str): The written COCO JSON file (its final path).
        source (str): What was read, e.g. ``'VOC2007+VOC2012 devkits'``.
        split_rule (str): How the split was made.
        images (int): Images written.
        annotations (int): Boxes written.
        difficult (int): Boxes written with ``iscrowd=1``.
        clipped (int): Boxes clipped to the image.
        zero_area (int): Boxes skipped for zero or negative width/height.
        outside (int): Boxes skipped for lying outside the image.
        size_fixed (int): Images whose written size differed from the image
            file (the file's size was used).
        filename_fixed (int): Images whose written file name differed from
            the file found on disk (the found file was used).
        mapped (Counter): Names folded into a class, e.g. ``{'van': 3}``.
        ignored (Counter): Names whose boxes were dropped on purpose (the
            dataset's ignore list, or unknown names with ``drop_unknown``).
        skipped_images (Counter): Images skipped with ``skip_bad``, by
            reason.
        notes (Counter): Dataset-specific counts (e.g. DOTA's cut objects).
        examples (dict[str, list[str]]): A few messages per kind of warning
            or skip.
    """
    dataset: str
    split: str
    out_file: str = ''
    source: str = ''
    split_rule: str = ''
    images: int = 0
    annotations: int = 0
    difficult: int = 0
    clipped: int = 0
    zero_area: int = 0
    outside: int = 0
    size_fixed: int = 0
    filename_fixed: int = 0
    mapped: Counter = field(default_factory=Counter)
    ignored: Counter = field(default_factory=Counter)
    skipped_images: Counter = field(default_factory=Counter)
    notes: Counter = field(default_factory=Counter)
    examples: Dict[str, List[str]] = field(default_factory=dict)

    @property
    def skipped(self) -> int:
        """int: Broken boxes skipped (zero area or outside the image)."""
        return self.zero_area + self.outside

    def example(self, kind: str, message: str) -> None:
        """Keep an example message of a kind of warning (at most a few).

        Args:
            kind (str): The kind, e.g. ``'size_fixed'``.
            message (str): The message.
        """
        kept = self.examples.setdefault(kind, [])
        if len(kept) < MAX_EXAMPLES:
            kept.append(message)


def image_size(path: str) -> Tuple[int, int]:
    """Width and height of an image as mmcv's loader will see it.

    mmcv decodes with OpenCV, which applies the EXIF orientation, so an
    image whose orientation tag rotates it by 90 degrees has its stored width
    and height swapped.

    Args:
        path (str): The image file.

    Returns:
        tuple[int, int]: ``(width, height)``.

    Raises:
        MissingImageError: If it does not exist.
        SampleError: If it cannot be read as an image (the message names
            it).
    """
    from PIL import Image, UnidentifiedImageError
    if not osp.isfile(path):
        raise MissingImageError(f'image not found: {path}')
    try:
        with Image.open(path) as img:
            width, height = img.size
            try:
                orientation = img.getexif().get(0x0112, 1)
            except Exception:  # malformed EXIF: the decoder ignores it too
                orientation = 1
    except (UnidentifiedImageError, OSError, SyntaxError) as err:
        raise SampleError(f'{path}: cannot read the image ({err})',
                          reason='unreadable image') from None
    if orientation in (5, 6, 7, 8):
        width, height = height, width
    return width, height


def find_image(img_dir: str, stem: str,
               filename: Optional[str] = None, where: str = '') -> Optional[str]:
    """The file of an image: ``<stem>.<ext>`` first, then ``filename``.

    The annotation's own name (its stem) identifies the image, as mmdet's
    ``XMLDataset`` does; a written ``filename`` is only a fallback, so an
    annotation that names another image cannot make two entries of it.
    Both must stay inside ``img_dir`` (:func:`confined_path`).

    Args:
        img_dir (str): The image folder.
        stem (str): The annotation's stem.
        filename (str, optional): The file name written in the annotation.
        where (str): The annotation file, for messages.

    Returns:
        str | None: The file name relative to ``img_dir``, or None.

    Raises:
        UnsafePathError: If ``stem``, ``filename`` or the file found would
            leave ``img_dir``.
    """
    confined_path(img_dir, stem, where, 'image id')
    if filename:
        confined_path(img_dir, filename, where, '<filename>')
    candidates = [stem + ext for ext in IMAGE_EXTENSIONS]
    if filename and osp.splitext(filename)[0] == stem:
        candidates.insert(0, filename)  # its own image, written extension
    elif filename:
        candidates.append(filename)
    for cand in candidates:
        if osp.isfile(osp.join(img_dir, cand)):
            return confined_path(img_dir, cand, where, 'image file')
    return None


def clip_box(x1: float, y1: float, x2: float, y2: float, width: int,
             height: int) -> Tuple[str, Tuple[float, float, float, float]]:
    """Classify and clip an ``x1y1x2y2`` box (continuous coordinates).

    Args:
        x1 (float): Left.
        y1 (float): Top.
        x2 (float): Right.
        y2 (float): Bottom.
        width (int): Image width.
        height (int): Image height.

    Returns:
        tuple[str, tuple]: ``'ok'``, ``'clipped'``, ``'zero_area'`` or
        ``'outside'``, and the (clipped) box.
    """
    if not x2 > x1 or not y2 > y1:
        return 'zero_area', (x1, y1, x2, y2)
    cx1, cy1 = max(x1, 0.), max(y1, 0.)
    cx2, cy2 = min(x2, float(width)), min(y2, float(height))
    if cx2 <= cx1 or cy2 <= cy1:
        return 'outside', (x1, y1, x2, y2)
    if (cx1, cy1, cx2, cy2) != (x1, y1, x2, y2):
        return 'clipped', (cx1, cy1, cx2, cy2)
    return 'ok', (x1, y1, x2, y2)


def number_out(value: float):
    """Write integral floats as ints so the JSON stays compact.

    Args:
        value (float): A number.

    Returns:
        int | float: ``int`` if integral, else rounded to 3 decimals.
    """
    return int(value) if float(value).is_integer() else round(float(value), 3)


class ClassMap:
    """Maps native class names to a dataset's categories.

    Args:
        dataset (str): Dataset name (for messages).
        classes (Sequence[str]): The dataset's classes in label order; they
            become categories ``1..C``.
        name_map (Mapping[str, str], optional): Native names folded into a
            class, e.g. ``{'van': 'car'}``.
        ignored_names (Iterable[str]): Native names whose boxes are dropped
            and counted.
        drop_unknown (bool): Drop (and count) names that are neither classes
            nor mapped nor ignored, instead of failing.
    """

    def __init__(self,
                 dataset: str,
                 classes: Sequence[str],
                 name_map: Optional[Mapping[str, str]] = None,
                 ignored_names: Iterable[str] = (),
                 drop_unknown: bool = False) -> None:
        self.dataset = dataset
        self.classes = tuple(c.lower().strip() for c in classes)
        if len(set(self.classes)) != len(self.classes):
            raise ValueError(f'{dataset}: duplicate class names in {self.classes}')
        self.cat_ids = {name: i + 1 for i, name in enumerate(self.classes)}
        self.name_map = {k.lower().strip(): v.lower().strip()
                         for k, v in (name_map or {}).items()}
        self.ignored = {n.lower().strip() for n in ignored_names}
        self.drop_unknown = drop_unknown
        for src, dst in self.name_map.items():
            if dst not in self.cat_ids:
                raise ValueError(
                    f'{dataset}: name map sends {src!r} to {dst!r}, which is not one of '
                    f'its classes {self.classes}')

    def categories(self) -> List[dict]:
        """list[dict]: COCO categories ``1..C`` in class order."""
        return [dict(id=self.cat_ids[c], name=c, supercategory=self.dataset)
                for c in self.classes]

    def lookup(self, name: str, where: str,
               stats: ConversionStats) -> Optional[int]:
        """The category id of a native name, or None to drop the box.

        Args:
            name (str): The native name.
            where (str): The file (and line) it comes from, for messages.
            stats (ConversionStats): Counts ``mapped`` / ``ignored``.

        Returns:
            int | None: The category id, or None for a dropped name.

        Raises:
            SampleError: An unknown name (without ``drop_unknown``).
        """
        key = name.lower().strip()
        if key in self.ignored:
            stats.ignored[key] += 1
            return None
        if key in self.name_map:
            stats.mapped[key] += 1
            key = self.name_map[key]
        if key not in self.cat_ids:
            if self.drop_unknown:
                stats.ignored[key] += 1
                return None
            raise SampleError(
                f'{where}: class {name!r} is not in the class list of {self.dataset!r} '
                f'{self.classes}', reason='unknown class')
        return self.cat_ids[key]


class CocoBuilder:
    """Collects the images and boxes of one split and writes its COCO JSON.

    Args:
        stats (ConversionStats): Counts of this split (filled in).
        class_map (ClassMap): The dataset's classes.
    """

    def __init__(self, stats: ConversionStats, class_map: ClassMap) -> None:
        self.stats = stats
        self.class_map = class_map
        self.images: List[dict] = []
        self.annotations: List[dict] = []
        self._files: Dict[str, str] = {}

    def add_image(self, file_name: str, width: int, height: int, source: str,
                  image_id: Optional[int] = None) -> int:
        """Add an image.

        Args:
            file_name (str): Its path relative to the dataset's image folder.
            width (int): Real width.
            height (int): Real height.
            source (str): The annotation it comes from (for messages).
            image_id (int, optional): Its id; defaults to the next 1-based
                number.

        Returns:
            int: The image id.

        Raises:
            ValueError: If another annotation already gave this image (both
                files are named).
        """
        if file_name in self._files:
            raise SampleError(
                f'{source}: image {file_name} is already the image of '
                f'{self._files[file_name]}', reason='duplicate image')
        self._files[file_name] = source
        image_id = len(self.images) + 1 if image_id is None else int(image_id)
        self.images.append(dict(id=image_id, file_name=file_name, width=int(width),
                                height=int(height)))
        self.stats.images += 1
        return image_id

    def add_box(self, image_id: int, category_id: int, box: Sequence[float], width: int,
                height: int, difficult: bool = False, ann_id: Optional[int] = None,
                area: Optional[float] = None) -> bool:
        """Add a box, clipped to the image (broken boxes are counted).

        Args:
            image_id (int): Its image.
            category_id (int): Its category.
            box (Sequence[float]): ``x1, y1, x2, y2``.
            width (int): Image width.
            height (int): Image height.
            difficult (bool): Written as ``iscrowd=1``.
            ann_id (int, optional): Its id; defaults to the next number.
            area (float, optional): Its area; defaults to the box area.

        Returns:
            bool: Whether the box was kept.
        """
        status, (x1, y1, x2, y2) = clip_box(*[float(v) for v in box], width, height)
        if status in ('zero_area', 'outside'):
            setattr(self.stats, status, getattr(self.stats, status) + 1)
            return False
        if status == 'clipped':
            self.stats.clipped += 1
        w, h = x2 - x1, y2 - y1
        self.annotations.append(
            dict(id=len(self.annotations) + 1 if ann_id is None else int(ann_id),
                 image_id=image_id,
                 category_id=int(category_id),
                 bbox=[number_out(v) for v in (x1, y1, w, h)],
                 area=number_out(w * h if area is None else area),
                 iscrowd=int(bool(difficult))))
        self.stats.annotations += 1
        self.stats.difficult += int(bool(difficult))
        return True

    def drop_image(self, image_id: int) -> None:
        """Remove an image added last, with its boxes (a bad sample found
        after it was added).

        Args:
            image_id (int): The image.
        """
        img = self.images[-1]
        if img['id'] != image_id:
            raise RuntimeError('CocoBuilder.drop_image: only the last image can be dropped')
        self.images.pop()
        del self._files[img['file_name']]
        self.stats.images -= 1
        while self.annotations and self.annotations[-1]['image_id'] == image_id:
            ann = self.annotations.pop()
            self.stats.annotations -= 1
            self.stats.difficult -= ann['iscrowd']

    def to_dict(self, description: str, categories: Optional[List[dict]] = None) -> dict:
        """The COCO content.

        Args:
            description (str): The info's description.
            categories (list[dict], optional): Categories; defaults to the
                class map's.

        Returns:
            dict: ``info``, ``images``, ``annotations``, ``categories``.
        """
        return dict(
            info=dict(description=description, dataset=self.stats.dataset,
                      split=self.stats.split, source=self.stats.source,
                      split_rule=self.stats.split_rule),
            images=self.images,
            annotations=self.annotations,
            categories=categories or self.class_map.categories())

    def write_split(self, out_dir: str, origin: str) -> None:
        """Write ``<out_dir>/annotations/<split>.json``.

        Args:
            out_dir (str): The dataset's output folder (being written).
            origin (str): What it was converted from, for the description.
        """
        self.write(osp.join(out_dir, 'annotations', f'{self.stats.split}.json'),
                   f'UODB {self.stats.dataset} {self.stats.split} from {origin}, converted by '
                   'mmgem')

    def write(self, path: str, description: str,
              categories: Optional[List[dict]] = None) -> None:
        """Write the COCO JSON (atomically, deterministic bytes).

        Args:
            path (str): Where to write.
            description (str): The info's description.
            categories (list[dict], optional): See :meth:`to_dict`.
        """
        if not self.images:
            raise ValueError(f'{self.stats.dataset} {self.stats.split}: no image to write '
                             '(empty split)')
        dump_json_atomic(self.to_dict(description, categories), path)


def split_builder(dataset: str, split: str, final_dir: str, class_map: ClassMap, source: str,
                  split_rule: str) -> CocoBuilder:
    """A :class:`CocoBuilder` for one split of a native import.

    Args:
        dataset (str): Dataset name.
        split (str): Split name.
        final_dir (str): Where the dataset's output folder ends up (the
            stats' ``out_file`` is ``<final_dir>/annotations/<split>.json``).
        class_map (ClassMap): The dataset's classes.
        source (str): What is read.
        split_rule (str): How the split is made.

    Returns:
        CocoBuilder: The builder, with fresh stats.
    """
    stats = ConversionStats(dataset=dataset, split=split,
                            out_file=osp.join(final_dir, 'annotations', f'{split}.json'),
                            source=source, split_rule=split_rule)
    return CocoBuilder(stats, class_map)


def dump_json_atomic(obj: object, out_file: str) -> None:
    """Write JSON to ``out_file`` through a temporary file and a rename.

    Args:
        obj (object): JSON-serialisable content.
        out_file (str): Destination; its folder is created if needed.
    """
    atomic_write(out_file, json.dumps(obj, separators=(',', ':')))


def skip_or_raise(err: SampleError, skip_bad: bool, stats: ConversionStats) -> None:
    """Count a bad sample with ``skip_bad``, else raise it.

    Args:
        err (SampleError): The bad sample.
        skip_bad (bool): Skip instead of failing.
        stats (ConversionStats): Where the skip is counted.
    """
    if not skip_bad:
        raise err
    stats.skipped_images[err.reason] += 1
    stats.example('skipped', str(err))


def check_size(stats: ConversionStats, where: str, written: Tuple[int, int],
               real: Tuple[int, int]) -> Tuple[int, int]:
    """Compare a written image size with the real one (the real one wins).

    Args:
        stats (ConversionStats): Counts ``size_fixed``.
        where (str): The annotation file, for the warning.
        written (tuple[int, int]): ``(width, height)`` from the annotation;
            zeros mean "not written".
        real (tuple[int, int]): ``(width, height)`` of the image file.

    Returns:
        tuple[int, int]: The real size.
    """
    if written[0] > 0 and written[1] > 0 and tuple(written) != tuple(real):
        stats.size_fixed += 1
        stats.example('size_fixed', f'{where}: size {written[0]}x{written[1]} written, '
                      f'image is {real[0]}x{real[1]}; using the image')
    return tuple(real)


class ImageLinker:
    """Puts native images into a dataset's ``JPEGImages/`` output folder.

    Args:
        out_dir (str): The folder being written (in the staging area).
        final_dir (str): Where that folder will be after the commit
            (relative symlinks are computed against it).
        mode (str): ``'symlink'`` (relative links, default), ``'hardlink'``
            or ``'copy'``.
    """

    MODES = ('symlink', 'hardlink', 'copy')

    @classmethod
    def for_dataset(cls, out_dir: str, final_dir: str, mode: str = 'symlink') -> 'ImageLinker':
        """The linker of a dataset's ``JPEGImages/``.

        Args:
            out_dir (str): The dataset's output folder being written.
            final_dir (str): Where it ends up.
            mode (str): See the class.

        Returns:
            ImageLinker: Writing ``<out_dir>/JPEGImages``.
        """
        return cls(osp.join(out_dir, 'JPEGImages'), osp.join(final_dir, 'JPEGImages'), mode)

    def __init__(self, out_dir: str, final_dir: str, mode: str = 'symlink') -> None:
        if mode not in self.MODES:
            raise ValueError(f'link mode must be one of {self.MODES}, got {mode!r}')
        self.out_dir = out_dir
        self.final_dir = final_dir
        self.mode = mode

    def link(self, src: str, file_name: str) -> None:
        """Make ``file_name`` (relative to the image folder) point at
        ``src``.

        Nothing outside the output image folder is created, replaced or
        removed: ``file_name`` must be a relative path without ``..`` whose
        folder resolves inside it.

        Args:
            src (str): The native image.
            file_name (str): Its name in the output image folder.

        Raises:
            UnsafePathError: If ``file_name`` would leave the output folder.
        """
        confined_path(None, file_name, src, 'output image name')
        folder = osp.dirname(file_name)
        if folder:  # its folder resolves inside, before and after it is made
            confined_path(self.out_dir, folder, src, 'output image name')
        dst = osp.join(self.out_dir, file_name)
        os.makedirs(osp.dirname(dst), exist_ok=True)
        if folder:
            confined_path(self.out_dir, folder, src, 'output image name')
        if osp.lexists(dst):
            os.remove(dst)  # a link or file of this staging folder
        src = osp.abspath(src)
        if self.mode == 'symlink':
            final_parent = osp.dirname(osp.join(self.final_dir, file_name))
            os.symlink(osp.relpath(src, final_parent), dst)
        elif self.mode == 'hardlink':
            os.link(src, dst)
        else:
            shutil.copyfile(src, dst)


def format_stats(results: Sequence[ConversionStats]) -> str:
    """Render conversion counts as a markdown table.

    Args:
        results (Sequence[ConversionStats]): Conversion results.

    Returns:
        str: The table.
    """
    lines = [
        '| dataset | split | images | boxes | difficult | clipped | '
        'skipped zero-area | skipped outside | mapped | dropped | size fixed | '
        'file name fixed | skipped images | notes |',
        '|---|---|---|---|---|---|---|---|---|---|---|---|---|---|'
    ]

    def _join(counter: Counter) -> str:
        return ', '.join(f'{k}:{v}' for k, v in sorted(counter.items()) if v) or '-'

    for s in results:
        lines.append(f'| {s.dataset} | {s.split} | {s.images} | '
                     f'{s.annotations} | {s.difficult} | {s.clipped} | '
                     f'{s.zero_area} | {s.outside} | {_join(s.mapped)} | '
                     f'{_join(s.ignored)} | {s.size_fixed} | {s.filename_fixed} | '
                     f'{_join(s.skipped_images)} | {_join(s.notes)} |')
    return '\n'.join(lines)


def format_examples(results: Sequence[ConversionStats]) -> str:
    """The example messages of every warning and skip, one a line.

    Args:
        results (Sequence[ConversionStats]): Conversion results.

    Returns:
        str: The lines (empty if nothing was fixed or skipped).
    """
    lines = []
    for s in results:
        for kind, messages in sorted(s.examples.items()):
            for message in messages:
                lines.append(f'{s.dataset} {s.split} [{kind}] {message}')
    return '\n'.join(lines)
