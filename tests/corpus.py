"""A generated corpus of hostile and unusual uploads: (name, bytes, expected) triples.

expected is "ok" for files that must be classified, or a phrase the per-file error must contain.
"""
from __future__ import annotations

import io
import struct
import zipfile
import zlib

import numpy as np
from PIL import Image


def _img(mode="RGB", size=(40, 30), color=(200, 30, 30)):
    return Image.new(mode, size, color)


def _save(img, fmt, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **kw)
    return buf.getvalue()


def _noise(size=(64, 48)) -> Image.Image:
    rng = np.random.default_rng(0)
    return Image.fromarray(rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8))


def png_header_only(width: int, height: int) -> bytes:
    """A tiny PNG whose header claims width x height: a decompression bomb as far as any decoder knows."""
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\x00" * 1000)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def _orientation(value: int) -> Image.Exif:
    exif = Image.Exif()
    exif[0x0112] = value
    return exif


def exif_rotated_jpeg() -> bytes:
    img = _img(size=(60, 20))
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90 degrees
    return _save(img, "JPEG", exif=exif)


def _segments(data: bytes) -> list[tuple[int, int, int]]:
    """(marker, start, end) of each JPEG segment; a scan's segment runs to the end of its entropy-coded data."""
    out, i = [], 2
    while i < len(data):
        marker = data[i + 1]
        if marker == 0xD9:
            out.append((marker, i, i + 2))
            break
        end = i + 2 + int.from_bytes(data[i + 2 : i + 4], "big")
        if marker == 0xDA:
            while True:  # FF 00 is an escaped byte and FF D0-D7 a restart marker: the scan goes on
                end = data.index(b"\xff", end)
                if data[end + 1] == 0 or 0xD0 <= data[end + 1] <= 0xD7:
                    end += 2
                    continue
                break
        out.append((marker, i, end))
        i = end
    return out


def _last_scan_repeated(width: int, height: int, repeats: int, progressive: bool) -> bytes:
    data = _save(Image.new("RGB", (width, height), (120, 130, 140)), "JPEG", quality=50, progressive=progressive)
    _, start, end = [s for s in _segments(data) if s[0] == 0xDA][-1]
    return data[:end] + data[start:end] * repeats + data[end:]


def scan_bomb_jpeg(width: int, height: int, repeats: int) -> bytes:
    """A progressive JPEG with its last scan repeated: small on disk, one decoding pass per scan.
    6000 x 6600 with 2,000 repeats is 355 KB and took Pillow 45 s to decode."""
    return _last_scan_repeated(width, height, repeats, progressive=True)


def repeated_scan_jpeg(width: int, height: int, repeats: int) -> bytes:
    """A baseline JPEG with its one scan repeated: its scans are not counted (shared.imaging.single_scan_jpeg),
    so the decoder itself must stop at the second."""
    return _last_scan_repeated(width, height, repeats, progressive=False)


def heic(size=(64, 48), **kw) -> bytes:
    import shared.imaging  # noqa: F401 - registers the HEIF plugin with Pillow

    return _save(_noise(size), "HEIF", quality=90, **kw)


def heic_claiming(width: int, height: int) -> bytes:
    """A small HEIC whose image-size property (ispe) claims width x height."""
    data = heic((64, 64))  # a whole number of coding blocks: no clean-aperture box narrows the claimed size
    i = data.index(b"ispe")
    return data[: i + 8] + width.to_bytes(4, "big") + height.to_bytes(4, "big") + data[i + 16 :]


