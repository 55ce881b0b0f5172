"""The worker's service functions, called directly with the real model and a real database (no Celery)."""
from __future__ import annotations

import io
from datetime import timedelta

import pytest
from sqlalchemy import func, select, update

from shared.db import Database
from shared.deletion import delete_jobs
from shared.jobs import Upload, add_images, cancel, job_status
from shared.metrics import metrics
from shared.migrate import upgrade
from shared.models import ImageItem, Job, Prediction, utcnow
from shared.settings import DEFAULT_CHECKPOINT
from shared.storage import LocalStorage
from worker.inference import Classifier
from worker.service import classify_images, sweep_stale

from .corpus import corpus


@pytest.fixture(scope="module")
def classifier():
    return Classifier(DEFAULT_CHECKPOINT, "cpu", batch_size=4, decode_threads=2)


@pytest.fixture
def world(db_url, tmp_path, mini_dir):
    upgrade(db_url)
    db = Database(db_url)
    storage = LocalStorage(tmp_path / "uploads")
    files = [(p.read_bytes(), f"{p.parent.name}/{p.name}") for p in sorted(mini_dir.rglob("*.jpg"))[:10]]
    files += [(data, name) for name, data, _ in corpus()]
    uploads = []
    for data, name in files:
        sha, size = storage.put_stream(io.BytesIO(data), 10**8)
        uploads.append(Upload(name, sha, size))
    with db.session() as s:
        job = Job()
        s.add(job)
        ids = add_images(s, job, uploads)
        s.commit()
    yield db, storage, ids, files
    db.engine.dispose()


def test_classify_is_idempotent_and_errors_stay_per_image(world, classifier):
    db, storage, ids, files = world
    first = classify_images(db, storage, classifier, ids[:7])
    second = classify_images(db, storage, classifier, ids)  # a redelivery overlapping the first batch
    third = classify_images(db, storage, classifier, ids)
    assert first["claimed"] == 7 and second["claimed"] == len(ids) - 7 and third == {"claimed": 0}
    with db.session() as s:
        rows = {i.filename: i for i in s.scalars(select(ImageItem))}
        cached = s.scalar(select(func.count()).select_from(Prediction))
    expected = {name: exp for name, _, exp in corpus()}
    for name, item in rows.items():
        assert item.status in ("done", "error") and item.attempts == 1
        assert item.model_version == classifier.version
        if expected.get(name, "ok") == "ok":
            assert item.status == "done" and 0 <= item.p_fake <= 1, name
            assert item.label == classifier.meta.label_rule.label(item.p_fake), name
        else:
            assert item.status == "error" and expected[name].lower() in item.error.lower(), (name, item.error)
    assert cached == len({sha for sha in (i.sha256 for i in rows.values())})


def test_missing_upload_is_an_error_but_not_remembered(world, classifier):
    db, storage, ids, files = world
    with db.session() as s:
        sha = s.get(ImageItem, ids[0]).sha256
    storage.path(sha).unlink()
    classify_images(db, storage, classifier, ids[:1])
    with db.session() as s:
        assert "missing" in s.get(ImageItem, ids[0]).error
        assert s.get(Prediction, (sha, classifier.version)) is None


def test_sweeper_requeues_only_stale_unfinished_images(world, classifier):
    db, storage, ids, files = world
    classify_images(db, storage, classifier, ids[:3])
    with db.session() as s:
        s.execute(update(ImageItem).where(ImageItem.id.in_(ids[3:6])).values(touched_at=utcnow() - timedelta(hours=1)))
        s.execute(update(ImageItem).where(ImageItem.id.in_(ids[:3])).values(touched_at=utcnow() - timedelta(hours=1)))
        s.commit()
    sent = []
    assert sweep_stale(db, sent.extend, stale_after=600) == 3
    assert sorted(sent) == sorted(ids[3:6])
    assert sweep_stale(db, sent.extend, stale_after=600) == 0  # touched again: not re-sent at once


