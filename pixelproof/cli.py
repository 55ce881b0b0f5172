"""Pixelproof: tells AI-generated images from real photos, at volume.

Start the whole service with `pixelproof up` (or `make up`) and open the address it prints; send a folder
from the shell with `pixelproof submit FOLDER --wait --out results.csv`. `pixelproof COMMAND --help` describes
each command. Settings come from environment variables (README, Settings); the main ones are named below.
"""
# The console command is the composition root: each command imports only the side it runs (the web never
# loads torch), lazily, inside its function.
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from shared.routes import ROUTES
from shared.settings import PRECISIONS


class _UnusableOut(ValueError):
    pass


def _check_out(path: Path, folder: bool, flag: str = "--out") -> None:
    """Where a command writes, checked before minutes of work and without making anything: a folder (train,
    evaluate, make-aligned, export-reviews) must not be a file, a checkpoint file (calibrate) not a folder, and
    the nearest folder that exists above it must be one this user can write in."""
    if folder and path.exists() and not path.is_dir():
        raise _UnusableOut(f"{flag} {path} is a file; name a folder to write into")
    if not folder and path.is_dir():
        raise _UnusableOut(f"{flag} {path} is a folder; name the checkpoint file to write")
    above = path if folder else path.parent
    while not above.exists():
        above = above.parent
    if not above.is_dir():
        raise _UnusableOut(f"{flag} {path}: {above} is a file, not a folder")
    if not os.access(above, os.W_OK | os.X_OK):
        raise _UnusableOut(f"{flag} {path}: {above} is not writable")


def _training_errors() -> tuple[type[Exception], ...]:
    from shared.modeling.checkpoint import CheckpointError
    from training.data import DatasetUnavailable
    from training.train import RunMismatch

    return DatasetUnavailable, RunMismatch, CheckpointError


def _review_errors() -> tuple[type[Exception], ...]:
    from shared.reviews import UnknownJob  # no torch: export-reviews runs where the web runs

    return (UnknownJob,)


def _user_errors_exit_2(out: str, errors=_training_errors, flag: str = "--out"):
    """train, evaluate, calibrate, make-aligned and export-reviews: a --data source that cannot be read, a
    checkpoint that is missing or not one, an unknown job, an --out (a "folder" or a "file") that cannot be
    written, or arguments that contradict the run folder, are the user's to fix: one line, exit 2. `errors`
    names the command's own exceptions, imported only when it runs."""

    def wrap(command):
        def run(args: argparse.Namespace) -> int:
            try:
                _check_out(Path(args.out), folder=out == "folder", flag=flag)
                return command(args)
            except (*errors(), _UnusableOut) as exc:
                print(f"error: {exc}", file=sys.stderr)
                return 2

        return run

    return wrap


def _preprocessing(args: argparse.Namespace):
    """The flags given, over Preprocessing's defaults; with --init-from and none given, the checkpoint's own
    (fine-tuning must feed the model what it was trained on)."""
    from shared.imaging import Preprocessing

    given = {k: getattr(args, k) for k in ("input_size", "resize", "max_crops") if hasattr(args, k)}
    if args.init_from and not given:
        from shared.modeling.checkpoint import read_meta

        return read_meta(Path(args.init_from)).preprocessing
    return Preprocessing(**given)


@_user_errors_exit_2(out="folder")
def _train(args: argparse.Namespace) -> int:
    from shared.logs import setup_logging
    from training.config import from_flags
    from training.train import train

    setup_logging()
    cfg = from_flags(args, preprocessing=_preprocessing(args))
    path, meta = train(cfg)
    print(f"checkpoint {path} version {meta.version}")
    return 0


@_user_errors_exit_2(out="folder")
def _evaluate(args: argparse.Namespace) -> int:
    from shared.logs import setup_logging
    from training.evaluate import evaluate

    setup_logging()
    report = evaluate(Path(args.checkpoint), args.data, Path(args.out), split=args.split, precision=args.precision,
                      cross_domain=args.cross_domain, robustness=not args.no_robustness, limit=args.limit,
                      sources=tuple(s for s in (args.sources or "").split(",") if s), held_out=args.held_out,
                      device=args.device)
    print(json.dumps(report["summary"], indent=2))
    return 0