def corpus() -> list[tuple[str, bytes, str]]:
    jpeg = _save(_noise(), "JPEG", quality=90)
    png = _save(_noise(), "PNG")
    zbuf = io.BytesIO()
    with zipfile.ZipFile(zbuf, "w") as z:
        z.writestr("a.txt", "hello")
    palette = _img("P", color=3)
    palette.info["transparency"] = 3
    gif_frames = [_img(color=(255, 0, 0)), _img(color=(0, 255, 0))]
    gif = io.BytesIO()
    gif_frames[0].save(gif, format="GIF", save_all=True, append_images=gif_frames[1:])
    return [
        ("empty.jpg", b"", "empty"),
        ("truncated.jpg", jpeg[: len(jpeg) // 2], "truncated"),
        ("truncated.png", png[: len(png) // 2], "truncated"),
        ("notes.jpg", b"just some text, not an image\n" * 20, "not a recognised image"),
        ("doc.jpg", b"%PDF-1.4\n1 0 obj << >> endobj\n", "PDF"),
        ("page.jpg", b"<!DOCTYPE html><html><body>hi</body></html>", "HTML"),
        ("archive.jpg", zbuf.getvalue(), "ZIP"),
        ("vector.svg", b'<?xml version="1.0"?><svg xmlns="http://www.w3.org/2000/svg" width="10" height="10"/>', "SVG"),
        ("bomb.png", png_header_only(30000, 30000), "over the limit"),
        ("scans.jpg", scan_bomb_jpeg(600, 600, 400), "too long to decode"),
        ("baseline-scans.jpg", repeated_scan_jpeg(600, 600, 400), "could not be decoded"),
        ("absurd.png", png_header_only(2**31 - 1, 2**31 - 1), "over the limit"),
        ("phone.heic", heic(), "ok"),
        ("rotated.heic", heic(exif=_orientation(6)), "ok"),
        ("truncated.heic", heic()[:600], "truncated"),
        ("huge.heic", heic_claiming(30000, 30000), "over the limit"),
        ("empty.heic", b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00mif1heic" + b"\x00" * 64, "not a recognised image"),
        ("cmyk.jpg", _save(_img("CMYK", color=(0, 120, 200, 10)), "JPEG"), "ok"),
        ("deep.png", _save(Image.fromarray(np.full((20, 20), 40000, dtype=np.uint16)), "PNG"), "ok"),
        ("palette.png", _save(palette, "PNG"), "ok"),
        ("gray.jpg", _save(_img("L", color=128), "JPEG"), "ok"),
        ("animated.gif", gif.getvalue(), "ok"),
        ("photo.webp", _save(_noise(), "WEBP"), "ok"),
        ("scan.tiff", _save(_noise(), "TIFF"), "ok"),
        ("rotated.jpg", exif_rotated_jpeg(), "ok"),
        ("pixel.png", _save(_img(size=(1, 1)), "PNG"), "too small to judge"),  # a tracking pixel
        ("sliver.gif", _save(_img(size=(600, 15)), "GIF"), "600x15 pixels, too small to judge"),
        ("icon.png", _save(_img(size=(16, 16)), "PNG"), "ok"),  # the smallest it scores
        ("mislabelled.gif", jpeg, "ok"),  # type by content, not extension
    ] + _avif_case()


def _avif_case() -> list[tuple[str, bytes, str]]:
    """AVIF is classified where this Pillow can decode it, and refused by name where it cannot."""
    from PIL import features

    if features.check("avif"):
        return [("photo.avif", _save(_noise(), "AVIF"), "ok")]
    return [("photo.avif", b"\x00\x00\x00\x1cftypavif\x00\x00\x00\x00avifmif1" + b"\x00" * 64, "AVIF")]


def _encode(arr: np.ndarray, fmt: str, mode: str | None = None, **kw) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr, mode).save(buf, fmt, **kw)
    return buf.getvalue()


def heavy_files(w: int, h: int, scans: int) -> list[tuple[str, bytes]]:
    """Files that are small on disk and costly to decode at w x h (benchmarks/hostile.py, the memory test)."""
    ramp = np.linspace(0, 1, w, dtype=np.float32)[None, :]
    grey16 = np.broadcast_to(ramp * 65535, (h, w)).astype(np.uint16)
    rgba = np.zeros((h, w, 4), np.uint8)
    rgba[..., 0] = np.broadcast_to(ramp * 255, (h, w)).astype(np.uint8)
    rgba[..., 3] = 200
    rgb = np.repeat(np.broadcast_to(ramp * 255, (h, w)).astype(np.uint8)[..., None], 3, axis=2)
    return [
        ("heavy/deep16.png", _encode(grey16, "PNG", compress_level=9)),
        # stripes of 64 values: a small file (the upload limit is 25 MiB) that still decodes to 160 MB of floats
        ("heavy/float.tif", _encode(np.broadcast_to(np.tile(np.linspace(0, 1, 64, dtype=np.float32), w // 64 + 1)[:w],
                                                    (h, w)).copy(), "TIFF", "F", compression="tiff_adobe_deflate")),
        ("heavy/rgba.png", _encode(rgba, "PNG", compress_level=9)),
        ("heavy/photo.jpg", _encode(rgb, "JPEG", quality=85)),
        ("heavy/scans.jpg", scan_bomb_jpeg(w, h, scans)),
    ]
