"""Decoding and preprocessing: the one definition used by training, evaluation and serving.

Nothing here imports torch. Uploads are decoded only by workers (and training); the web never decodes them. The model
sees only fixed-size RGB arrays: file format, JPEG quality settings and metadata never reach it. Two routes
lead from a file to the model, and the checkpoint names which one it was trained with:

- ``squash`` / ``center_crop``: the whole image resized to one small square (the CIFAKE models);
- ``native_crops``: a deterministic grid of square crops cut from the decoded image at its own resolution,
  never resized, because the traces generators leave live in the pixels and a resize destroys them. Each crop
  is scored, and the image's score aggregates the crops' (:data:`AGGREGATES`).
"""
from __future__ import annotations

import io
import math
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace

import numpy as np
import simplejpeg
from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError

from shared import jpeg_regions
from shared.jpeg_markers import SOS, header_segments
from shared.limits import MAX_JPEG_SCANS, MAX_PIXELS, MIN_SIDE
from shared.thumbnails import THUMBNAIL_QUALITY, THUMBNAIL_SIZES

# Formats decided by content. Anything else (SVG, PDF, HTML, ZIP...) is refused by name.
ACCEPTED_FORMATS = ("JPEG", "PNG", "GIF", "WEBP", "TIFF", "BMP")  # JPEG also opens multi-picture (MPO) files
# HEIC/HEIF, what phones write, through libheif. libheif applies the file's rotation and mirroring (irot/imir)
# and pillow-heif resets the EXIF orientation to 1, so exif_transpose cannot turn such an image twice.
try:
    from pillow_heif import register_heif_opener

    register_heif_opener()
    ACCEPTED_FORMATS += ("HEIF",)
except ImportError:  # pragma: no cover - pillow-heif is a dependency; without it HEIC is refused by name
    pass
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

    input_size: int = 32  # the model's square input; with native_crops, the side of each crop
    # "squash": whole image to input_size x input_size; "center_crop": square crop first; "native_crops": see above
    resize: str = "squash"
    mean: tuple[float, float, float] = (0.5, 0.5, 0.5)
    std: tuple[float, float, float] = (0.25, 0.25, 0.25)
    resample: str = "bicubic"
    max_crops: int = 9  # native_crops: at most this many crops per image (a grid of at most sqrt(max_crops) a side)
    aggregate: str = "mean_logit"  # native_crops: how crop scores become the image's (AGGREGATES)
    extra: dict = field(default_factory=dict)

    @property
    def native(self) -> bool:
        return self.resize == "native_crops"

    def to_dict(self) -> dict:
        data = asdict(self)
        if not self.native:  # crop fields mean nothing to the whole-image routes; leaving them out keeps the
            del data["max_crops"], data["aggregate"]  # content versions of checkpoints made before them
        return data

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
    if data[4:12] in (b"ftypheic", b"ftypheix", b"ftypmif1", b"ftypmsf1", b"ftyphevc") and "HEIF" not in ACCEPTED_FORMATS:
        return "HEIC/HEIF images are not supported by this server; convert to JPEG or PNG"
    if data[4:12] in (b"ftypavif", b"ftypavis") and "AVIF" not in ACCEPTED_FORMATS:
        return "AVIF images are not supported by this server's Pillow build; convert to JPEG or PNG"
    return None


# A progressive JPEG decodes in one pass per scan: encoders write about 10, and one scan repeated thousands of
# times makes a file of a few hundred KB take minutes to decode. More than MAX_JPEG_SCANS is refused first.
# Counting them reads the whole file (4 ms of a 12-megapixel photo's 100), so the files that cannot hold such a
# trap are told apart by their headers first: see single_scan_jpeg.
_SOF = frozenset((0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF))
_SEQUENTIAL_SOF = frozenset((0xC0, 0xC1))  # baseline and extended sequential, Huffman-coded


def single_scan_jpeg(data: bytes) -> bool:
    """Whether a JPEG is sequential and its first scan holds every component, as phones and most encoders
    write them. libjpeg then decodes in one pass and stops with an error at any further scan ("Didn't expect
    more than one scan"; tested), so repeated scans cost nothing and need no count. Read from the marker
    segments before the first scan; anything else, or anything unexpected there, answers False (count)."""
    components = None
    for marker, segment in header_segments(data):
        if marker in _SOF:
            if marker not in _SEQUENTIAL_SOF or len(segment) < 6:
                return False
            components = segment[5]
        elif marker == SOS:
            return components is not None and len(segment) >= 1 and segment[0] == components
    return False


