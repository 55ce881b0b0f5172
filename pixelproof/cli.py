"""`pixelproof` console command: the composition root, importing each side lazily.

Subcommands: up (whole stack on embedded defaults), web, worker, migrate, submit, train, evaluate, calibrate.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from shared.imaging import ROUTES
from shared.settings import PRECISIONS


def _user_errors_exit_2(command):
    """train and evaluate: a --data source that cannot be read, or arguments that contradict the run folder,
    are the user's to fix, so one line and exit 2."""

    def run(args: argparse.Namespace) -> int:
        from training.data import DatasetUnavailable
        from training.train import RunMismatch

        try:
            return command(args)
        except (DatasetUnavailable, RunMismatch) as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2

    return run


@_user_errors_exit_2
def _train(args: argparse.Namespace) -> int:
    from shared.imaging import Preprocessing
    from shared.logs import setup_logging
    from training.train import TrainConfig, train

    setup_logging()
    cfg = TrainConfig(
        data=args.data, out=Path(args.out), arch=args.arch, arch_args=json.loads(args.arch_args),
        epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, weight_decay=args.weight_decay, ema_decay=args.ema,
        optimizer=args.optimizer, val_fraction=args.val_fraction, seed=args.seed, patience=args.patience,
        device=args.device, limit=args.limit, augment=not args.no_augment, p_shift=args.shift, threads=args.threads,
        precision=args.precision, resume=args.resume, name=args.name, init_from=args.init_from or "",
        teacher=args.teacher or "", distill_weight=args.distill_weight, distill_temperature=args.distill_temperature,
        workers=args.workers, holdout=tuple(h for h in (args.holdout or "").split(",") if h),
        crops_per_image=args.crops_per_image, crop_augment=json.loads(args.crop_augment), max_minutes=args.max_minutes,
        preprocessing=Preprocessing(input_size=args.input_size, resize=args.resize, max_crops=args.max_crops),
    )
    path, meta = train(cfg)
    print(f"checkpoint {path} version {meta.version}")
    return 0


@_user_errors_exit_2
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


@_user_errors_exit_2
def _calibrate(args: argparse.Namespace) -> int:
    from shared.logs import setup_logging
    from training.calibrate import calibrate

    setup_logging()
    report = calibrate(Path(args.checkpoint), [Path(f) for f in args.folds], args.data, Path(args.out),
                       args.max_false_fake, args.max_false_real)
    print(json.dumps(report, indent=2))
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


def _exec(cmd: list[str]) -> int:
    import os

    from shared.settings import REPO_ROOT

    os.chdir(REPO_ROOT)
    os.execv(cmd[0], cmd)
    return 1  # not reached


def _web(args: argparse.Namespace) -> int:
    from shared.settings import load_settings

    from .stack import refuse_open_exposure, web_command

    settings = load_settings()
    refuse_open_exposure(settings)
    return _exec(web_command(settings.port, workers=args.workers, threads=args.threads, host=settings.host))


def _worker(args: argparse.Namespace) -> int:
    from shared.settings import load_settings

    from .stack import beat_schedule_path, worker_command

    schedule = beat_schedule_path(load_settings()) if args.beat else None
    return _exec(worker_command(concurrency=args.concurrency, beat_schedule=schedule, pool=args.pool))


