"""Large JPEGs take one entropy decode for their crops and thumbnails (shared.jpeg_regions): the model must see
exactly the pixels the whole decode gives, in every orientation and chroma layout, and every file this route
cannot take must still be decoded (or refused) as before."""
from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from shared import jpeg_regions
from shared.imaging import (
    _ORIENT,
    REGIONS_MIN_SIDE,
    ImageRejected,
    Preprocessing,
    load_rgb,
    load_rgb_array,
    native_crops,
    preprocess_bytes,
)

from .conftest import unavailable
from .corpus import _orientation as exif_orientation

NATIVE = Preprocessing(input_size=128, resize="native_crops", max_crops=9)
SIZE = (3500, 2001)  # over REGIONS_MIN_SIDE, and neither side a multiple of any MCU


@pytest.fixture(autouse=True)
def _library():
    if not jpeg_regions.available():
        unavailable("libturbojpeg is not installed (Debian: libturbojpeg0)")


@pytest.fixture
def routes(monkeypatch) -> list[str]:
    """Which route each preprocess_bytes call took: 'regions' when the one-decode route produced its crops."""
    taken: list[str] = []
    real = jpeg_regions.decode_regions

    def spy(*args, **kwargs):
        out = real(*args, **kwargs)
        taken.append("regions")
        return out

    monkeypatch.setattr(jpeg_regions, "decode_regions", spy)
    return taken


_PHOTO: dict[tuple[int, int], np.ndarray] = {}


