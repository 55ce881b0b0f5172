"""People's verdicts as training data: `pixelproof export-reviews` writes the reviewed uploads into the image
folder layout training reads (real/, fake/), so a model can be fine-tuned on the mistakes people found."""
from __future__ import annotations

import csv
import re
from collections.abc import Sequence
from pathlib import Path

from sqlalchemy import select

from .db import Database
from .models import ImageItem, Job, Review, csv_cell
from .storage import LocalStorage

SAFE_SUFFIX = re.compile(r"^\.[a-z0-9]{1,5}$")
# "<source>__<id>": training's source-held-out splits see reviewed images as one source, "review".
SOURCE = "review"


class UnknownJob(ValueError):
    """A --job that names no job: a mistyped id must not pass for a job without reviews."""


def export_reviews(db: Database, storage: LocalStorage, out: Path, job_ids: Sequence[str] | None = None) -> dict:
    """Copy each reviewed upload (verdict real or fake; unsure ones are left out) to out/<verdict>/, once per
    content, named by its hash (never by the uploaded name), and list them in out/reviews.csv."""
    query = (select(ImageItem.job_id, ImageItem.filename, ImageItem.sha256, ImageItem.label, ImageItem.p_fake,
                    Review.verdict, Review.note)
             .join(Review, Review.image_id == ImageItem.id).order_by(ImageItem.id))
    if job_ids:
        query = query.where(ImageItem.job_id.in_(list(job_ids)))
    counts = {"real": 0, "fake": 0, "unsure": 0, "missing": 0}
    written: set[str] = set()
    if job_ids:
        with db.session() as s:
            unknown = sorted(set(job_ids) - set(s.scalars(select(Job.id).where(Job.id.in_(list(job_ids))))))
        if unknown:
            raise UnknownJob(f"no job {', '.join(unknown)} in this database; nothing was written")
    out.mkdir(parents=True, exist_ok=True)
    with db.session() as s, open(out / "reviews.csv", "w", newline="") as manifest:
        writer = csv.writer(manifest)
        writer.writerow(["file", "verdict", "note", "job_id", "filename", "model_label", "p_fake"])
        for job_id, filename, sha, label, p_fake, verdict, note in s.execute(query):
            if verdict not in ("real", "fake"):
                counts["unsure"] += 1
                continue
            suffix = Path(filename).suffix.lower()
            name = f"{SOURCE}__{sha[:24]}{suffix if SAFE_SUFFIX.match(suffix) else '.img'}"
            target = out / verdict / name
            if sha + verdict not in written:
                try:
                    data = storage.read(sha)
                except FileNotFoundError:
                    counts["missing"] += 1
                    continue
                target.parent.mkdir(exist_ok=True)
                target.write_bytes(data)
                written.add(sha + verdict)
                counts[verdict] += 1
            writer.writerow([str(target.relative_to(out)), verdict, csv_cell(note or ""), job_id, csv_cell(filename),
                             label or "",
                             "" if p_fake is None else p_fake])
    return counts