def _submit(args: argparse.Namespace) -> int:
    from .submit import SubmitError, submit

    try:
        return submit(Path(args.directory), args.server, args.token, args.wait,
                      Path(args.out) if args.out else None, args.format, args.files_per_request)
    except SubmitError as exc:
        print(f"pixelproof submit: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # connection refused and friends
        print(f"pixelproof submit: cannot reach {args.server}: {exc}", file=sys.stderr)
        return 2


def build_parser() -> argparse.ArgumentParser:
    import os

    p = argparse.ArgumentParser(prog="pixelproof", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)

    sub.add_parser("up", help="start everything on embedded defaults (SQLite, embedded Redis)").set_defaults(func=_up)
    sub.add_parser("migrate", help="upgrade the database to the latest schema").set_defaults(func=_migrate)
    w = sub.add_parser("web", help="run the web app under gunicorn")
    w.add_argument("--workers", type=int, default=2)
    w.add_argument("--threads", type=int, default=8)
    w.set_defaults(func=_web)
    k = sub.add_parser("worker", help="run a Celery worker (GPU hosts: --pool solo)")
    k.add_argument("--concurrency", type=int, default=1)
    k.add_argument("--pool", default="prefork", choices=["prefork", "solo", "threads"])
    k.add_argument("--beat", action="store_true", help="also run the sweeper schedule (exactly one process should)")
    k.set_defaults(func=_worker)

    s = sub.add_parser("submit", help="upload a folder and (with --wait) print a summary and write results")
    s.add_argument("directory")
    s.add_argument("--server", default=os.environ.get("PIXELPROOF_SERVER", "http://127.0.0.1:8000"))
    s.add_argument("--token", default=os.environ.get("PIXELPROOF_TOKEN"))
    s.add_argument("--wait", action="store_true", help="wait for every result")
    s.add_argument("--out", help="write results here (with --wait)")
    s.add_argument("--format", choices=["csv", "json"], default="csv")
    s.add_argument("--files-per-request", type=int, default=None, help="upload in requests of this many files")
    s.set_defaults(func=_submit)

    t = sub.add_parser("train", help="train a model and write a checkpoint")
    t.add_argument("--data", required=True, help="parquet dir, image folder, or Hugging Face dataset name")
    t.add_argument("--out", required=True, help="run folder (checkpoint, history, resume state)")
    t.add_argument("--arch", default="tiny_resnet")
    t.add_argument("--arch-args", default="{}", help="JSON, e.g. '{\"widths\": [16, 32, 64, 128]}'")
    t.add_argument("--epochs", type=int, default=10)
    t.add_argument("--batch-size", type=int, default=128)
    t.add_argument("--lr", type=float, default=3e-3)
    t.add_argument("--weight-decay", type=float, default=5e-4)
    t.add_argument("--ema", type=float, default=0.0, help="EMA decay of the weights per step, e.g. 0.999 (0: off)")
    t.add_argument("--optimizer", choices=["adamw", "adam"], default="adamw")
    t.add_argument("--val-fraction", type=float, default=0.1)
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--patience", type=int, default=3, help="early stopping on validation loss")
    t.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda", "mps"])
    t.add_argument("--limit", type=int, default=0, help="train on at most this many images")
    t.add_argument("--no-augment", action="store_true")
    t.add_argument("--shift", type=float, default=0.0, help="probability of a mirrored shift of up to 3 px")
    t.add_argument("--threads", type=int, default=0)
    t.add_argument("--precision", default="auto", choices=PRECISIONS,
                   help="auto: float16 on CUDA, bfloat16 on a CPU with native support, else float32")
    t.add_argument("--resume", action="store_true")
    t.add_argument("--init-from", help="fine-tune: start from this checkpoint's architecture and weights")
    t.add_argument("--teacher", help="distil: also learn from this checkpoint's softened scores")
    t.add_argument("--distill-weight", type=float, default=0.7, help="share of the loss given to the teacher")
    t.add_argument("--distill-temperature", type=float, default=2.0)
    t.add_argument("--workers", type=int, default=0, help="data-loading processes (GPU training wants several)")
    t.add_argument("--max-minutes", type=float, default=0.0,
                   help="after the first epoch, shorten the schedule to the epochs that fit in this many minutes")
    t.add_argument("--name", default="pixelproof")
    t.add_argument("--input-size", type=int, default=32, help="the model's input side; with native_crops, the crop side")
    t.add_argument("--resize", default="squash", choices=list(ROUTES),
                   help="squash/center_crop: the whole image resized to the input; native_crops: a grid of crops "
                        "at the image's own resolution")
    t.add_argument("--max-crops", type=int, default=9, help="native_crops: crops scored per image at most")
    t.add_argument("--holdout", help="native_crops: comma-separated sources (file names <source>__<id>) kept out of "
                                     "training and scored at the end")
    t.add_argument("--crops-per-image", type=int, default=1, help="native_crops: random crops of each image per epoch")
    t.add_argument("--crop-augment", default="{}", help="native_crops: JSON overrides of the augmentation, e.g. "
                                                        "'{\"p_jpeg\": 0.8}' (training.native.CropAugment)")
    t.set_defaults(func=_train)

    e = sub.add_parser("evaluate", help="metrics, robustness table and plots for a checkpoint")
    e.add_argument("--checkpoint", required=True)
    e.add_argument("--data", required=True)
    e.add_argument("--split", default="test", help="split of a parquet or hub dataset (an image folder is scored whole)")
    e.add_argument("--sources", help="score only these comma-separated sources (file names <source>__<id>)")
    e.add_argument("--held-out", action="store_true", help="score only the sources the checkpoint's run held out")
    e.add_argument("--device", default="cpu", choices=["cpu", "cuda", "mps"], help="where the model runs")
    e.add_argument("--cross-domain", default=None, help="image folder (real/, fake/) scored through upload preprocessing")
    e.add_argument("--out", required=True)
    e.add_argument("--no-robustness", action="store_true")
    e.add_argument("--limit", type=int, default=0)
    e.add_argument("--precision", default="auto", choices=PRECISIONS,
                   help="arithmetic of the forward pass; auto: as a worker on this machine would serve")
    e.set_defaults(func=_evaluate)

    c = sub.add_parser("calibrate", help="refit a checkpoint's temperature and label thresholds on out-of-fold scores "
                                         "of source-held-out fold checkpoints")
    c.add_argument("--checkpoint", required=True, help="the checkpoint trained on every source")
    c.add_argument("--folds", nargs="+", required=True, help="checkpoints of the same recipe trained with --holdout")
    c.add_argument("--data", required=True, help="the data the fold runs held their sources out of")
    c.add_argument("--out", required=True, help="where the recalibrated copy is written")
    c.add_argument("--max-false-fake", type=float, default=0.01, help="share of real photos the fake threshold lets through")
    c.add_argument("--max-false-real", type=float, default=0.05, help="share of generated images labelled real at most")
    c.set_defaults(func=_calibrate)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
