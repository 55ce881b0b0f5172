"""The marker segments of a JPEG's header, read without decoding: one walk for every question asked of them
(shared.imaging.single_scan_jpeg, shared.jpeg_regions.dc_quantisers, shared.evidence's C2PA check,
shared.encoding's quality and chroma)."""
from __future__ import annotations

from collections.abc import Iterator

SOS = 0xDA
DQT = 0xDB  # quantisation tables
APP11 = 0xEB  # the segment that carries JUMBF boxes (C2PA manifests)


def header_segments(data: bytes) -> Iterator[tuple[int, bytes]]:
    """(marker, payload) of each segment after the start of image, up to and including the first scan's header.

    Stops early at anything unexpected: a byte that is no marker, a second start of image or an end of image
    before any scan, a length under 2. A caller that needs a segment it was not given answers as for an
    unusual file."""
    i, n = 2, len(data)
    while i + 4 <= n:
        if data[i] != 0xFF:
            return
        marker = data[i + 1]
        if marker == 0xFF:  # fill byte before a marker
            i += 1
            continue
        if marker in (0xD8, 0xD9):
            return
        length = int.from_bytes(data[i + 2: i + 4], "big")
        if length < 2:
            return
        yield marker, data[i + 4: i + 2 + length]
        if marker == SOS:
            return
        i += 2 + length


def quantisation_tables(segment: bytes) -> Iterator[tuple[int, list[int]]]:
    """(table id, its 64 quantisers in the zig-zag order they are stored in) for each table a DQT segment holds,
    8- or 16-bit. A table cut short by the segment's end is not given (nor anything after it)."""
    j = 0
    while j < len(segment):
        wide, table = segment[j] >> 4, segment[j] & 15
        size = 64 * (2 if wide else 1)
        raw = segment[j + 1: j + 1 + size]
        if len(raw) < size:
            return
        yield table, [int.from_bytes(raw[2 * k: 2 * k + 2], "big") for k in range(64)] if wide else list(raw)
        j += 1 + size