def jpeg_scans(data: bytes) -> int:
    """How many scans (SOS markers) a JPEG holds, at most. Entropy-coded data escapes every 0xFF, so each
    FF DA in the file starts a scan (or one of an embedded thumbnail's); counting them costs a memchr pass."""
    return data.count(b"\xff\xda")


def open_image(data: bytes, max_pixels: int, max_scans: int = MAX_JPEG_SCANS) -> Image.Image:
    """Identify by content and check the declared size, and a JPEG's scans, before any pixel is decoded."""
    refusal = _sniff(data)
    if refusal:
        raise ImageRejected(refusal)
    if data[:2] == b"\xff\xd8" and not single_scan_jpeg(data) and (scans := jpeg_scans(data)) > max_scans:
        raise ImageRejected(f"the JPEG has {scans} scans, over the limit of {max_scans}: it would take too long "
                            "to decode (an encoder writes about 10)")
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
    if min(w, h) < MIN_SIDE:
        raise ImageRejected(f"the image is {w}x{h} pixels, too small to judge: a detector needs at least {MIN_SIDE} "
                            "pixels on each side (smaller ones are tracking pixels, spacers or slivers)")
    return img


def load_rgb(data: bytes, max_pixels: int, target: int | None = None, max_scans: int = MAX_JPEG_SCANS) -> Image.Image:
    """Decode to an upright 8-bit RGB image (first frame; EXIF rotation applied; alpha over white).

    ``target`` lets JPEG decode at a reduced scale when the result will be shrunk anyway; it never goes
    below twice the target, so the final resize still antialiases.
    """
    img = open_image(data, max_pixels, max_scans)
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
        if any(w in msg.lower() for w in ("truncated", "end of file")) or isinstance(exc, EOFError):
            raise ImageRejected("the image file is truncated or corrupt") from None
        raise ImageRejected(f"the image could not be decoded: {msg}") from None


# EXIF orientation -> the same transpose ImageOps.exif_transpose applies, as numpy views (no copy).
_ORIENT = {
    2: lambda a: a[:, ::-1], 3: lambda a: a[::-1, ::-1], 4: lambda a: a[::-1], 5: lambda a: a.transpose(1, 0, 2),
    6: lambda a: np.rot90(a, -1), 7: lambda a: np.rot90(a, 1)[:, ::-1], 8: lambda a: np.rot90(a, 1),
}


def load_rgb_array(data: bytes, max_pixels: int, max_scans: int = MAX_JPEG_SCANS) -> np.ndarray:
    """Decode at full resolution to an upright H x W x 3 uint8 array (the native-crop route).

    Baseline and progressive JPEG in YCbCr or grayscale, most of what phones and generators write, go
    through libjpeg-turbo via simplejpeg: the same pixels as Pillow's decoder (tested), in about 60% of the
    time on a 12-megapixel photo, and straight into numpy without Pillow's padded RGBX copy. Orientation is
    then a view, not a copy. Every other file takes :func:`load_rgb`.
    """
    stored, upright = decode_stored(data, max_pixels, max_scans)
    return upright(stored)


def decode_stored(data: bytes, max_pixels: int, max_scans: int, padded: bool = False,
                  opened: Image.Image | None = None) -> tuple[np.ndarray, Callable[[np.ndarray], np.ndarray]]:
    """The pixels as stored (C-contiguous) and the view that turns any array of them upright.

    Kept apart so thumbnails shrink the contiguous pixels and turn only the small result: a contiguous copy
    of a rotated 12-megapixel view costs more than its decode. ``padded``: a JPEG may come as RGBX (H x W x 4,
    the same RGB values), the layout Pillow can shrink in place without a full-size copy. ``opened``: the
    file already checked by open_image, so its header is not read twice.
    """
    img = open_image(data, max_pixels, max_scans) if opened is None else opened
    if img.format == "JPEG" and img.mode in ("RGB", "L"):
        try:
            arr = simplejpeg.decode_jpeg(data, colorspace="RGBX" if padded else "RGB")
        except ValueError:
            arr = None  # corrupt or unusual: Pillow decodes it or says what is wrong in the usual words
        if arr is not None and arr.shape[:2] == (img.size[1], img.size[0]):
            return arr, _upright_view(img)
    return np.asarray(load_rgb(data, max_pixels, max_scans=max_scans)), _as_is