def test_predictions_record_where_the_model_looked(world, classifier):
    """Each prediction keeps its crop boxes and scores, the image size and the thresholds it was labelled by,
    and a cached prediction hands them back unchanged."""
    from PIL import Image

    db, storage, ids, files = world
    big = io.BytesIO()
    Image.effect_noise((700, 300), 40).convert("RGB").save(big, "JPEG", quality=90)
    sha, size = storage.put_stream(io.BytesIO(big.getvalue()), 10**8)
    with db.session() as s:
        job = Job()
        s.add(job)
        [new_id] = add_images(s, job, [Upload("wide.jpg", sha, size)])
        [again_id] = add_images(s, job, [Upload("again.jpg", sha, size)])
        s.commit()
    classify_images(db, storage, classifier, [new_id])
    assert classify_images(db, storage, classifier, [again_id])["cached"] == 1
    with db.session() as s:
        details = s.get(Prediction, (sha, classifier.version)).details
        item = s.get(ImageItem, again_id)
    side = classifier.meta.preprocessing.input_size
    assert (details["width"], details["height"]) == (700, 300)
    assert details["thresholds"] == classifier.meta.label_rule.to_dict()
    regions = details["regions"]
    assert 1 < len(regions) <= classifier.meta.preprocessing.max_crops
    assert all(r["x"] + r["w"] <= 700 and r["y"] + r["h"] <= 300 and r["w"] == min(side, 700) for r in regions)
    assert item.label == classifier.meta.label_rule.label(item.p_fake)


def test_a_prediction_cached_before_results_named_their_encoding_gets_it_from_the_file(world, classifier, caplog):
    """An earlier version stored predictions without the file's encoding and evidence. A job that reuses one
    gets them from the stored file's header, once, with the cached score unchanged, so the job counts the
    file in its encodings and its declared-AI count."""
    from .provenance import a1111_png

    db, storage, ids, files = world
    sha, size = storage.put_stream(io.BytesIO(a1111_png()), 10**8)

    def job_of(name):
        with db.session() as s:
            job = Job()
            s.add(job)
            [image_id] = add_images(s, job, [Upload(name, sha, size)])
            s.commit()
            return job.id, image_id

    _, first = job_of("first.png")
    classify_images(db, storage, classifier, [first])
    with db.session() as s:  # as an earlier version left the row: a score, its regions, no file facts
        row = s.get(Prediction, (sha, classifier.version))
        fresh = dict(row.details)
        row.details = {k: v for k, v in fresh.items() if k not in ("encoding", "evidence", "evidence_note")}
        row.encoding = row.declares_ai = None
        score = row.p_fake
        s.commit()

    job_id, again = job_of("again.png")
    caplog.set_level("INFO", logger="worker.service")
    assert classify_images(db, storage, classifier, [again])["cached"] == 1
    with db.session() as s:
        row = s.get(Prediction, (sha, classifier.version))
        assert row.details == fresh and row.p_fake == score
        assert (row.encoding, row.declares_ai) == ("PNG", True)
        status = job_status(s, s.get(Job, job_id))
    assert status["encodings"] == {"PNG": 1}, status
    assert status["declared_ai"] == 1, status
    assert "event=cached_predictions_filled images=1" in caplog.text
    caplog.clear()
    _, third = job_of("third.png")  # filled once: the next reuse finds nothing to fill
    assert classify_images(db, storage, classifier, [third])["cached"] == 1
    assert "cached_predictions_filled" not in caplog.text
    with db.session() as s:  # as a version in between left it: evidence (here, none found), no encoding
        row = s.get(Prediction, (sha, classifier.version))
        row.details = {**{k: v for k, v in fresh.items() if k != "encoding"}, "evidence": [], "evidence_note": None}
        row.encoding = row.declares_ai = None
        s.commit()
    _, fourth = job_of("fourth.png")
    assert classify_images(db, storage, classifier, [fourth])["cached"] == 1
    with db.session() as s:  # the encoding is read; the evidence it had is kept, not read again
        row = s.get(Prediction, (sha, classifier.version))
        assert row.details["evidence"] == [] and row.details["encoding"] == fresh["encoding"]
        assert (row.encoding, row.declares_ai) == ("PNG", False)


def test_an_image_that_never_finishes_is_given_up_and_its_batch_mates_finish(world, classifier):
    """A batch redelivered after its worker died is classified image by image; an image delivered
    max_attempts times without finishing becomes an error instead of being tried forever."""
    db, storage, ids, files = world
    poison, mates = ids[0], ids[1:4]
    with db.session() as s:  # as the rows stand after a batch killed twice, then once more
        s.execute(update(ImageItem).where(ImageItem.id == poison).values(attempts=3, status="running"))
        s.execute(update(ImageItem).where(ImageItem.id.in_(mates)).values(attempts=1, status="running"))
        s.commit()
    calls = []
    original = classifier.classify
    classifier.classify = lambda readers: calls.append(len(readers)) or original(readers)
    try:
        notices = []
        result = classify_images(db, storage, classifier, [poison, *mates], notify=notices.append, max_attempts=3)
    finally:
        classifier.classify = original
    assert result["claimed"] == 3 and calls and max(calls) == 1  # one image per forward pass on a retry
    with db.session() as s:
        rows = {i.id: i for i in s.scalars(select(ImageItem).where(ImageItem.id.in_([poison, *mates])))}
    assert rows[poison].status == "error" and "tried 3 times" in rows[poison].error
    assert all(rows[i].status in ("done", "error") and rows[i].attempts == 2 for i in mates)
    assert notices  # the job's watchers are told


