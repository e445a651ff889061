"""A thin ctypes binding to the system libmypaint: a fixed-size surface and a brush.

No compiler is needed at install time: the shared library is opened with ctypes (ABI mode).
Only the dozen functions the painting environment needs are declared, each with its exact
argument and return types: an undeclared pointer return would be truncated to a C ``int`` and
an undeclared float argument would be passed as an integer.

Pixels live in libmypaint's own tile buffers as premultiplied fix15 RGBA (1.0 == 1 << 15) in
64x64 tiles. ``Surface`` keeps a numpy view of each tile, obtained once through the official
tile-request API, so clearing and reading the canvas are plain vectorised numpy operations.

Sizes are checked by ``envs.limits`` before libmypaint sees them (it aborts the process on a
surface that overflows its 32-bit arithmetic), and libmypaint's own ``printf`` chatter is kept
off the process's stdout (see ``quiet_stdout``).
"""

from __future__ import annotations

import colorsys
import ctypes
import ctypes.util
import functools
import glob
import math
import os
import sys
import threading
from pathlib import Path

import numpy as np

from envs.limits import TILE_SIZE, SurfaceAllocationError, allocated_pixels, surface_size

FIX15_ONE = 1 << 15

INSTALL_HINT = (
    "Install it with `sudo apt-get install libmypaint-1.5-1 mypaint-brushes` (Debian/Ubuntu) "
    "or `conda install -c conda-forge libmypaint mypaint-brushes` (conda)."
)


class MissingLibMyPaintError(ImportError):
    """libmypaint or its brush collection is not installed where we can find it."""


class _TileRequest(ctypes.Structure):
    """``MyPaintTileRequest`` from mypaint-tiled-surface.h (libmypaint >= 1.5)."""

    _fields_ = [
        ("tx", ctypes.c_int),
        ("ty", ctypes.c_int),
        ("readonly", ctypes.c_int),
        ("buffer", ctypes.POINTER(ctypes.c_uint16)),
        ("context", ctypes.c_void_p),
        ("thread_id", ctypes.c_int),
        ("mipmap_level", ctypes.c_int),
    ]


class _Rectangle(ctypes.Structure):
    """``MyPaintRectangle``: the region of interest ``end_atomic`` reports back."""

    _fields_ = [(name, ctypes.c_int) for name in ("x", "y", "width", "height")]


def _library_candidates() -> list[str]:
    """Where libmypaint may be: the linker's search path, conda, Homebrew; or only the override."""
    if override := os.environ.get("SPIRAL_LIBMYPAINT"):
        return [override]
    candidates = []
    for name in ("mypaint-1.5", "mypaint"):
        if found := ctypes.util.find_library(name):
            candidates.append(found)
    candidates += ["libmypaint-1.5.so.1", "libmypaint.so", "libmypaint.dylib"]
    for prefix in {sys.prefix, os.environ.get("CONDA_PREFIX", sys.prefix), "/opt/homebrew", "/usr/local"}:
        candidates += sorted(glob.glob(os.path.join(prefix, "lib", "libmypaint*.so*")))
        candidates += sorted(glob.glob(os.path.join(prefix, "lib", "libmypaint*.dylib")))
    return candidates


def _declare(lib: ctypes.CDLL) -> ctypes.CDLL:
    """Give every function we call its C signature."""
    p, i, f, d = ctypes.c_void_p, ctypes.c_int, ctypes.c_float, ctypes.c_double
    signatures = {
        "mypaint_fixed_tiled_surface_new": (p, [i, i]),
        "mypaint_fixed_tiled_surface_interface": (p, [p]),
        "mypaint_surface_unref": (None, [p]),
        "mypaint_surface_begin_atomic": (None, [p]),
        "mypaint_surface_end_atomic": (None, [p, ctypes.POINTER(_Rectangle)]),
        "mypaint_tile_request_init": (None, [ctypes.POINTER(_TileRequest), i, i, i, i]),
        "mypaint_tiled_surface_tile_request_start": (None, [p, ctypes.POINTER(_TileRequest)]),
        "mypaint_tiled_surface_tile_request_end": (None, [p, ctypes.POINTER(_TileRequest)]),
        "mypaint_brush_new": (p, []),
        "mypaint_brush_unref": (None, [p]),
        "mypaint_brush_from_defaults": (None, [p]),
        "mypaint_brush_from_string": (i, [p, ctypes.c_char_p]),
        "mypaint_brush_setting_from_cname": (i, [ctypes.c_char_p]),
        "mypaint_brush_set_base_value": (None, [p, i, f]),
        "mypaint_brush_reset": (None, [p]),
        "mypaint_brush_new_stroke": (None, [p]),
        "mypaint_brush_stroke_to": (i, [p, p, f, f, f, f, f, d]),
    }
    for name, (restype, argtypes) in signatures.items():
        function = getattr(lib, name)
        function.restype = restype
        function.argtypes = argtypes
    return lib


