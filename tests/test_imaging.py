"""Decoding by content, with a clear refusal for everything we do not classify."""
from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from shared.imaging import (
    ImageRejected,
    Preprocessing,
    crop_boxes,
    load_rgb,
    load_rgb_array,
    normalise,
    pad_to,
    preprocess_bytes,
    single_scan_jpeg,
    thumbnails,
)
from shared.thumbnails import THUMBNAIL_SIZES, rendition

from .corpus import _orientation as exif_orientation
from .corpus import corpus, exif_rotated_jpeg, scan_bomb_jpeg

CASES = corpus()
NATIVE = Preprocessing(input_size=128, resize="native_crops", max_crops=9)


@pytest.mark.parametrize("name, data, expected", CASES, ids=[c[0] for c in CASES])
def test_corpus_file_is_classified_or_refused_clearly(name, data, expected):
    spec = Preprocessing()
    if expected == "ok":
        arr = preprocess_bytes(data, spec).inputs
        assert arr.shape == (1, 3, 32, 32) and arr.dtype == np.float32 and np.isfinite(arr).all()
        crops = preprocess_bytes(data, NATIVE).inputs  # every accepted file also reaches a crop-based model
        assert crops.shape[1:] == (3, 128, 128) and np.isfinite(crops).all()
    else:
        with pytest.raises(ImageRejected) as err:
            preprocess_bytes(data, spec)
        assert expected.lower() in str(err.value).lower()


# The metric's reason for each refusal in the corpus: a small fixed set, matched on the words of the message.
REASONS = {"notes.jpg": "not_an_image", "doc.jpg": "not_an_image", "page.jpg": "not_an_image",
           "archive.jpg": "not_an_image", "empty.heic": "not_an_image", "vector.svg": "unsupported_format",
           "bomb.png": "too_many_pixels", "absurd.png": "too_many_pixels", "huge.heic": "too_many_pixels",
           "pixel.png": "too_small", "sliver.gif": "too_small", "scans.jpg": "too_many_scans",
           "photo.avif": "unsupported_format"}  # refused only where this Pillow cannot decode AVIF


def test_each_refusal_is_counted_under_its_own_reason():
    from shared.metrics import failure_reason

    seen = {}
    for name, data, expected in corpus():
        if expected != "ok":
            with pytest.raises(ImageRejected) as err:
                preprocess_bytes(data, NATIVE)
            seen[name] = failure_reason(str(err.value))
    assert seen == {name: REASONS.get(name, "undecodable") for name in seen}


def _jpeg(mode: str = "RGB", **kw) -> bytes:
    buf = io.BytesIO()
    Image.new(mode, (40, 30), 90).save(buf, "JPEG", **kw)
    return buf.getvalue()


def test_only_sequential_single_scan_jpegs_skip_the_scan_count():
    """Skipping the count is safe only where libjpeg decodes one pass and stops at a second scan (the corpus's
    baseline-scans.jpg); every other JPEG, or a header that cannot be read, is counted."""
    assert single_scan_jpeg(_jpeg()) and single_scan_jpeg(_jpeg("L")) and single_scan_jpeg(exif_rotated_jpeg())
    assert single_scan_jpeg(_jpeg(subsampling=0, qtables="web_high"))
    assert not single_scan_jpeg(_jpeg(progressive=True))
    assert not single_scan_jpeg(scan_bomb_jpeg(60, 60, 3))
    data = _jpeg()
    sof = data.index(b"\xff\xc0")
    assert not single_scan_jpeg(data[:sof])  # cut before its frame header
    assert not single_scan_jpeg(data[:sof] + b"\xff\xc2" + data[sof + 2:])  # the same frame, declared progressive
    sos = data.index(b"\xff\xda")
    assert not single_scan_jpeg(data[:sos + 4] + b"\x01" + data[sos + 5:])  # a first scan of one component of three


def test_exif_rotation_is_applied():
    img = load_rgb(exif_rotated_jpeg(), 10**8)
    assert img.size == (20, 60)


