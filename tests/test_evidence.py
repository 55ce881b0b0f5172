"""Evidence beyond pixels, from real files made here (Content Credentials signed with the C2PA library and a
throwaway certificate, XMP/IPTC, generators' PNG chunks, camera EXIF, HEIC) through the real stack."""
from __future__ import annotations

import csv
import io
import json

import pytest

from shared.evidence import _may_hold_manifest, gather

from .corpus import heic
from .helpers import all_results, wait_done
from .processes import start_worker
from .provenance import _jpeg, broken_manifest, provenance_files, signed_jpeg, tampered


def kinds(items: list[dict]) -> list[tuple[str, str, str]]:
    return [(i["kind"], i["says"], i["strength"]) for i in items]


@pytest.mark.parametrize("name, data, expected", provenance_files(), ids=lambda v: v if isinstance(v, str) else "")
def test_each_kind_of_evidence_is_read(name, data, expected):
    items, note = gather(data)
    assert kinds(items) == expected and note is None, (items, note)


def test_a_signed_manifest_names_its_generator_and_signer_and_a_tampered_one_fails():
    items, _ = gather(signed_jpeg("Test Firefly"))
    assert "Test Firefly 3" in items[0]["detail"] and "Test Image Generator" in items[0]["detail"]
    assert "signature valid" in items[0]["detail"]
    bad, _ = gather(tampered(signed_jpeg()))
    assert "does NOT validate" in bad[0]["detail"] and "dataHash.mismatch" in bad[0]["detail"]


def test_a_malformed_manifest_costs_only_the_evidence():
    items, note = gather(broken_manifest(signed_jpeg()))
    assert items == [] and note.startswith("the Content Credentials could not be read")


def test_a_jpeg_is_searched_for_a_manifest_in_its_header_only_when_the_header_can_be_walked():
    assert _may_hold_manifest(signed_jpeg(), "image/jpeg")
    plain = _jpeg(size=(256, 256))
    scan = plain.index(b"\xff\xda")
    in_pixels = plain[: scan + 20] + b"jumb" + plain[scan + 20:]  # the bytes, by chance, in the compressed data
    assert not _may_hold_manifest(in_pixels, "image/jpeg")
    comment = b"\xff\xfe\x00\x06jumb"
    no_scan = plain[:2] + comment + plain[2:scan]  # cut before its scan: the header cannot be trusted
    assert _may_hold_manifest(no_scan, "image/jpeg")
    assert not _may_hold_manifest(plain[:2] + comment + plain[2:], "image/jpeg")  # not in an APP11 segment


@pytest.mark.slow
def test_evidence_comes_back_through_the_stack(make_app, stack_env, tmp_path):
    files = [(n, d) for n, d, _ in provenance_files()] + [("broken.jpg", broken_manifest(signed_jpeg())),
                                                            ("phone.heic", heic((640, 480)))]
    expected = {n: e for n, _, e in provenance_files()}
    worker = start_worker(stack_env, tmp_path / "worker.log")
    try:
        client = make_app(stack_env).test_client()
        data = {"files": [(io.BytesIO(d), n) for n, d in files]}
        job = client.post("/api/jobs", data=data, content_type="multipart/form-data").get_json()
        job = wait_done(client, job["id"])
        csv_text = client.get(f"/api/jobs/{job['id']}/results?format=csv&download=1").get_data(as_text=True)
    finally:
        worker.stop()
    items = {i["filename"]: i for i in all_results(client, job["id"])}
    assert all(i["status"] == "done" for i in items.values()), items  # evidence never costs the classification
    for name, exp in expected.items():
        assert kinds(items[name]["evidence"]) == exp, (name, items[name]["evidence"])
    assert items["broken.jpg"]["evidence"] == [] and "could not be read" in items["broken.jpg"]["evidence_note"]
    assert (items["phone.heic"]["image_width"], items["phone.heic"]["image_height"]) == (640, 480)
    # how each file was encoded, read from its header by the worker, beside the verdict (and in the CSV)
    assert items["phone.heic"]["encoding"] == {"format": "HEIF"} and items["a1111.png"]["encoding"] == {"format": "PNG"}
    assert items["plain.jpg"]["encoding"] == {"format": "JPEG", "quality": 90, "quality_exact": True,
                                              "chroma": "4:2:0", "progressive": False}
    assert job["declared_ai"] == 5  # signed, tampered (its claim, weakly), XMP, A1111, ComfyUI
    # the job counts its files by encoding (stored with each prediction, read without their details)
    assert job["encodings"] == {"JPEG quality 90-94": 6, "PNG": 2, "HEIF": 1}, job["encodings"]
    rows = {r["filename"]: r for r in csv.DictReader(io.StringIO(csv_text))}
    assert kinds(json.loads(rows["credentials.jpg"]["evidence"])) == [("content_credentials", "ai", "strong")]
    assert json.loads(rows["plain.jpg"]["encoding"]) == items["plain.jpg"]["encoding"]