@_user_errors_exit_2(out="file")
def _calibrate(args: argparse.Namespace) -> int:
    from shared.logs import setup_logging
    from training.calibrate import calibrate

    own_photos_only = args.own_photos and not (args.folds or args.data)
    folds_only = not args.own_photos and args.folds and args.data
    if not (own_photos_only or folds_only):
        print("error: calibrate takes either --folds with --data (out-of-fold scores) or --own-photos "
              "(a folder of this deployment's real photos), not both and not neither", file=sys.stderr)
        return 2
    setup_logging()
    if args.own_photos:
        from training.own_photos import calibrate_on_photos

        report = calibrate_on_photos(Path(args.checkpoint), Path(args.own_photos), Path(args.out), args.max_false_fake)
    else:
        report = calibrate(Path(args.checkpoint), [Path(f) for f in args.folds], args.data, Path(args.out),
                           args.max_false_fake, args.max_false_real)
    print(json.dumps(report, indent=2))
    return 0


@_user_errors_exit_2(out="folder")
def _make_aligned(args: argparse.Namespace) -> int:
    from shared.logs import setup_logging
    from training.aligned import make_pairs

    setup_logging()
    print(json.dumps(make_pairs(args.data, Path(args.autoencoder), Path(args.out), args.max_side, args.every), indent=2))
    return 0


def _up(args: argparse.Namespace) -> int:
    from .stack import up

    return up()


def _migrate(args: argparse.Namespace) -> int:
    from shared.migrate import upgrade
    from shared.settings import load_settings

    upgrade(load_settings().db_url)
    print("database at head")
    return 0


@_user_errors_exit_2(out="folder", errors=_review_errors, flag="OUT")
def _export_reviews(args: argparse.Namespace) -> int:
    from shared.db import Database
    from shared.reviews import export_reviews
    from shared.settings import load_settings
    from shared.storage import LocalStorage

    settings = load_settings()
    counts = export_reviews(Database(settings.db_url), LocalStorage(settings.upload_dir), Path(args.out), args.job)
    print(f"exported {counts['real']} real and {counts['fake']} fake images to {args.out} "
          f"({counts['unsure']} unsure and {counts['missing']} with a missing upload left out)")
    return 0


def _exec(cmd: list[str]) -> int:
    os.execv(cmd[0], cmd)  # in the caller's directory: every path in the settings is already absolute
    return 1  # not reached


def _web(args: argparse.Namespace) -> int:
    from shared.settings import load_settings

    from .stack import check_folders, refuse_open_exposure, web_command

    settings = load_settings()
    refuse_open_exposure(settings)
    check_folders(settings)
    return _exec(web_command(settings.port, workers=args.workers, threads=args.threads, host=settings.host))


def _worker(args: argparse.Namespace) -> int:
    from shared.settings import load_settings

    from .stack import beat_schedule_path, check_folders, worker_command

    settings = load_settings()
    check_folders(settings)
    schedule = beat_schedule_path(settings) if args.beat else None
    return _exec(worker_command(concurrency=args.concurrency, beat_schedule=schedule, pool=args.pool))


def _client_errors(command: str):
    """submit, rerun and jobs: what keeps them from the server, or the server's refusal, in one line, exit 2,
    followed by any note the failure carries (what was done before it, and how to go on)."""

    def wrap(run):
        def guarded(args: argparse.Namespace) -> int:
            try:
                return run(args)
            except Exception as exc:
                line = _client_error(command, args, exc)
                if line is None:
                    raise
                print(f"pixelproof {command}: {line}", file=sys.stderr)
                for note in getattr(exc, "__notes__", ()):
                    print(f"pixelproof {command}: {note}", file=sys.stderr)
                return 2

        return guarded

    return wrap


def _client_error(command: str, args: argparse.Namespace, exc: Exception) -> str | None:
    """What kept submit, rerun or jobs from their work, in words; None for anything else (a bug: its traceback)."""
    import requests

    from .submit import SubmitError

    if isinstance(exc, SubmitError):
        return str(exc)
    if isinstance(exc, requests.ConnectionError):
        reason = "connection refused" if "refused" in str(exc).lower() else type(exc).__name__
        return (f"cannot reach the Pixelproof server at {args.server} ({reason}). Is it running? Start one with "
                "`make up`, or point --server (or PIXELPROOF_SERVER) at yours.")
    if isinstance(exc, requests.Timeout):
        return (f"the server at {args.server} did not answer in time; try again"
                + (", or send fewer files per request (--files-per-request)" if command == "submit" else ""))
    if isinstance(exc, OSError):  # reading the folder or writing the results
        return f"{exc.strerror or exc}: {exc.filename or ''}".rstrip(": ")
    return None


