#!/usr/bin/env python
"""The evidence step's cost per image against the pixel model's, single-threaded on the CPU.

On 12-megapixel JPEG photos (benchmarks/photos.py's mosaics) as they come, and the same photos with signed
Content Credentials: the median milliseconds of shared.evidence.gather (what the worker runs on the stored
bytes) against decoding, cutting crops and the forward pass of the default model. Target: under 10%.
Writes benchmarks/EVIDENCE_RESULTS.md; `--smoke` runs on two small photos so the harness cannot rot.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.photos import cost_split, make_photos  # noqa: E402
from benchmarks.stack import machine  # noqa: E402
from shared.evidence import gather  # noqa: E402

TARGET = 0.10


def sign(data: bytes) -> bytes:
    """The photo with a Content Credentials manifest (the tests' throwaway signer)."""
    import io
    import json

    import c2pa

    from tests.provenance import AI_SOURCE, signing_chain

    chain, key = signing_chain()
    signer = c2pa.Signer.from_info(c2pa.C2paSignerInfo(alg=b"es256", sign_cert=chain, private_key=key, ta_url=None))
    manifest = {"claim_generator_info": [{"name": "benchmark", "version": "1"}], "assertions": [
        {"label": "c2pa.actions", "data": {"actions": [{"action": "c2pa.created", "digitalSourceType": AI_SOURCE}]}}]}
    out = io.BytesIO()
    c2pa.Builder(json.dumps(manifest)).sign(signer, "image/jpeg", io.BytesIO(data), out)
    return out.getvalue()


def median_ms(datas: list[bytes], reps: int) -> float:
    times = []
    for _ in range(reps):
        for d in datas:
            t = time.perf_counter()
            gather(d)
            times.append((time.perf_counter() - t) * 1000)
    return statistics.median(times)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--smoke", action="store_true")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "EVIDENCE_RESULTS.md"))
    args = ap.parse_args(argv)
    n, size, reps = (2, (800, 600), 1) if args.smoke else (8, (4000, 3000), 3)
    with tempfile.TemporaryDirectory() as tmp:
        photos = make_photos(Path(tmp) / "photos", n, size)
        plain = [p.read_bytes() for p in photos]
        signed = [sign(d) for d in plain]
        model = cost_split(photos, reps=reps)
    pixel_ms = model["decode"] + model["crops"] + model["forward"]
    rows = [("photos as they come (no manifest)", median_ms(plain, reps)),
            ("photos with signed Content Credentials", median_ms(signed, reps))]
    lines = [
        "# The evidence step's cost",
        "",
        f"Written by `benchmarks/evidence_cost.py`{' --smoke' if args.smoke else ''} on {machine()}: {n} JPEG "
        f"photos of {size[0]}x{size[1]}, median milliseconds per image, one thread. The pixel model's cost is "
        f"decoding ({model['decode']:.1f} ms), cutting crops ({model['crops']:.1f} ms) and the forward pass "
        f"({model['forward']:.1f} ms): {pixel_ms:.1f} ms.",
        "",
        "| files | evidence step, ms | share of the pixel model's cost | target (10%) |",
        "| --- | --- | --- | --- |",
        *[f"| {name} | {ms:.2f} | {ms / pixel_ms:.1%} | {'met' if ms / pixel_ms < TARGET else 'NOT met'} |"
          for name, ms in rows],
        "",
    ]
    report = "\n".join(lines)
    print(report)
    Path(args.out).write_text(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