@functools.cache
def load_library() -> ctypes.CDLL:
    """Open libmypaint once per process, or say exactly what to install."""
    tried = []
    for candidate in _library_candidates():
        try:
            lib = ctypes.CDLL(candidate)
        except OSError:
            tried.append(candidate)
            continue
        if hasattr(lib, "mypaint_brush_stroke_to") and hasattr(lib, "mypaint_tile_request_init"):
            return _declare(lib)
        tried.append(f"{candidate} (too old: libmypaint >= 1.5 is needed)")
    raise MissingLibMyPaintError(
        "libmypaint (>= 1.5) was not found. " + INSTALL_HINT
        + " Or set SPIRAL_LIBMYPAINT to the library's path. Tried: " + (", ".join(tried) or "nothing")
    )


def _brush_dir_candidates() -> list[Path]:
    if override := os.environ.get("SPIRAL_BRUSH_DIR"):
        return [Path(override)]
    roots = []
    prefixes = [sys.prefix, os.environ.get("CONDA_PREFIX", ""), "/usr", "/usr/local", "/opt/homebrew"]
    prefixes += os.environ.get("XDG_DATA_DIRS", "").split(os.pathsep)
    for prefix in prefixes:
        share = prefix if prefix.rstrip("/").endswith("share") else os.path.join(prefix, "share")
        roots += [os.path.join(share, "mypaint-data", version, "brushes") for version in ("1.0", "2.0")]
    return [Path(root) for root in roots if Path(root).is_dir()]


@functools.cache
def brush_directory() -> Path:
    """The folder of the installed mypaint-brushes collection (override: SPIRAL_BRUSH_DIR)."""
    for directory in _brush_dir_candidates():
        if any(directory.glob("*/*.myb")):
            return directory
    if override := os.environ.get("SPIRAL_BRUSH_DIR"):
        raise MissingLibMyPaintError(f"SPIRAL_BRUSH_DIR={override} holds no <group>/<name>.myb brush files.")
    raise MissingLibMyPaintError(
        "The mypaint-brushes collection was not found. " + INSTALL_HINT
        + " Or set SPIRAL_BRUSH_DIR to a folder of .myb files."
    )


# spiral's own brushes (``spiral/soft_pen``), made from the collection's and named like them: they ship
# with the package, so an agent painting with one works wherever spiral is installed.
PROJECT_BRUSHES = Path(__file__).parent / "brushes"


def _brush_roots() -> list[Path]:
    """Where brush names resolve: the installed collection, then spiral's own brushes."""
    return [brush_directory(), PROJECT_BRUSHES]


def available_brushes() -> list[str]:
    """Names such as ``classic/dry_brush`` of every brush in the installed collection and of spiral's own."""
    return sorted({str(path.relative_to(root).with_suffix("")) for root in _brush_roots() for path in root.glob("*/*.myb")})


def _is_file(path: Path) -> bool:
    """``path.is_file()``, false for names no file system takes (too long, say) instead of an OSError."""
    try:
        return path.is_file()
    except OSError:
        return False