@_client_errors("submit")
def _submit(args: argparse.Namespace) -> int:
    from .submit import submit

    return submit(Path(args.directory), args.server, args.token, args.wait,
                  Path(args.out) if args.out else None, args.format, args.files_per_request, args.callback_url,
                  title=args.title, into=args.job, **({"parallel": args.parallel} if args.parallel else {}))


@_client_errors("rerun")
def _rerun(args: argparse.Namespace) -> int:
    from .submit import rerun

    return rerun(args.job, args.server, args.token, args.wait, Path(args.out) if args.out else None, args.format,
                 args.callback_url, args.title)


@_client_errors("jobs")
def _jobs(args: argparse.Namespace) -> int:
    from .submit import list_jobs

    return list_jobs(args.server, args.token, args.limit, args.title or "")


SERVICE_ENV = """environment:
  PORT                     web port (default 8000); up checks that it is free
  PIXELPROOF_HOST          address the web listens on (default 127.0.0.1); beyond loopback it needs
                           PIXELPROOF_API_TOKENS, or PIXELPROOF_ALLOW_OPEN_ACCESS=true
  PIXELPROOF_API_TOKENS    comma-separated tokens; when set, every API call needs one
  DATABASE_URL             sqlite:///... or postgresql://... (default sqlite:///var/pixelproof.db)
  REDIS_URL                the queue (up starts an embedded Redis when it is unset)
  PIXELPROOF_DATA_DIR      where SQLite, uploads and the embedded Redis live (default var)
  PIXELPROOF_MODEL_PATH    checkpoint the workers serve (default models/default.safetensors)
  PIXELPROOF_DEVICE        auto, cpu, cuda or mps (default auto)
all settings and limits: README, Settings"""


def _parser(sub, name: str, help: str, epilog: str | None = None) -> argparse.ArgumentParser:
    return sub.add_parser(name, help=help, description=help[:1].upper() + help[1:] + ".", epilog=epilog,
                          formatter_class=Formatter)


class Formatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Defaults shown after each option, and the environment listed as written."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        # None is no default a user can read ("--checkpoint ... (default: None)" on a required option), and an
        # option whose default depends on something says so in its own words.
        if action.default is None:
            return action.help
        return super()._get_help_string(action)


def _server_arguments(parser: argparse.ArgumentParser, token_help: str) -> None:
    """submit, rerun and jobs: which server, and the token it may ask for."""
    parser.add_argument("--server", default=os.environ.get("PIXELPROOF_SERVER", "http://127.0.0.1:8000"),
                        help="address of the server's page (environment: PIXELPROOF_SERVER)")
    parser.add_argument("--token", default=os.environ.get("PIXELPROOF_TOKEN"),
                        help=f"{token_help} (environment: PIXELPROOF_TOKEN)")


def _result_arguments(parser: argparse.ArgumentParser) -> None:
    """submit and rerun: whether to wait for the job, and where its results go."""
    parser.add_argument("--wait", action="store_true", help="wait until every image is classified, then print a summary")
    parser.add_argument("--out", help="with --wait: write the results to this file (its folder must exist)")
    parser.add_argument("--format", choices=["csv", "json"], default="csv", help="format of --out")


def _callback_argument(parser: argparse.ArgumentParser, job: str) -> None:
    parser.add_argument("--callback-url", default=None,
                        help=f"the server POSTs the {job}'s summary here, signed, when it finishes (it must be under "
                             "an address the server allows: PIXELPROOF_WEBHOOK_ALLOWLIST)")