def _upright_view(img: Image.Image) -> Callable[[np.ndarray], np.ndarray]:
    """The view (_ORIENT) that turns a JPEG's stored pixels upright, from its EXIF orientation."""
    try:
        orientation = int(img.getexif().get(0x0112, 1))
    except Exception:  # unreadable EXIF: Pillow's exif_transpose would ignore it as well
        orientation = 1
    return _ORIENT.get(orientation, _as_is)


def _as_is(a: np.ndarray) -> np.ndarray:
    return a


_ROWS = 256  # high-bit-depth images are brought to 8 bits this many rows at a time


def _to_8bit(img: Image.Image) -> Image.Image:
    """16-bit, 32-bit integer and float grayscale -> 8-bit, in bands of rows with float32 temporaries.

    A whole-image float64 conversion made a 78 KB 40-megapixel 16-bit PNG cost over 1 GB; this costs the
    decoded image plus one 8-bit copy.
    """
    w, h = img.size
    if img.mode.startswith("I;16"):
        scale = 255.0 / 65535.0
    elif img.mode == "I":
        scale = 255.0 / (65535.0 if img.getextrema()[1] > 255 else 255.0)
    else:  # "F": 0..1 floats are stretched, anything else is taken as 0..255
        scale = 255.0 if img.getextrema()[1] <= 1.0 else 1.0
    out = np.empty((h, w), np.uint8)
    for top in range(0, h, _ROWS):
        band = np.array(img.crop((0, top, w, min(h, top + _ROWS))), dtype=np.float32)
        np.multiply(band, scale, out=band)
        np.clip(band, 0, 255, out=band)
        out[top : top + band.shape[0]] = band  # truncates, as the earlier astype(uint8) did
    return Image.fromarray(out, "L")


def _to_rgb(img: Image.Image) -> Image.Image:
    if img.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        img = _to_8bit(img)
    if img.mode == "P" and "transparency" in img.info:
        img = img.convert("RGBA")
    if img.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        # Over white, with the alpha band as a paste mask: no full-size RGBA canvas or composite copy.
        alpha = img.convert("RGBA").getchannel("A") if img.mode != "RGBA" else img.getchannel("A")
        canvas = Image.new("RGB", img.size, (255, 255, 255))
        canvas.paste(img.convert("RGB"), mask=alpha)
        return canvas
    return img.convert("RGB")


_RESAMPLE = {"bicubic": Image.Resampling.BICUBIC, "bilinear": Image.Resampling.BILINEAR, "area": Image.Resampling.BOX}


def fit(img: Image.Image, spec: Preprocessing) -> Image.Image:
    """The whole-image routes: bring any image to the model's square input."""
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


AGGREGATES = ("mean_logit",)


@dataclass(frozen=True)
class Box:
    """Where one crop sits in the upright image, in pixels (clipped to the image where it was padded)."""

    x: int
    y: int
    w: int
    h: int


@dataclass
class Prepared:
    """The model's inputs for one image: N normalised crops (N = 1 for the resize routes) and where each is."""

    inputs: np.ndarray  # N x 3 x S x S float32
    boxes: tuple[Box, ...]
    width: int
    height: int
    thumbnails: dict[int, bytes] | None = None  # PNG renditions by size, when asked for