def brush_path(name: str) -> Path:
    """Resolve a brush name (``classic/dry_brush``, ``spiral/soft_pen``) or a path to a ``.myb`` file."""
    direct = Path(name)
    if direct.suffix == ".myb" and _is_file(direct):
        return direct
    candidates = [root / f"{name}.myb" for root in _brush_roots()]
    for path in candidates:
        if _is_file(path):
            return path
    raise ValueError(
        f"Unknown brush {name!r}: no {' or '.join(map(str, candidates))}. Use a .myb path or one of "
        f"envs.available_brushes(), e.g. 'classic/dry_brush', 'classic/pen', 'spiral/soft_pen'."
    )


def _c_stdout_variable() -> str | None:
    """The name of libc's ``FILE *stdout`` variable, where it is safe to point it elsewhere."""
    if sys.platform == "darwin":
        return "__stdoutp"
    try:  # glibc only: musl's stdout is a const pointer in read-only memory
        return "stdout" if sys.platform.startswith("linux") and os.confstr("CS_GNU_LIBC_VERSION") else None
    except (ValueError, OSError):
        return None


@functools.cache
def _stdout_swap() -> tuple[ctypes.c_void_p, int] | None:
    """libc's ``stdout`` variable and a ``FILE *`` on the null device, or None where unavailable."""
    name = _c_stdout_variable()
    if name is None:
        return None
    try:
        libc = ctypes.CDLL(None)  # the global scope: the variable libc's printf really reads
        variable = ctypes.c_void_p.in_dll(libc, name)
        fopen = libc.fopen
        fopen.restype, fopen.argtypes = ctypes.c_void_p, [ctypes.c_char_p, ctypes.c_char_p]
        sink = fopen(os.devnull.encode(), b"w")
    except (OSError, ValueError, AttributeError):
        return None
    return (variable, sink) if sink and variable.value else None