def test_a_model_version_names_its_model():
    """The web reads a model's name back from its version (shared.model_version) without opening a checkpoint."""
    from shared.model_version import name_of
    from shared.modeling.checkpoint import read_meta
    from shared.settings import CIFAKE_CHECKPOINT, DEFAULT_CHECKPOINT

    for path in (DEFAULT_CHECKPOINT, CIFAKE_CHECKPOINT):
        meta = read_meta(path)
        assert name_of(meta.version) == meta.name
    assert name_of("no-digest") == "no-digest" and name_of("plain") == "plain"


class _CancelledWhileClassifying:
    """The real classifier, with the job cancelled (as the API does) while its batch is being scored."""

    def __init__(self, inner: Classifier, db: Database, job_id: str):
        self.inner, self.db, self.job_id = inner, db, job_id

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def classify(self, readers):
        with self.db.session() as s:
            cancel(s, s.get(Job, self.job_id))
            s.commit()
        return self.inner.classify(readers)


class _DeletedWhileClassifying(_CancelledWhileClassifying):
    """The real classifier, with the job deleted (as DELETE /api/jobs/<id> does) while its batch is scored."""

    def __init__(self, inner: Classifier, db: Database, job_id: str, storage: LocalStorage):
        super().__init__(inner, db, job_id)
        self.storage = storage

    def classify(self, readers):
        data = [read() for read in readers]  # the batch has read its files before they go
        delete_jobs(self.db, self.storage, [self.job_id])
        return self.inner.classify([lambda d=d: d for d in data])


def test_a_batch_deleted_in_flight_leaves_no_prediction_thumbnail_or_file(world, classifier):
    db, storage, ids, _ = world
    with db.session() as s:
        job_id = s.get(ImageItem, ids[0]).job_id
        shas = {s.get(ImageItem, i).sha256 for i in ids[:4]}
    scored = _Remembering(classifier)
    assert classify_images(db, storage, _DeletedWhileClassifying(scored, db, job_id, storage), ids[:4])["claimed"] == 4
    assert scored.seen == 4  # the model did score the batch, and its results were dropped afterwards
    with db.session() as s:
        assert s.scalar(select(func.count()).select_from(ImageItem)) == 0
        assert s.scalar(select(func.count()).select_from(Prediction)) == 0
    for sha in shas:
        assert not storage.exists(sha)
        assert not any(storage.thumbnail_path(sha, size).exists() for size in (128, 512))


class _Remembering:
    """The real classifier, noting that it scored (so the test above cannot pass by scoring nothing)."""

    def __init__(self, inner: Classifier):
        self.inner, self.seen = inner, 0

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def classify(self, readers):
        out = self.inner.classify(readers)
        self.seen += len(out)
        return out


def _classified_total() -> float:
    return sum(sample.value for metric in metrics().classified.collect() for sample in metric.samples
               if sample.name.endswith("_total"))


def test_a_batch_cancelled_in_flight_keeps_its_state_and_is_not_counted(world, classifier):
    db, storage, ids, files = world
    with db.session() as s:  # one image moves to a job that nobody cancels
        job_id = s.get(ImageItem, ids[0]).job_id
        other = Job()
        s.add(other)
        s.flush()
        s.execute(update(ImageItem).where(ImageItem.id == ids[5]).values(job_id=other.id))
        s.commit()
    before = _classified_total()
    assert classify_images(db, storage, _CancelledWhileClassifying(classifier, db, job_id), ids[:4])["claimed"] == 4
    with db.session() as s:
        assert {s.get(ImageItem, i).status for i in ids[:4]} == {"cancelled"}
    assert _classified_total() == before  # the batch's results were dropped, so none was classified
    classify_images(db, storage, classifier, ids[5:6])
    assert _classified_total() == before + 1  # an image finished as usual is counted


def test_a_file_moved_aside_for_a_moment_is_still_read(world):
    """A delete racing an upload of the same bytes moves the file aside, looks at the rows again and puts it back
    (shared.deletion); a worker reading it in that moment waits once instead of reporting it missing."""
    import threading

    from worker.service import _reader

    db, storage, ids, files = world
    with db.session() as s:
        sha = s.get(ImageItem, ids[0]).sha256
    trash = storage.retire(sha)
    threading.Timer(0.02, storage.restore, (trash, sha)).start()
    assert _reader(storage, sha)() == files[0][0]
    storage.path(sha).unlink()
    with pytest.raises(FileNotFoundError):  # gone for good: still an error, after the one wait
        _reader(storage, sha)()