def _grid(length: int, side: int, n_max: int, align: int = 8) -> list[int]:
    """Start offsets of crops along one axis: as many as cover it, at most n_max, spread evenly from edge to
    edge (inner ones snapped to the 8-pixel JPEG block grid), so a file always gets the same crops."""
    if length <= side:
        return [0]
    n = min(n_max, math.ceil(length / side))
    last = length - side
    if n == 1:
        return [last // 2 // align * align]
    return sorted({i * last // (n - 1) // align * align for i in range(n - 1)} | {last})


def crop_boxes(width: int, height: int, spec: Preprocessing) -> list[Box]:
    """The crop grid for an image of this size: it covers the image when at most sqrt(max_crops) crops a side
    do, otherwise it samples it evenly; images smaller than a crop give one crop, padded (see pad_to)."""
    side = spec.input_size
    n_max = max(1, math.isqrt(spec.max_crops))
    return [Box(x, y, min(side, width), min(side, height))
            for y in _grid(height, side, n_max) for x in _grid(width, side, n_max)]


def pad_to(arr: np.ndarray, side: int) -> np.ndarray:
    """Bring an image smaller than a crop up to the crop's size by mirroring it at its right and bottom edges
    (numpy's "symmetric" padding, repeated as often as needed): no pixel is interpolated, so the ones the
    model reads are all the file's own. Training pads its small crops the same way."""
    h, w = arr.shape[:2]
    if h >= side and w >= side:
        return arr
    return np.pad(arr, ((0, max(0, side - h)), (0, max(0, side - w)), (0, 0)), mode="symmetric")


def normalise(crops: np.ndarray, spec: Preprocessing) -> np.ndarray:
    """N x S x S x 3 uint8 -> N x 3 x S x S float32, scaled by the checkpoint's mean and std."""
    scale = (1.0 / (255.0 * np.asarray(spec.std, dtype=np.float32)))
    shift = np.asarray(spec.mean, dtype=np.float32) / np.asarray(spec.std, dtype=np.float32)
    out = crops.astype(np.float32) * scale - shift
    return np.ascontiguousarray(out.transpose(0, 3, 1, 2))


def native_crops(arr: np.ndarray, spec: Preprocessing) -> Prepared:
    """An upright uint8 image -> its crop grid at native resolution, the route native_crops checkpoints use."""
    h, w = arr.shape[:2]
    side = spec.input_size
    boxes = crop_boxes(w, h, spec)
    crops = np.stack([pad_to(arr[b.y: b.y + side, b.x: b.x + side], side) for b in boxes])
    return Prepared(normalise(crops, spec), tuple(boxes), w, h)


def preprocess_bytes(data: bytes, spec: Preprocessing, max_pixels: int = MAX_PIXELS,
                     with_thumbnails: bool = False, max_scans: int = MAX_JPEG_SCANS) -> Prepared:
    """File bytes -> model inputs. Serving and evaluation both call exactly this.

    with_thumbnails: also make the stored thumbnails, from the same decode where the route keeps full
    resolution (a whole-image route decodes JPEG at a reduced scale, so it decodes again for them).
    """
    if spec.native:
        img = open_image(data, max_pixels, max_scans)  # the usual checks and refusals, once for either route
        if (regions := _native_from_regions(data, img, spec, with_thumbnails)) is not None:
            return regions
        stored, upright = decode_stored(data, max_pixels, max_scans, padded=with_thumbnails, opened=img)
        prepared = native_crops(upright(stored[..., :3]), spec)
        return replace(prepared, thumbnails=thumbnails(stored, upright)) if with_thumbnails else prepared
    img = load_rgb(data, max_pixels, target=spec.input_size, max_scans=max_scans)
    prepared = Prepared(to_array(img, spec)[None], (Box(0, 0, *img.size),), *img.size)
    if with_thumbnails:
        prepared = replace(prepared, thumbnails=thumbnails_of_bytes(data, max_pixels, max_scans))
    return prepared


def _native_from_regions(data: bytes, img: Image.Image, spec: Preprocessing,
                         with_thumbnails: bool) -> Prepared | None:
    """A large sequential JPEG's crops, and its thumbnails, from one entropy decode (shared.jpeg_regions):
    the same crop pixels as the whole decode, bit for bit, in about 46 ms of a 12-megapixel photo's 63.

    Only where the blocks' means are a large enough 512-px rendition (REGIONS_MIN_SIDE); None where this
    route does not apply or the file is refused by it, and the whole decode then takes the file."""
    if (img.format != "JPEG" or img.mode not in ("RGB", "L") or max(img.size) < REGIONS_MIN_SIDE
            or not isinstance(data, bytes) or not jpeg_regions.available() or not single_scan_jpeg(data)):
        return None
    upright = _upright_view(img)
    try:
        head = jpeg_regions.header(data)
        if (head.width, head.height) != img.size:
            return None
        height, width = upright(np.empty((head.height, head.width, 0), np.uint8)).shape[:2]  # a view of nothing
        boxes = crop_boxes(width, height, spec)
        rects = [_stored_rect(b, upright, head.width, head.height) for b in boxes]
        pixels, dc = jpeg_regions.decode_regions(data, head, rects, with_dc=with_thumbnails)
    except jpeg_regions.Unavailable:
        return None
    crops = np.stack([pad_to(np.ascontiguousarray(upright(p)), spec.input_size) for p in pixels])
    return Prepared(normalise(crops, spec), tuple(boxes), width, height,
                    thumbnails(dc, upright) if with_thumbnails else None)


def _stored_rect(box: Box, upright: Callable[[np.ndarray], np.ndarray], width: int, height: int) -> jpeg_regions.Rect:
    """Where an upright box lies in the file's stored pixels: the orientation's own view applied to index
    planes (broadcast, so nothing of the image's size is allocated)."""
    rows = np.broadcast_to(np.arange(height)[:, None, None], (height, width, 1))
    cols = np.broadcast_to(np.arange(width)[None, :, None], (height, width, 1))
    r, c = (upright(a)[box.y: box.y + box.h, box.x: box.x + box.w] for a in (rows, cols))
    return jpeg_regions.Rect(int(c.min()), int(r.min()), int(c.max() - c.min()) + 1, int(r.max() - r.min()) + 1)


def thumbnails_of_bytes(data: bytes, max_pixels: int = MAX_PIXELS, max_scans: int = MAX_JPEG_SCANS) -> dict[int, bytes]:
    """Thumbnails from a file, decoded at the largest rendition's scale (a JPEG never at full size)."""
    return thumbnails(load_rgb(data, max_pixels, target=max(THUMBNAIL_SIZES), max_scans=max_scans))


REDUCED_ENOUGH = 0.85  # a rendition may come out this much smaller than its size, to be made in one pass
# From this side on, a JPEG's blocks (8 px) are a large enough largest rendition: see _native_from_regions.
REGIONS_MIN_SIDE = 8 * math.ceil(REDUCED_ENOUGH * max(THUMBNAIL_SIZES))


def thumbnails(pixels: np.ndarray | Image.Image, upright: Callable[[np.ndarray], np.ndarray] = _as_is) -> dict[int, bytes]:
    """JPEG renditions of an image, largest first so each is shrunk from the one before.

    Made by the worker from pixels it decoded anyway; the web only serves the stored files, so a page of
    results never makes the web decode an upload. ``upright`` (a view, see decode_stored) is applied to the
    largest rendition, not to the full-size pixels. JPEG, not PNG: a 512-px PNG of a photo took longer to
    compress than the photo took to decode, and is four times the size.
    """
    if isinstance(pixels, Image.Image):
        img = pixels
    elif pixels.shape[-1] == 4 and pixels.flags.c_contiguous:  # RGBX from the decoder: shared, not copied
        img = Image.frombuffer("RGBX", (pixels.shape[1], pixels.shape[0]), pixels, "raw", "RGBX", 0, 1)
    else:
        img = Image.fromarray(np.ascontiguousarray(pixels))
    out = {}
    for i, size in enumerate(sorted(THUMBNAIL_SIZES, reverse=True)):
        factor = math.ceil(max(img.size) / size)
        if i == 0 and factor >= 2 and max(img.size) / factor >= REDUCED_ENOUGH * size:
            # A box average straight to within 15% under the size (a 4000-px photo: 500 px), with no second
            # filter: the full-size pass is the cost, and a bicubic pass after it cost half as much again.
            img = img.reduce(factor)
        else:
            # reducing_gap 1: a box filter takes the image to within 2x of the size, bicubic the rest (a box
            # average antialiases as well as bicubic does at these factors, at a fraction of the cost)
            img.thumbnail((size, size), Image.Resampling.BICUBIC, reducing_gap=1.0)
        if i == 0:
            img = img.convert("RGB")
            if upright is not _as_is:
                img = Image.fromarray(np.ascontiguousarray(upright(np.asarray(img))))
        buf = io.BytesIO()
        img.save(buf, format="JPEG", quality=THUMBNAIL_QUALITY)
        out[size] = buf.getvalue()
    return out