class _QuietStdout:
    """Point C's ``stdout`` at the null device while brush events run.

    libmypaint ``printf``s "Time is running backwards!" when its own dab interpolation leaves a
    tiny negative time step: it subtracts each dab's float time step from the double time left
    in the event, and when a dab lands (to float precision) on the event itself the rounding
    can overshoot by a fraction of a nanosecond. It happens to about one random stroke in tens
    of thousands, whatever the (steady, 1/64 s) event times we pass; libmypaint then uses a 1 ms
    step, as it does for a zero one, so the pixels are libmypaint's either way. The text would
    land in the middle of a command's output, such as ``spiral eval``'s Markdown table.

    Only C stdio's ``stdout`` pointer is swapped, never file descriptor 1, so Python's own
    output and other threads' writes are untouched and nothing needs flushing. Nested and
    concurrent uses are counted: the real ``stdout`` comes back when the last one ends.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._depth = 0
        self._saved: int | None = None

    def __enter__(self) -> None:
        swap = _stdout_swap()
        if swap is not None:
            variable, sink = swap
            with self._lock:
                if self._depth == 0:
                    self._saved, variable.value = variable.value, sink
                self._depth += 1

    def __exit__(self, *exc_info) -> None:
        swap = _stdout_swap()
        if swap is not None:
            with self._lock:
                self._depth -= 1
                if self._depth == 0:
                    swap[0].value = self._saved


quiet_stdout = _QuietStdout()


class Surface:
    """A fixed-size libmypaint canvas of any width and height, readable as uint8 RGB.

    libmypaint allocates whole 64x64 tiles; the pixels beyond ``width`` x ``height`` exist but
    are cropped away when reading. Its buffer starts filled with 0xFF bytes, which are not valid
    fix15 values, so a surface is cleared to its background on creation.
    """

    _fixed = handle = None  # so that close() works on a half-built surface

    def __init__(self, width: int, height: int, background: tuple[int, int, int] = (255, 255, 255)):
        surface_size(width, height)  # the pixel budget, before libmypaint's 32-bit arithmetic sees it
        self._lib = load_library()
        self.width, self.height = width, height
        self._fixed = self._lib.mypaint_fixed_tiled_surface_new(width, height)
        if not self._fixed:
            raise self._allocation_error()
        try:
            self.handle = self._lib.mypaint_fixed_tiled_surface_interface(self._fixed)
            self._roi = _Rectangle()
            rows, cols = -(-height // TILE_SIZE), -(-width // TILE_SIZE)
            self._tiles = [[self._tile_view(tx, ty) for tx in range(cols)] for ty in range(rows)]
            self._pixels = np.empty((rows * TILE_SIZE, cols * TILE_SIZE, 4), np.uint16)
            self._rgb = np.empty((height, width, 3), np.uint8)
        except MemoryError as error:
            self.close()
            raise self._allocation_error() from error
        self.clear(background)

    def _allocation_error(self) -> SurfaceAllocationError:
        pixels = allocated_pixels(self.width, self.height)
        return SurfaceAllocationError(
            f"Not enough memory for a {self.width}x{self.height} surface ({pixels:,} pixels, about "
            f"{pixels * 19 // 2**20:,} MiB): use a smaller canvas or scale."
        )

    def _tile_view(self, tx: int, ty: int) -> np.ndarray:
        """A writable numpy view of one tile's fix15 RGBA pixels, valid for the surface's life."""
        request = _TileRequest()
        self._lib.mypaint_tile_request_init(ctypes.byref(request), 0, tx, ty, 0)
        self._lib.mypaint_tiled_surface_tile_request_start(self.handle, ctypes.byref(request))
        view = np.ctypeslib.as_array(request.buffer, shape=(TILE_SIZE, TILE_SIZE, 4))
        self._lib.mypaint_tiled_surface_tile_request_end(self.handle, ctypes.byref(request))
        return view

    def clear(self, background: tuple[int, int, int]) -> None:
        """Fill the canvas with an opaque colour given as 0..255 RGB."""
        self.background = np.asarray(background, np.uint32)
        fix15 = np.round(self.background * FIX15_ONE / 255).astype(np.uint16)
        pixel = np.append(fix15, np.uint16(FIX15_ONE))
        for row in self._tiles:
            for tile in row:
                tile[...] = pixel
        self._rgb[...] = self.background
        self._dirty = (self.width, self.height, 0, 0)  # nothing to convert: _rgb is up to date

    def snapshot(self) -> list[np.ndarray]:
        """A copy of every tile, for ``restore``: try a stroke, then take it back."""
        return [tile.copy() for row in self._tiles for tile in row]

    def restore(self, snapshot: list[np.ndarray]) -> None:
        for tile, saved in zip((tile for row in self._tiles for tile in row), snapshot):
            tile[...] = saved
        self._dirty = (0, 0, self.width, self.height)

    def begin_atomic(self) -> None:
        self._lib.mypaint_surface_begin_atomic(self.handle)

    def end_atomic(self) -> None:
        """Render the dabs queued since ``begin_atomic`` and remember where pixels changed."""
        self._lib.mypaint_surface_end_atomic(self.handle, ctypes.byref(self._roi))
        roi = self._roi
        if roi.width > 0 and roi.height > 0:
            x0, y0, x1, y1 = self._dirty
            self._dirty = (min(x0, roi.x), min(y0, roi.y), max(x1, roi.x + roi.width), max(y1, roi.y + roi.height))

    def read(self) -> np.ndarray:
        """The canvas as a fresh (height, width, 3) uint8 RGB array, composited on the background.

        This runs after every painted step, so only the rectangle that changed since the last
        read is converted, and numpy's slow paths are avoided: arithmetic runs on all four
        channels at once, and the alpha channel is dropped by one long strided copy per channel.
        """
        x0, y0, x1, y1 = self._dirty
        x0, y0, x1, y1 = max(x0, 0), max(y0, 0), min(x1, self.width), min(y1, self.height)
        if x0 < x1 and y0 < y1:
            for ty in range(y0 // TILE_SIZE, -(-y1 // TILE_SIZE)):
                for tx in range(x0 // TILE_SIZE, -(-x1 // TILE_SIZE)):
                    tile = np.s_[ty * TILE_SIZE:(ty + 1) * TILE_SIZE, tx * TILE_SIZE:(tx + 1) * TILE_SIZE]
                    self._pixels[tile] = self._tiles[ty][tx]
            pixels = self._pixels[y0:y1, x0:x1]
            # value * 255 / 2**15 + 0.5 is exact in float32 (at most 23 significant bits), so the
            # truncating cast below rounds fix15 to the nearest 0..255 value exactly.
            rgba = np.multiply(pixels, np.float32(255 / FIX15_ONE), dtype=np.float32)
            if pixels[..., 3].min() < FIX15_ONE:
                # Premultiplied colour over the opaque background: c + bg * (1 - alpha).
                rgba[..., :3] += self.background * (1 - pixels[..., 3:] / np.float32(FIX15_ONE))
            rgba += 0.5
            region = self._rgb[y0:y1, x0:x1]
            for channel in range(3):
                region[..., channel] = rgba[..., channel]
        self._dirty = (self.width, self.height, 0, 0)
        return self._rgb.copy()

    def close(self) -> None:
        if self._fixed:
            self._tiles = []
            self._lib.mypaint_surface_unref(self.handle)
            self._fixed = self.handle = None

    def __del__(self) -> None:
        self.close()


@functools.cache
def setting_id(name: str) -> int:
    """libmypaint's number for a brush setting name such as ``radius_logarithmic``."""
    setting = load_library().mypaint_brush_setting_from_cname(name.encode())
    if setting < 0:
        raise ValueError(f"libmypaint has no brush setting named {name!r}.")
    return setting


