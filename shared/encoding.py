"""How a file was encoded, read from its header without decoding it.

Reported beside the verdict and never given to the model: the default model's score moves with compression
(JPEG at quality 85 makes an image read more real, at 75 more generated; model card, "Compression history"),
so verdicts compare fairly only between images encoded alike, and a user can only check that if each result
says how its file was encoded.
"""
from __future__ import annotations

import numpy as np

from shared.jpeg_markers import DQT, header_segments, quantisation_tables

# Zig-zag position -> natural (row-major) index of an 8x8 block: the order DQT segments store a table in.
ZIGZAG = (0, 1, 8, 16, 9, 2, 3, 10, 17, 24, 32, 25, 18, 11, 4, 5, 12, 19, 26, 33, 40, 48, 41, 34, 27, 20, 13, 6, 7,
          14, 21, 28, 35, 42, 49, 56, 57, 50, 43, 36, 29, 22, 15, 23, 30, 37, 44, 51, 58, 59, 52, 45, 38, 31, 39, 46,
          53, 60, 61, 54, 47, 55, 62, 63)
# The JPEG standard's example luminance table (ITU-T T.81, Annex K), which libjpeg scales by its quality setting.
STD_LUMINANCE = (16, 11, 10, 16, 24, 40, 51, 61, 12, 12, 14, 19, 26, 58, 60, 55, 14, 13, 16, 24, 40, 57, 69, 56,
                 14, 17, 22, 29, 51, 87, 80, 62, 18, 22, 37, 56, 68, 109, 103, 77, 24, 35, 55, 64, 81, 104, 113, 92,
                 49, 64, 78, 87, 103, 121, 120, 101, 72, 92, 95, 98, 112, 100, 103, 99)
_SOF = frozenset((0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF))
_PROGRESSIVE = frozenset((0xC2, 0xC6, 0xCA, 0xCE))
_CHROMA = {(1, 1): "4:4:4", (2, 1): "4:2:2", (2, 2): "4:2:0", (1, 2): "4:4:0", (4, 1): "4:1:1"}


def libjpeg_table(quality: int) -> list[int]:
    """The luminance table libjpeg (and Pillow, and most software) writes at this quality, natural order."""
    scale = 5000 // quality if quality < 50 else 200 - 2 * quality
    return [min(255, max(1, (q * scale + 50) // 100)) for q in STD_LUMINANCE]


_LIBJPEG = np.array([libjpeg_table(q) for q in range(1, 101)], dtype=np.float64)  # row q - 1
_EXACT = {tuple(int(v) for v in row): q for q, row in reversed(list(enumerate(_LIBJPEG, 1)))}  # lowest q wins


def jpeg_quality(table: list[int]) -> tuple[int, bool]:
    """(the libjpeg quality whose luminance table is nearest, whether it is exactly that table). Cameras and
    some editors write tables of their own; the nearest quality still says how coarse the quantisation is.
    A lookup for the usual case: the worker reads this for every image, a 32x32 one included."""
    if (q := _EXACT.get(tuple(table))) is not None:
        return q, True
    distance = (np.abs(np.asarray(table, dtype=np.float64) - _LIBJPEG) / _LIBJPEG).sum(1)
    return int(distance.argmin()) + 1, False


# A JPEG whose header says nothing more (or that this reader cannot follow).
_UNKNOWN_JPEG = {"format": "JPEG", "quality": None, "quality_exact": None, "chroma": None, "progressive": None}


def _jpeg(data: bytes) -> dict:
    tables: dict[int, list[int]] = {}
    out = dict(_UNKNOWN_JPEG)
    for marker, segment in header_segments(data):
        if marker == DQT:
            for table, values in quantisation_tables(segment):
                natural = [0] * 64
                for pos, v in enumerate(values):
                    natural[ZIGZAG[pos]] = v
                tables[table] = natural
        elif marker in _SOF and len(segment) >= 6:
            out["progressive"] = marker in _PROGRESSIVE
            n = segment[5]
            comps = [segment[6 + 3 * k: 9 + 3 * k] for k in range(n)]
            if n == 1:
                out["chroma"] = "greyscale"
            elif n == 3 and all(len(c) == 3 for c in comps):
                (h0, v0), (h1, v1), (h2, v2) = ((c[1] >> 4, c[1] & 15) for c in comps)
                if (h1, v1) == (h2, v2) and h1 and v1 and h0 % h1 == 0 and v0 % v1 == 0:
                    out["chroma"] = _CHROMA.get((h0 // h1, v0 // v1))
            if comps and len(comps[0]) == 3 and (luma := tables.get(comps[0][2])) and all(luma):
                out["quality"], out["quality_exact"] = jpeg_quality(luma)
    return out


def describe(data: bytes) -> dict | None:
    """{"format": ..., and for a JPEG "quality", "quality_exact", "chroma", "progressive"}; None when the
    header is not one of the formats named here (the decoder still decides what the file is)."""
    if data[:3] == b"\xff\xd8\xff":
        try:
            return _jpeg(data)
        except (IndexError, ValueError, KeyError):  # a header this reader does not follow costs only the details
            return dict(_UNKNOWN_JPEG)
    if data[:8] == b"\x89PNG\r\n\x1a\n":
        return {"format": "PNG"}
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        kind = data[12:16]
        return {"format": "WEBP", "lossless": kind == b"VP8L" if kind in (b"VP8 ", b"VP8L") else None}
    if data[:6] in (b"GIF87a", b"GIF89a"):
        return {"format": "GIF"}
    if data[:4] in (b"II*\x00", b"MM\x00*"):
        return {"format": "TIFF"}
    if data[:2] == b"BM":
        return {"format": "BMP"}
    if data[4:8] == b"ftyp":
        return {"format": "AVIF" if data[8:12] in (b"avif", b"avis") else "HEIF"}
    return None


def group(encoding: dict | None) -> str | None:
    """A result's encoding in the bands a job's summary counts (stored with each prediction): JPEG quality in
    bands wide enough that one camera's files stay together, other formats by name."""
    if not encoding or not encoding.get("format"):
        return None
    if encoding["format"] != "JPEG" or encoding.get("quality") is None:
        lossless = encoding.get("lossless")
        return encoding["format"] + ("" if lossless is None else " lossless" if lossless else " lossy")
    q = encoding["quality"]
    band = "95-100" if q >= 95 else "90-94" if q >= 90 else "80-89" if q >= 80 else "70-79" if q >= 70 else "below 70"
    return f"JPEG quality {band}"


def summary(counts: dict[str, int]) -> str | None:
    """One line for a job's encodings (the job JSON's `encodings`), and a warning when there is more than one."""
    if not counts:
        return None
    line = ", ".join(f"{g} x{n}" for g, n in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))
    if len(counts) == 1:
        return f"encodings: {line}"
    return (f"encodings: {line}. This job mixes encodings: a detector's score moves with compression, so compare "
            "verdicts within one encoding (the results' `encoding` column names each file's)")