def test_raw_size_never_reaches_the_model():
    """A large and a small copy of one picture give nearly the same input: only content survives."""
    rng = np.random.default_rng(1)
    base = Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)).resize((64, 64), Image.NEAREST)
    small, big = io.BytesIO(), io.BytesIO()
    base.save(small, "PNG")
    base.resize((1024, 1024), Image.NEAREST).save(big, "PNG")
    a, b = (preprocess_bytes(x.getvalue(), Preprocessing()).inputs[0] for x in (small, big))
    assert a.shape == b.shape == (3, 32, 32)
    assert np.abs(a - b).mean() < 0.15


def test_thumbnails_are_fresh_jpegs_of_each_rendition():
    data = [d for n, d, e in CASES if n == "cmyk.jpg"][0]
    prepared = preprocess_bytes(data, Preprocessing(input_size=128, resize="native_crops"), 10**8, with_thumbnails=True)
    assert sorted(prepared.thumbnails) == sorted(THUMBNAIL_SIZES)
    for size, jpeg in prepared.thumbnails.items():
        img = Image.open(io.BytesIO(jpeg))
        assert img.format == "JPEG" and img.mode == "RGB" and max(img.size) <= size
    portrait = np.zeros((1000, 600, 3), np.uint8)
    assert Image.open(io.BytesIO(thumbnails(portrait)[128])).size == (77, 128)  # aspect kept
    assert rendition(96) == 128 and rendition(128) == 128 and rendition(129) == 512 and rendition(512) == 512


