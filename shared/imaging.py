"""Decoding and preprocessing: the one definition used by training, evaluation and serving.

Nothing here imports torch, so the web process can validate uploads and draw thumbnails with it. The model
sees only a fixed-size RGB array: file format, JPEG quality settings, metadata and the original pixel size
never reach it (the resize below is the only path from a file to the model).
"""
from __future__ import annotations

import io
import warnings
from dataclasses import asdict, dataclass, field

import numpy as np
from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError

# Formats decided by content. Anything else (SVG, PDF, HTML, ZIP...) is refused by name.
ACCEPTED_FORMATS = ("JPEG", "PNG", "GIF", "WEBP", "TIFF", "BMP")  # JPEG also opens multi-picture (MPO) files
try:  # Pillow builds with AVIF support accept it; others refuse it clearly (see sniff_refusal).
    from PIL import AvifImagePlugin  # noqa: F401

    ACCEPTED_FORMATS += ("AVIF",)
except ImportError:  # pragma: no cover - depends on the Pillow build
    pass

ImageFile.LOAD_TRUNCATED_IMAGES = False
Image.MAX_IMAGE_PIXELS = None  # we enforce our own limit before decoding, with a clearer message


class ImageRejected(ValueError):
    """The bytes are not an image we will classify; the message is shown to the user as is."""


@dataclass(frozen=True)
class Preprocessing:
    """Stored in every checkpoint so serving reproduces training exactly."""

    input_size: int = 32
    resize: str = "squash"  # "squash": whole image to input_size x input_size; "center_crop": square crop first
    mean: tuple[float, float, float] = (0.5, 0.5, 0.5)
    std: tuple[float, float, float] = (0.25, 0.25, 0.25)
    resample: str = "bicubic"
    extra: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> Preprocessing:
        data = dict(data)
        data["mean"] = tuple(data.get("mean", cls.mean))
        data["std"] = tuple(data.get("std", cls.std))
        return cls(**data)


def _sniff(data: bytes) -> str | None:
    head = data[:512].lstrip().lower()
    if not data:
        return "the file is empty (0 bytes)"
    if head.startswith(b"%pdf"):
        return "this is a PDF document, not an image"
    if head.startswith(b"pk\x03\x04"):
        return "this is a ZIP archive, not an image"
    if head.startswith((b"<svg", b"<?xml")) and b"<svg" in data[:4096].lower():
        return "SVG vector images are not supported; export it as PNG or JPEG"
    if head.startswith((b"<!doctype html", b"<html")):
        return "this is an HTML page, not an image"
    if data[4:12] in (b"ftypheic", b"ftypheix", b"ftypmif1", b"ftypmsf1", b"ftyphevc"):
        return "HEIC/HEIF images are not supported; convert to JPEG or PNG"
    if data[4:12] in (b"ftypavif", b"ftypavis") and "AVIF" not in ACCEPTED_FORMATS:
        return "AVIF images are not supported by this server's Pillow build; convert to JPEG or PNG"
    return None


def open_image(data: bytes, max_pixels: int) -> Image.Image:
    """Identify by content and check the declared size before any pixel is decoded."""
    refusal = _sniff(data)
    if refusal:
        raise ImageRejected(refusal)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data), formats=ACCEPTED_FORMATS)
    except UnidentifiedImageError:
        raise ImageRejected(
            "not a recognised image (accepted: " + ", ".join(f.lower() for f in ACCEPTED_FORMATS) + ")"
        ) from None
    except Exception as exc:  # malformed headers raise all sorts of errors inside Pillow
        raise ImageRejected(f"the image header could not be read ({type(exc).__name__})") from None
    w, h = img.size
    if w < 1 or h < 1:
        raise ImageRejected(f"the image declares an impossible size {w}x{h}")
    if w * h > max_pixels:
        raise ImageRejected(f"the image is {w}x{h} pixels, over the limit of {max_pixels} pixels")
    return img


def load_rgb(data: bytes, max_pixels: int, target: int | None = None) -> Image.Image:
    """Decode to an upright 8-bit RGB image (first frame; EXIF rotation applied; alpha over white).

    ``target`` lets JPEG decode at a reduced scale when the result will be shrunk anyway; it never goes
    below twice the target, so the final resize still antialiases.
    """
    img = open_image(data, max_pixels)
    try:
        if target and img.format in ("JPEG", "MPO"):
            img.draft("RGB", (target * 2, target * 2))
        img.seek(0)
        img.load()
        img = ImageOps.exif_transpose(img)
        return _to_rgb(img)
    except ImageRejected:
        raise
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        msg = str(exc) or type(exc).__name__
        if "truncated" in msg.lower() or isinstance(exc, EOFError):
            raise ImageRejected("the image file is truncated or corrupt") from None
        raise ImageRejected(f"the image could not be decoded: {msg}") from None


def _to_rgb(img: Image.Image) -> Image.Image:
    if img.mode in ("I;16", "I;16B", "I;16L", "I"):
        arr = np.asarray(img, dtype=np.float64)
        top = 65535.0 if img.mode.startswith("I;16") or arr.max() > 255 else 255.0
        img = Image.fromarray(np.clip(arr / top * 255.0, 0, 255).astype(np.uint8), "L")
    elif img.mode == "F":
        arr = np.asarray(img, dtype=np.float64)
        img = Image.fromarray(np.clip(arr * (255.0 if arr.max() <= 1.0 else 1.0), 0, 255).astype(np.uint8), "L")
    if img.mode == "P" and "transparency" in img.info:
        img = img.convert("RGBA")
    if img.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = img.convert("RGBA")
        canvas = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        img = Image.alpha_composite(canvas, rgba)
    return img.convert("RGB")


RESIZE_MODES = ("squash", "center_crop")
_RESAMPLE = {"bicubic": Image.Resampling.BICUBIC, "bilinear": Image.Resampling.BILINEAR, "area": Image.Resampling.BOX}


def fit(img: Image.Image, spec: Preprocessing) -> Image.Image:
    """Bring any image to the model's square input; the only route by which pixels reach the model."""
    size = spec.input_size
    if spec.resize == "center_crop":
        w, h = img.size
        side = min(w, h)
        left, top = (w - side) // 2, (h - side) // 2
        img = img.crop((left, top, left + side, top + side))
    elif spec.resize != "squash":
        raise ValueError(f"unknown resize mode {spec.resize!r}")
    if img.size != (size, size):
        img = img.resize((size, size), _RESAMPLE[spec.resample], reducing_gap=3.0)
    return img


def to_array(img: Image.Image, spec: Preprocessing) -> np.ndarray:
    """RGB image -> normalised float32 CHW array."""
    arr = np.asarray(fit(img, spec), dtype=np.float32) / 255.0
    arr = (arr - np.asarray(spec.mean, dtype=np.float32)) / np.asarray(spec.std, dtype=np.float32)
    return np.ascontiguousarray(arr.transpose(2, 0, 1))


def preprocess_bytes(data: bytes, spec: Preprocessing, max_pixels: int = 40_000_000) -> np.ndarray:
    """File bytes -> model input. Serving and evaluation both call exactly this."""
    return to_array(load_rgb(data, max_pixels, target=spec.input_size), spec)


def thumbnail_png(data: bytes, max_pixels: int, size: int = 96) -> bytes:
    """A re-encoded thumbnail: uploaded bytes are never served back as they came."""
    img = load_rgb(data, max_pixels, target=size)
    img.thumbnail((size, size), Image.Resampling.BICUBIC)
    out = io.BytesIO()
    img.save(out, format="PNG", optimize=False)
    return out.getvalue()