def _photo(size=SIZE, grain: int = 8) -> np.ndarray:
    """Detail at every scale down to `grain` px, sharp colour edges (where chroma up-sampling differs most)
    and flat areas."""
    if (size, grain) not in _PHOTO:
        w, h = size
        rng = np.random.default_rng(1)
        img = Image.fromarray(rng.integers(0, 255, (h // grain + 1, w // grain + 1, 3), dtype=np.uint8)).resize(
            (w, h), Image.BICUBIC)
        arr = np.array(img)
        arr[: h // 3, : w // 5] = (250, 10, 10)
        arr[h // 2:, w // 2: w // 2 + 7] = (10, 250, 10)
        arr = np.clip(arr + rng.integers(-6, 7, arr.shape), 0, 255).astype(np.uint8)
        _PHOTO[size, grain] = arr
    return _PHOTO[size, grain]


def _jpeg(arr: np.ndarray, orientation: int = 1, **save) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, "JPEG", exif=exif_orientation(orientation), **{"quality": 92, **save})
    return buf.getvalue()


def _assert_whole_decode_crops(data: bytes, routes: list[str]) -> None:
    got = preprocess_bytes(data, NATIVE, 10**9, with_thumbnails=True)
    assert routes == ["regions"]
    want = native_crops(load_rgb_array(data, 10**9), NATIVE)
    assert (got.width, got.height, got.boxes) == (want.width, want.height, want.boxes)
    np.testing.assert_array_equal(got.inputs, want.inputs)


@pytest.mark.parametrize("orientation", range(1, 9))
def test_crops_of_a_rotated_photo_are_the_whole_decodes_bit_for_bit(orientation, routes):
    _assert_whole_decode_crops(_jpeg(_photo(), orientation, subsampling=2), routes)


@pytest.mark.parametrize("save", [{"subsampling": 0}, {"subsampling": 1}, {"subsampling": 2, "quality": 60},
                                  {"subsampling": 2, "restart_marker_blocks": 7}], ids=["444", "422", "420-q60", "restarts"])
def test_crops_are_the_whole_decodes_in_every_chroma_layout(save, routes):
    _assert_whole_decode_crops(_jpeg(_photo(), 6, **save), routes)


def test_a_grayscale_photo_gives_the_whole_decodes_crops_and_grey_thumbnails(routes):
    data = _jpeg(_photo()[..., 1].copy())
    _assert_whole_decode_crops(data, routes)
    thumb = Image.open(io.BytesIO(preprocess_bytes(data, NATIVE, 10**9, with_thumbnails=True).thumbnails[512]))
    assert thumb.mode == "RGB"
    rgb = np.asarray(thumb, dtype=np.int16)
    assert np.abs(rgb[..., 0] - rgb[..., 2]).max() <= 2


@pytest.mark.parametrize("orientation", [1, 3, 6, 8])
def test_thumbnails_from_the_blocks_means_show_the_upright_photo(orientation, routes):
    data = _jpeg(_photo(grain=64), orientation, subsampling=2)
    thumbs = preprocess_bytes(data, NATIVE, 10**9, with_thumbnails=True).thumbnails
    assert routes == ["regions"]
    stored = Image.open(io.BytesIO(data)).convert("RGB")  # as stored, not turned upright
    blocks = np.asarray(stored.reduce(8))  # the means of its 8 x 8 blocks, the last ones partial
    want = np.ascontiguousarray(orient(blocks) if (orient := _ORIENT.get(orientation)) else blocks)
    for size, jpeg in thumbs.items():
        got = Image.open(io.BytesIO(jpeg))
        assert got.format == "JPEG" and got.mode == "RGB"
        if size != 512:
            assert max(got.size) == size  # shrunk from the 512 one, as before
            continue
        assert got.size == (want.shape[1], want.shape[0])  # 3500 x 2001 in 8-px blocks: 438 x 251, upright
        # the same picture: what differs is chroma (kept per 16 px in 4:2:0, so saturated colour that changes
        # every 8 px, as here, blurs) and two JPEG encodes; a turned or miscoloured picture differs by 50-90
        assert np.abs(np.asarray(got, dtype=np.int16) - want.astype(np.int16)).mean() < 8


def test_files_this_route_does_not_take_are_decoded_whole(routes):
    small = _jpeg(_photo((REGIONS_MIN_SIDE - 8, 1000)))
    progressive = _jpeg(_photo(), progressive=True)
    png = io.BytesIO()
    Image.fromarray(_photo()).save(png, "PNG", compress_level=1)
    for data in (small, progressive, png.getvalue()):
        got = preprocess_bytes(data, NATIVE, 10**9, with_thumbnails=True)
        np.testing.assert_array_equal(got.inputs, native_crops(load_rgb_array(data, 10**9), NATIVE).inputs)
        assert sorted(got.thumbnails) == [128, 512]
    assert routes == []


def test_a_truncated_or_corrupt_large_jpeg_is_refused_as_the_whole_decode_refuses_it():
    data = _jpeg(_photo())
    with pytest.raises(ImageRejected, match="truncated or corrupt"):
        preprocess_bytes(data[: len(data) // 2], NATIVE, 10**9, with_thumbnails=True)
    scan = data.index(b"\xff\xda")
    garbled = data[: scan + 600] + bytes(range(256)) * 40 + data[scan + 600 + 10240:]
    with pytest.raises(ImageRejected):
        preprocess_bytes(garbled, NATIVE, 10**9, with_thumbnails=True)


def test_without_the_library_the_whole_decode_serves(monkeypatch, routes):
    data = _jpeg(_photo(), 6)
    with_library = preprocess_bytes(data, NATIVE, 10**9)
    monkeypatch.setattr(jpeg_regions, "_LIB", None)
    assert not jpeg_regions.available()
    without = preprocess_bytes(data, NATIVE, 10**9, with_thumbnails=True)
    assert routes == ["regions"]  # the first call only
    np.testing.assert_array_equal(without.inputs, with_library.inputs)
    assert sorted(without.thumbnails) == [128, 512]


def test_the_decode_pool_threads_each_use_their_own_handle():
    from concurrent.futures import ThreadPoolExecutor

    files = [_jpeg(_photo(), o) for o in (1, 6)]
    want = [preprocess_bytes(d, NATIVE, 10**9).inputs for d in files]
    with ThreadPoolExecutor(4) as pool:
        got = list(pool.map(lambda i: preprocess_bytes(files[i % 2], NATIVE, 10**9, with_thumbnails=True).inputs, range(8)))
    for i, inputs in enumerate(got):
        np.testing.assert_array_equal(inputs, want[i % 2])


def test_a_threads_handle_is_destroyed_when_the_thread_ends(monkeypatch):
    import gc
    import threading

    made, destroyed, real = [], [], jpeg_regions._LIB.tjDestroy
    monkeypatch.setattr(jpeg_regions._LIB, "tjDestroy", lambda h: destroyed.append(h) or real(h))

    def work():
        preprocess_bytes(_jpeg(_photo()), NATIVE, 10**9)
        made.append(jpeg_regions._local.handle.value)

    t = threading.Thread(target=work)
    t.start()
    t.join()
    gc.collect()
    assert len(made) == 1 and made[0] in destroyed
