"""A large JPEG's crops and a thumbnail's pixels from one entropy decode, through libturbojpeg's lossless
transform.

Serving reads nine 128-px crops of a 12-megapixel photo and makes 512-px thumbnails of it. Decoding the whole
photo for that spent most of a worker's time on pixels nothing reads: Huffman decoding every block cannot be
avoided (it is sequential), but the inverse DCT, up-sampling and colour conversion of 99% of the image can.
One ``tjTransform`` call entropy-decodes the file once and from its coefficients

- cuts each crop, with one MCU of margin on every side, losslessly into a small JPEG (the same coefficients
  and quantisation tables), which the usual decoder (simplejpeg) then decodes: inside the margin its pixels
  are exactly those of the full decode (the inverse DCT works block by block, the up-sampling reaches one
  chroma sample across; tested bit for bit);
- hands every block's DC coefficient, the block's mean, to a callback (``TJXOPT_NOOUTPUT``: nothing is
  re-encoded), which is a 1/8-scale image for the thumbnails.

libturbojpeg is a system library (Debian's ``libturbojpeg0``, Homebrew's ``jpeg-turbo``), not a wheel; where
it is missing, :func:`available` says so and callers decode the whole image as before. The TurboJPEG 2 API
used here is kept by TurboJPEG 3.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import threading
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import simplejpeg

from shared.jpeg_markers import DQT, header_segments, quantisation_tables

# turbojpeg.h
_TJXOPT_CROP, _TJXOPT_NOOUTPUT, _TJXOPT_COPYNONE = 4, 16, 64
_TJFLAG_STOPONWARNING, _TJFLAG_LIMITSCANS = 8192, 32768
_TJCS_RGB, _TJCS_YCBCR, _TJCS_GRAY = 0, 1, 2
_MCU = {0: (8, 8), 1: (16, 8), 2: (16, 16), 3: (8, 8), 4: (8, 16), 5: (32, 8)}  # TJSAMP_* -> tjMCUWidth/Height


class _Region(ctypes.Structure):
    _fields_ = [("x", ctypes.c_int), ("y", ctypes.c_int), ("w", ctypes.c_int), ("h", ctypes.c_int)]


_Filter = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), _Region, _Region, ctypes.c_int,
                           ctypes.c_int, ctypes.c_void_p)


class _Transform(ctypes.Structure):
    _fields_ = [("r", _Region), ("op", ctypes.c_int), ("options", ctypes.c_int), ("data", ctypes.c_void_p),
                ("customFilter", _Filter)]


class Unavailable(Exception):
    """This file cannot take this route (the library is missing, or it refused the file): decode it whole.
    Never shown to a user: the whole-image decode says what is wrong with a file in the usual words."""


def _load() -> ctypes.CDLL | None:
    name = ctypes.util.find_library("turbojpeg")
    try:
        lib = ctypes.CDLL(name or "libturbojpeg.so.0")
    except OSError:
        return None
    lib.tjInitTransform.restype = ctypes.c_void_p
    lib.tjDestroy.argtypes = [ctypes.c_void_p]
    lib.tjDecompressHeader3.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_ulong] + [
        ctypes.POINTER(ctypes.c_int)] * 4
    lib.tjTransform.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_ulong, ctypes.c_int,
                                ctypes.POINTER(ctypes.c_void_p), ctypes.POINTER(ctypes.c_ulong),
                                ctypes.POINTER(_Transform), ctypes.c_int]
    lib.tjFree.argtypes = [ctypes.c_void_p]
    lib.tjGetErrorStr2.argtypes = [ctypes.c_void_p]
    lib.tjGetErrorStr2.restype = ctypes.c_char_p
    return lib


_LIB = _load()
_local = threading.local()  # a TurboJPEG handle is not to be shared between threads (decode pool)


def available() -> bool:
    return _LIB is not None


class _Handle:
    """One thread's TurboJPEG handle, destroyed with the thread's local storage when the thread ends."""

    def __init__(self, lib: ctypes.CDLL):
        self.lib, self.value = lib, lib.tjInitTransform()
        if not self.value:
            raise Unavailable("tjInitTransform failed")

    def __del__(self):
        if self.value:
            self.lib.tjDestroy(self.value)


def _handle() -> int:
    if getattr(_local, "handle", None) is None or _local.handle.lib is not _LIB:
        _local.handle = _Handle(_LIB)
    return _local.handle.value


@dataclass(frozen=True)
class Header:
    width: int
    height: int
    subsampling: int  # TJSAMP_*
    colorspace: int  # TJCS_*


def header(data: bytes) -> Header:
    if _LIB is None:
        raise Unavailable("libturbojpeg is not installed")
    w, h, s, c = (ctypes.c_int() for _ in range(4))
    if _LIB.tjDecompressHeader3(_handle(), data, len(data), *(ctypes.byref(v) for v in (w, h, s, c))) != 0:
        raise Unavailable(_LIB.tjGetErrorStr2(_handle()).decode(errors="replace"))
    return Header(w.value, h.value, s.value, c.value)


@dataclass(frozen=True)
class Rect:
    x: int
    y: int
    w: int
    h: int


def _with_margin(r: Rect, head: Header) -> Rect:
    """The rectangle grown by one MCU on every side, its origin on the MCU grid (a lossless crop's rule)."""
    mw, mh = _MCU[head.subsampling]
    x0, y0 = max(0, (r.x // mw - 1) * mw), max(0, (r.y // mh - 1) * mh)
    x1, y1 = min(head.width, (-(-(r.x + r.w) // mw) + 1) * mw), min(head.height, (-(-(r.y + r.h) // mh) + 1) * mh)
    return Rect(x0, y0, x1 - x0, y1 - y0)


def decode_regions(data: bytes, head: Header, rects: Sequence[Rect],
                   with_dc: bool) -> tuple[list[np.ndarray], np.ndarray | None]:
    """The RGB pixels of each rectangle (in the file's stored orientation), exactly as a whole decode gives
    them, and with ``with_dc`` the 1/8-scale RGB image of the blocks' means."""
    if head.colorspace not in (_TJCS_YCBCR, _TJCS_GRAY, _TJCS_RGB) or head.subsampling not in _MCU:
        raise Unavailable("colour space or subsampling this route does not take")
    grown = [_with_margin(r, head) for r in rects]
    dc: dict[int, list[np.ndarray]] = {}
    row = np.empty(-(-head.width // 8) * 64 + 64 * 4, np.int16)  # one row of blocks' coefficients
    row_at = row.ctypes.data

    def keep_dc(coeffs, array_region, _plane_region, component, _transform_index, _transform):
        # Called once per row of blocks, component by component, rows in order (and a padding row where a
        # plane's height is not a multiple of its sampling factor): copy the row out in one memmove and keep
        # every 64th value. This runs 750 times for a 12-megapixel photo; numpy views of the C pointer made
        # here cost 7 ms a photo, this 3.
        blocks = array_region.w >> 3
        if blocks * 64 > row.size:  # no plane is wider than the image's blocks; never copy past the buffer
            return -1
        try:
            ctypes.memmove(row_at, coeffs, blocks * 128)
            dc.setdefault(component, []).append(row[: blocks * 64: 64].copy())
        except Exception:  # noqa: BLE001 - an exception cannot cross into C: the transform fails instead
            return -1
        return 0

    callback = _Filter(keep_dc)
    n = len(grown) + bool(with_dc)
    transforms = (_Transform * n)()
    for t, g in zip(transforms, grown):
        t.r = _Region(g.x, g.y, g.w, g.h)
        t.options = _TJXOPT_CROP | _TJXOPT_COPYNONE
    if with_dc:
        transforms[-1].options = _TJXOPT_NOOUTPUT
        transforms[-1].customFilter = callback
    bufs, sizes = (ctypes.c_void_p * n)(), (ctypes.c_ulong * n)()
    handle = _handle()
    try:
        if _LIB.tjTransform(handle, data, len(data), n, bufs, sizes, transforms,
                            _TJFLAG_STOPONWARNING | _TJFLAG_LIMITSCANS) != 0:
            raise Unavailable(_LIB.tjGetErrorStr2(handle).decode(errors="replace"))
        crops = [ctypes.string_at(bufs[i], sizes[i]) for i in range(len(grown))]
    finally:
        for b in bufs:
            if b:
                _LIB.tjFree(b)
    out = []
    for jpeg, r, g in zip(crops, rects, grown):
        try:
            px = simplejpeg.decode_jpeg(jpeg, colorspace="RGB")
        except ValueError as exc:
            raise Unavailable(str(exc)) from None
        out.append(px[r.y - g.y: r.y - g.y + r.h, r.x - g.x: r.x - g.x + r.w])
    return out, (_dc_rgb(data, head, dc) if with_dc else None)


def _dc_rgb(data: bytes, head: Header, rows: dict[int, list[np.ndarray]]) -> np.ndarray:
    """Blocks' means as an RGB image: DC x its quantiser / 8 + 128 per component, chroma repeated up to the
    luma's blocks, then the JFIF colour conversion (for a preview; the model never sees these pixels)."""
    quant = dc_quantisers(data)
    dc = {ci: np.stack(r) for ci, r in rows.items()}
    if len(quant) != len(dc) or len(dc) not in (1, 3):
        raise Unavailable("components and quantisation tables do not match")
    bw, bh = -(-head.width // 8), -(-head.height // 8)
    planes = [dc[ci].astype(np.float32) * (q / 8.0) + 128.0 for ci, q in enumerate(quant)]
    luma = planes[0][:bh, :bw]
    if len(planes) == 1:
        rgb = np.repeat(luma[..., None], 3, axis=2)
    else:
        fy, fx = _chroma_factor(head.subsampling)
        full = [luma] + [np.repeat(np.repeat(p, fy, axis=0), fx, axis=1)[:bh, :bw] for p in planes[1:]]
        if head.colorspace == _TJCS_RGB:
            rgb = np.stack(full, axis=2)
        else:
            y, cb, cr = full[0], full[1] - 128.0, full[2] - 128.0
            rgb = np.stack([y + 1.402 * cr, y - 0.344136 * cb - 0.714136 * cr, y + 1.772 * cb], axis=2)
    return np.clip(np.rint(rgb), 0, 255).astype(np.uint8)


def _chroma_factor(subsampling: int) -> tuple[int, int]:
    mw, mh = _MCU[subsampling]
    return mh // 8, mw // 8


def dc_quantisers(data: bytes) -> list[int]:
    """Each frame component's DC quantiser, read from the DQT and SOF segments before the first scan."""
    tables: dict[int, int] = {}
    for marker, segment in header_segments(data):
        if marker == DQT:
            tables.update((table, values[0]) for table, values in quantisation_tables(segment))
        elif marker in (0xC0, 0xC1, 0xC2):
            try:
                return [tables[segment[6 + 3 * k + 2]] for k in range(segment[5])]
            except (KeyError, IndexError):
                raise Unavailable("a component's quantisation table comes after the frame header") from None
    raise Unavailable("no frame header before the first scan")