@functools.cache
def _brush_json(path: Path) -> bytes:
    return path.read_bytes()


class Brush:
    """A libmypaint brush loaded from a ``.myb`` file, with radius and colour set per stroke.

    libmypaint seeds a brush's random generator when the brush is created, so a fresh brush
    replays the same jitter: make a new ``Brush`` wherever a painting must be reproducible.
    """

    handle = None  # so that close() works on a half-built brush

    def __init__(self, name: str = "classic/dry_brush"):
        self._lib = load_library()
        self.name = name
        settings = _brush_json(brush_path(name))
        self.handle = self._lib.mypaint_brush_new()
        self._lib.mypaint_brush_from_defaults(self.handle)
        if not self._lib.mypaint_brush_from_string(self.handle, settings):
            self.close()
            raise ValueError(f"libmypaint could not parse the brush file for {name!r}.")
        self._stroke_to = self._lib.mypaint_brush_stroke_to
        self._set_base = self._lib.mypaint_brush_set_base_value
        self._radius, self._hue, self._saturation, self._value = (
            setting_id(name) for name in ("radius_logarithmic", "color_h", "color_s", "color_v")
        )

    def set_setting(self, name: str, value: float) -> None:
        """Set a brush setting's base value by its libmypaint name (``radius_logarithmic``...)."""
        self._set_base(self.handle, setting_id(name), value)

    def set_radius(self, radius: float) -> None:
        self._set_base(self.handle, self._radius, math.log(radius))

    def set_color(self, rgb: tuple[float, float, float]) -> None:
        """Set the colour from RGB in [0, 1]; libmypaint brushes take it as HSV."""
        hue, saturation, value = colorsys.rgb_to_hsv(*rgb)
        self._set_base(self.handle, self._hue, hue)
        self._set_base(self.handle, self._saturation, saturation)
        self._set_base(self.handle, self._value, value)

    def begin_stroke(self) -> None:
        """Forget the previous stroke's position and motion so the next one starts fresh."""
        self._lib.mypaint_brush_reset(self.handle)
        self._lib.mypaint_brush_new_stroke(self.handle)

    def stroke_through(self, surface: Surface, points: list[list[float]], pressure: float, dtime: float) -> None:
        """Queue one brush event per (x, y) point, ``dtime`` seconds apart (the hot loop)."""
        stroke_to, brush, target = self._stroke_to, self.handle, surface.handle
        with quiet_stdout:
            for x, y in points:
                stroke_to(brush, target, x, y, pressure, 0.0, 0.0, dtime)

    def close(self) -> None:
        if self.handle:
            self._lib.mypaint_brush_unref(self.handle)
            self.handle = None

    def __del__(self) -> None:
        self.close()