def build_parser() -> argparse.ArgumentParser:
    from training.config import (  # light: no torch (the parser is built for every command)
        ALIGNED_MAX_SIDE,
        add_flags,
        bounded,
    )

    p = argparse.ArgumentParser(prog="pixelproof", description=__doc__, epilog=SERVICE_ENV, formatter_class=Formatter)
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    _parser(sub, "up", "start the whole service on this machine: SQLite, an embedded Redis, the web and one worker "
            "per core; Ctrl-C stops it", SERVICE_ENV).set_defaults(func=_up)
    _parser(sub, "migrate", "upgrade the database at DATABASE_URL to the latest schema", SERVICE_ENV).set_defaults(
        func=_migrate)
    w = _parser(sub, "web", "run the web app (API and page) under gunicorn; needs REDIS_URL", SERVICE_ENV)
    w.add_argument("--workers", type=bounded(int, 1), default=2, help="gunicorn worker processes")
    w.add_argument("--threads", type=bounded(int, 1), default=8, help="threads per process (each long-poll holds one)")
    w.set_defaults(func=_web)
    k = _parser(sub, "worker", "run a Celery worker that classifies queued images; needs REDIS_URL", SERVICE_ENV)
    k.add_argument("--concurrency", type=bounded(int, 1), default=1, help="model processes (each holds its own copy)")
    k.add_argument("--pool", default="prefork", choices=["prefork", "solo", "threads"],
                   help="Celery pool; GPU hosts need solo (CUDA cannot start again in a forked child)")
    k.add_argument("--beat", action="store_true", help="also run the sweeper schedule (exactly one process should)")
    k.set_defaults(func=_worker)

    s = _parser(sub, "submit", "upload a folder (or one file) to a Pixelproof server; with --wait, print a summary and "
                "write the results", "exit status: 0 done, 2 a problem the message names")
    s.add_argument("directory", help="folder to upload, sub-folders included (their paths are kept in the names)")
    _server_arguments(s, "API token, when the server requires one")
    _result_arguments(s)
    s.add_argument("--files-per-request", type=bounded(int, 1), default=None,
                   help="files per upload request (default: 200, fewer when they are large)")
    s.add_argument("--parallel", type=bounded(int, 1), default=None,
                   help="upload requests in flight at once, after the first (default: 2; 1 sends one at a time). "
                        "--out lists the files in the folder's order either way")
    _callback_argument(s, "job")
    s.add_argument("--job", default=None,
                   help="add to this job (its id or page address) the files of the folder it does not hold yet, by "
                        "name: finishes an upload that stopped part way, from here or from the page")
    s.add_argument("--title", default=None,
                   help="what to call the job, shown wherever jobs are listed (default: the folder's name; \"\" for none)")
    s.set_defaults(func=_submit)

    r = _parser(sub, "rerun", "classify an earlier job's files again with the model the server's workers serve now, "
                "as a new job (nothing is uploaded again; the earlier job keeps its results); with --wait, print a "
                "summary and write the results", "exit status: 0 done, 2 a problem the message names")
    r.add_argument("job", help="the earlier job's id (the end of its page's address, ?job=...)")
    _server_arguments(r, "API token, when the server requires one (the one the job was made with)")
    _result_arguments(r)
    _callback_argument(r, "new job")
    r.add_argument("--title", default=None, help="what to call the new job (default: the earlier job's title; \"\" for none)")
    r.set_defaults(func=_rerun)

    j = _parser(sub, "jobs", "list this API token's jobs on a Pixelproof server, newest first: when each was made, "
                "its state and counts, and its page (the server lists jobs only when it requires tokens)",
                "exit status: 0 listed, 2 a problem the message names")
    _server_arguments(j, "API token")
    j.add_argument("--limit", type=bounded(int, 1), default=20, help="how many jobs, newest first")
    j.add_argument("--title", default=None, help="only jobs whose title contains this text (letters in any case)")
    j.set_defaults(func=_jobs)

    x = _parser(sub, "export-reviews", "write the images people reviewed as real or fake into an image folder "
                "(OUT/real, OUT/fake, and OUT/reviews.csv) that `pixelproof train --data OUT --init-from CHECKPOINT` "
                "fine-tunes on; reads the database and storage named by the settings", SERVICE_ENV)
    x.add_argument("out", help="folder to write (created; files already there are kept)")
    x.add_argument("--job", action="append", default=None, help="only this job (repeat for several; default: all)")
    x.set_defaults(func=_export_reviews)

    t = _parser(sub, "train", "train a model from an image folder (real/, fake/), a parquet folder or a Hugging Face "
                "dataset, and write a self-describing checkpoint")
    add_flags(t)  # one flag per TrainConfig field, with its default and help (training/config.py)
    # Preprocessing: unset flags take Preprocessing's defaults (32, squash, 9), or --init-from's checkpoint's.
    t.add_argument("--input-size", type=bounded(int, 8), default=argparse.SUPPRESS,
                   help="the model's input side; with native_crops, the crop side (32, or --init-from's)")
    t.add_argument("--resize", default=argparse.SUPPRESS, choices=list(ROUTES),
                   help="squash/center_crop: the whole image resized to the input; native_crops: a grid of crops "
                        "at the image's own resolution (squash, or --init-from's)")
    t.add_argument("--max-crops", type=bounded(int, 1), default=argparse.SUPPRESS,
                   help="native_crops: crops scored per image at most (9, or --init-from's)")
    t.set_defaults(func=_train)

    e = _parser(sub, "evaluate", "score a checkpoint on labelled data: metrics, robustness rows and plots")
    e.add_argument("--checkpoint", required=True, help="the checkpoint to score")
    e.add_argument("--data", required=True, help="labelled data: an image folder (real/, fake/), a parquet folder or a Hugging Face dataset")
    e.add_argument("--split", default="test", help="split of a parquet or hub dataset, or of an image folder that comes split "
                   "(train/, test/); an image folder with class folders at the top is scored whole")
    e.add_argument("--sources", help="score only these comma-separated sources (file names <source>__<id>)")
    e.add_argument("--held-out", action="store_true", help="score only the sources the checkpoint's run held out")
    e.add_argument("--device", default="cpu", choices=["cpu", "cuda", "mps"], help="where the model runs")
    e.add_argument("--cross-domain", default=None, help="image folder (real/, fake/) scored through upload preprocessing")
    e.add_argument("--out", required=True, help="folder for the report (JSON) and plots")
    e.add_argument("--no-robustness", action="store_true", help="skip the robustness rows (JPEG q75, half size, PNG re-save, centre crop)")
    e.add_argument("--limit", type=bounded(int, 0), default=0, help="score at most this many images (0: all)")
    e.add_argument("--precision", default="auto", choices=PRECISIONS,
                   help="arithmetic of the forward pass; auto: as a worker on this machine would serve")
    e.set_defaults(func=_evaluate)

    c = _parser(sub, "calibrate", "refit a checkpoint's temperature and label thresholds on out-of-fold scores of "
                "source-held-out fold checkpoints (--folds, --data), or only its fake threshold on a folder of "
                "photos this deployment knows are real (--own-photos)")
    c.add_argument("--checkpoint", required=True, help="the checkpoint trained on every source (or the one served)")
    c.add_argument("--folds", nargs="+", help="checkpoints of the same recipe trained with --holdout")
    c.add_argument("--data", help="the data the fold runs held their sources out of")
    c.add_argument("--own-photos", help="a folder of real photos from where this deployment's uploads come from "
                   "(every file under it; undecodable ones are skipped and named): only the fake threshold is "
                   "refitted, the temperature and weights stay")
    c.add_argument("--out", required=True, help="where the recalibrated copy is written")
    share = bounded(float, above=0, below=0.5)  # of images an error rate may reach, as train's flags take it
    c.add_argument("--max-false-fake", type=share, default=0.01, help="share of real photos the fake threshold lets through")
    c.add_argument("--max-false-real", type=share, default=0.05,
                   help="share of generated images labelled real at most (out-of-fold calibration only)")
    c.set_defaults(func=_calibrate)

    a = _parser(sub, "make-aligned", "write aligned training pairs: the real photos of an image folder (linked) and "
                "their reconstructions through a latent-diffusion autoencoder (OUT/fake, sources named taef2-<source>)")
    a.add_argument("--data", required=True, help="image folder whose real/ photos are reconstructed")
    a.add_argument("--autoencoder", default="../shared/models/taef2",
                   help="folder with taef2_encoder.pth and taef2_decoder.pth (local files; nothing is downloaded)")
    a.add_argument("--out", required=True, help="image folder to write (real/, fake/); an interrupted run continues")
    a.add_argument("--max-side", type=bounded(int, 0), default=ALIGNED_MAX_SIDE, help="reconstruct the centre square of at most this side (0: whole)")
    a.add_argument("--every", type=bounded(int, 1), default=1, help="take every n-th real photo")
    a.set_defaults(func=_make_aligned)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