@pytest.mark.parametrize("side, largest", [(4000, 500), (4032, 504), (4624, 463), (1100, 512), (600, 512), (300, 300)])
def test_the_largest_thumbnail_is_at_most_its_size_and_never_much_smaller(side, largest):
    """A large photo's 512 rendition is one box average (4000 px / 8 = 500); where one factor would leave it
    more than 15% small (1100 px / 3 = 367), it is made in two passes to exactly 512."""
    pixels = np.zeros((side * 3 // 4, side, 4), np.uint8)  # RGBX, as the worker's decoder gives it
    pixels[:, : side // 2] = 200
    sizes = {s: Image.open(io.BytesIO(j)).size for s, j in thumbnails(pixels).items()}
    assert sizes[512][0] == largest and sizes[128][0] == 128
    assert abs(sizes[512][1] - largest * 3 / 4) <= 1  # aspect kept


@pytest.mark.parametrize("orientation", range(1, 9))
def test_thumbnails_of_a_rotated_photo_are_upright(orientation):
    """The worker shrinks the pixels as stored and turns only the thumbnail: it must look as the upright
    image shrunk would."""
    exif = Image.Exif()
    exif[0x0112] = orientation
    buf = io.BytesIO()
    quadrants = np.zeros((600, 1200, 3), np.uint8)
    quadrants[:300, :600] = (255, 0, 0)
    quadrants[:300, 600:] = (0, 255, 0)
    quadrants[300:, :600] = (0, 0, 255)
    quadrants[300:, 600:] = (255, 255, 255)
    Image.fromarray(quadrants).save(buf, "JPEG", quality=95, exif=exif)
    upright = np.asarray(load_rgb(buf.getvalue(), 10**8))
    thumbs = preprocess_bytes(buf.getvalue(), NATIVE, 10**8, with_thumbnails=True).thumbnails
    for size, jpeg in thumbs.items():
        got = np.asarray(Image.open(io.BytesIO(jpeg)).convert("RGB"), dtype=np.int16)
        want = Image.fromarray(upright)
        want.thumbnail((size, size), Image.BICUBIC)
        want = np.asarray(want, dtype=np.int16)
        assert got.shape == want.shape and max(got.shape[:2]) == size
        assert np.abs(got - want).mean() < 4  # the same picture, up to JPEG and filter differences


def _photo(w: int, h: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.asarray(Image.fromarray(rng.integers(0, 255, (h // 4 + 1, w // 4 + 1, 3), dtype=np.uint8))
                      .resize((w, h), Image.BICUBIC))


@pytest.mark.parametrize("subsampling", [0, 2])
@pytest.mark.parametrize("orientation", range(1, 9))
def test_fast_jpeg_decoder_gives_pillows_pixels_upright(orientation, subsampling):
    """The native route decodes JPEG with simplejpeg; it must hand the model exactly what Pillow would."""
    exif = Image.Exif()
    exif[0x0112] = orientation
    buf = io.BytesIO()
    Image.fromarray(_photo(70, 40)).save(buf, "JPEG", quality=85, subsampling=subsampling, exif=exif)
    ours = load_rgb_array(buf.getvalue(), 10**8)
    np.testing.assert_array_equal(ours, np.asarray(load_rgb(buf.getvalue(), 10**8)))
    _same_crops_with_thumbnails(buf.getvalue())


def test_a_grayscale_jpeg_gives_the_same_crops_when_the_worker_also_makes_thumbnails():
    buf = io.BytesIO()
    Image.fromarray(_photo(140, 90)[..., 0], "L").save(buf, "JPEG", quality=90)
    thumbs = _same_crops_with_thumbnails(buf.getvalue())
    np.testing.assert_array_equal(load_rgb_array(buf.getvalue(), 10**8), np.asarray(load_rgb(buf.getvalue(), 10**8)))
    assert Image.open(io.BytesIO(thumbs[128])).mode == "RGB"


def _same_crops_with_thumbnails(data: bytes) -> dict[int, bytes]:
    """The worker decodes to RGBX when it also makes thumbnails: the model must see the same crops."""
    spec = Preprocessing(input_size=32, resize="native_crops", max_crops=9)
    plain, worker = (preprocess_bytes(data, spec, 10**8, with_thumbnails=t) for t in (False, True))
    assert worker.thumbnails and plain.boxes == worker.boxes
    np.testing.assert_array_equal(plain.inputs, worker.inputs)
    return worker.thumbnails


def test_crop_grid_covers_an_image_and_is_bounded_for_large_ones():
    def covered(w, h):
        mask = np.zeros((h, w), bool)
        for b in crop_boxes(w, h, NATIVE):
            assert 0 <= b.x and b.x + b.w <= w and 0 <= b.y and b.y + b.h <= h
            mask[b.y: b.y + b.h, b.x: b.x + b.w] = True
        return mask.all()

    assert len(crop_boxes(256, 256, NATIVE)) == 4 and covered(256, 256)
    assert len(crop_boxes(384, 300, NATIVE)) == 9 and covered(384, 300)
    big = crop_boxes(4032, 3024, NATIVE)
    assert len(big) == 9  # bounded: a 12-megapixel photo is sampled by a 3 x 3 grid, corner to corner
    assert {(b.x, b.y) for b in big} >= {(0, 0), (4032 - 128, 3024 - 128)}
    assert crop_boxes(4032, 3024, NATIVE) == big  # deterministic


def test_native_crops_are_the_files_own_pixels_never_resampled():
    arr = _photo(300, 200)
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, "PNG")
    prepared = preprocess_bytes(buf.getvalue(), NATIVE)
    assert (prepared.width, prepared.height) == (300, 200)
    for crop, b in zip(prepared.inputs, prepared.boxes):
        np.testing.assert_allclose(crop, normalise(arr[None, b.y: b.y + 128, b.x: b.x + 128], NATIVE)[0])


def test_an_image_smaller_than_a_crop_is_mirrored_up_to_it():
    arr = _photo(50, 30)
    padded = pad_to(arr, 128)
    assert padded.shape == (128, 128, 3)
    np.testing.assert_array_equal(padded[:30, :50], arr)
    np.testing.assert_array_equal(padded[:30, 50:100], arr[:, ::-1])  # mirrored, no interpolated pixel
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, "PNG")
    prepared = preprocess_bytes(buf.getvalue(), NATIVE)
    assert prepared.inputs.shape == (1, 3, 128, 128) and prepared.boxes[0].w == 50 and prepared.boxes[0].h == 30


def test_heic_from_a_phone_decodes_upright_and_only_once():
    """HEIF carries rotation as irot/imir boxes, which libheif applies; an EXIF orientation inside a HEIC is
    ignored by the format's rules (pillow-heif resets it to 1), so nothing turns the image a second time."""
    from .corpus import heic

    data = heic((64, 48), exif=exif_orientation(6))
    img = load_rgb(data, 10**8)
    assert img.size == (64, 48) and img.getexif().get(0x0112, 1) == 1
    assert load_rgb_array(data, 10**8).shape == (48, 64, 3)
    prepared = preprocess_bytes(data, Preprocessing(input_size=128, resize="native_crops"), 10**8, with_thumbnails=True)
    assert (prepared.width, prepared.height) == (64, 48) and sorted(prepared.thumbnails) == sorted(THUMBNAIL_SIZES)
