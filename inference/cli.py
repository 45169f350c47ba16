"""The ``detectionjob`` command: ``run``, ``visualize``, ``samples`` (+ ``render``/``operator``)."""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import sys
from dataclasses import fields

from inference.pool import WorkersError
from inference.spec import DEFAULT_MODEL, ModelError
from inference.uris import UriError

USER_ERRORS = (UriError, ModelError, WorkersError, ValueError, FileNotFoundError, PermissionError)
PLUGIN_GROUP = "detectionjob.commands"


def _num_gpus(value: str) -> float | None:
    return None if value.lower() == "auto" else float(value)


def _extensions(value: str) -> list[str]:
    return [v for v in value.split(",") if v.strip()]


def add_run_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("run", help="detect objects in every image under --input, write Parquet to --output")
    p.add_argument("--input", help="folder, local://, s3://BUCKET/PREFIX or gs://BUCKET/PREFIX (recursive)")
    p.add_argument("--input-list", help="instead of --input: a file of image URIs, local or s3:// or gs:// "
                                        "(text one per line, .csv, .jsonl/.manifest, .parquet)")
    p.add_argument("--input-list-column", help="the column of --input-list holding the URIs (default: uri, "
                                               "source-ref, path, image, ... or the only one)")
    p.add_argument("--output", help="folder or URI for part-*.parquet, _summary.json and _samples/")
    p.add_argument("--extensions", type=_extensions, default=[],
                   help="comma-separated file extensions (default: jpg,jpeg,png,bmp,webp,tif,tiff)")
    p.add_argument("--model", default=DEFAULT_MODEL,
                   help="torchvision detection model (default: %(default)s)")
    p.add_argument("--weights", default="DEFAULT",
                   help="DEFAULT (torchvision's pretrained, downloaded), a weights enum member name, "
                        "none (random init, seeded by --seed; smoke tests only) or a state_dict path/URI")
    p.add_argument("--score-threshold", type=float, default=0.5, help="keep boxes scoring at least this")
    p.add_argument("--batch-size", type=int, default=4,
                   help="images per detector call (default: %(default)s)")
    p.add_argument("--num-gpus", type=_num_gpus, default=None,
                   help="GPUs per detector actor; 'auto' (default): 1 if Ray sees GPUs, else 0 (CPU)")
    p.add_argument("--workers", default=None,
                   help="detector actors: N or MIN:MAX (autoscaling); default from the resources Ray sees")
    p.add_argument("--limit", type=int, default=None, help="process at most N images (after --resume)")
    p.add_argument("--samples", type=int, default=0, help="write K annotated PNGs to OUTPUT/_samples/")
    p.add_argument("--resume", action="store_true",
                   help="keep earlier results and skip the shards already in the output (default: overwrite)")
    p.add_argument("--retry-errors", action="store_true",
                   help="with --resume: detect the error rows of finished shards again")
    p.add_argument("--allow-config-change", action="store_true",
                   help="with --resume: allow another model, weights, threshold or precision than the "
                        "run being resumed (its rows and the new ones then differ)")
    p.add_argument("--shard-size", type=int, default=256,
                   help="images per shard on average: the unit of work, of resume and of one part file "
                        "(default: %(default)s)")
    p.add_argument("--max-failed-fraction", type=float, default=0.1,
                   help="fail the job (exit 3, after writing every result) when more than this fraction "
                        "of its images failed (default: %(default)s; 1 never fails)")
    p.add_argument("--seed", type=int, default=0, help="seed for --weights none (default: %(default)s)")
    p.add_argument("--precision", default="fp32", choices=("fp32", "fp16", "bf16"),
                   help="autocast precision on GPU (default: %(default)s)")
    p.add_argument("--ray-address", default=None,
                   help="Ray cluster to join (default: RAY_ADDRESS or a local one)")
    p.add_argument("--args-json-env", metavar="NAME", default=None,
                   help="read the options above from a JSON object in environment variable NAME "
                        "(how the operator passes user strings without a shell)")
    p.add_argument("-v", "--verbose", action="store_true", help="debug logs and Ray Data progress bars")
    p.set_defaults(func=cmd_run)


def run_config(args: argparse.Namespace):
    """A RunConfig from parsed flags, or from the JSON named by ``--args-json-env``."""
    from inference.pipeline import RunConfig

    names = {f.name for f in fields(RunConfig)}
    if args.args_json_env:
        raw = os.environ.get(args.args_json_env)
        if raw is None:
            raise ValueError(f"--args-json-env: environment variable {args.args_json_env} is not set")
        data = json.loads(raw)
        if not isinstance(data, dict):
            raise ValueError(f"--args-json-env: {args.args_json_env} must hold a JSON object")
        unknown = sorted(set(data) - names)
        if unknown:
            raise ValueError(f"--args-json-env: unknown option(s) {', '.join(unknown)}")
        values = {k: v for k, v in data.items() if v is not None}
        if isinstance(values.get("workers"), int):
            values["workers"] = str(values["workers"])
    else:
        values = {k: v for k, v in vars(args).items() if k in names}
    return RunConfig(**values)


def _progress_reporter():
    """A status reporter when the operator asked for one (``DETECTIONJOB_STATUS_TARGET``)."""
    target = os.environ.get("DETECTIONJOB_STATUS_TARGET")
    if not target:
        return None
    try:
        from inference.status_reporter import StatusReporter

        return StatusReporter(target)
    except Exception as exc:  # noqa: BLE001 - progress is best effort, never fatal
        logging.getLogger("detectionjob").warning("progress reporting off: %s", exc)
        return None


def cmd_run(args: argparse.Namespace) -> int:
    from inference.pipeline import JobFailed, run

    config = run_config(args)
    reporter = _progress_reporter()
    # stdout is the summary's alone: Ray forwards its notices (a worker or raylet lost, a task
    # retried) to the driver's sys.stdout, up to its shutdown; they go to stderr instead.
    with contextlib.redirect_stdout(sys.stderr):
        try:
            summary = run(config, progress=reporter)
        except JobFailed as exc:
            print(f"detectionjob run: failed: {exc} (every result is written; see _summary.json)")
            return 3
        finally:
            if reporter is not None:
                reporter.close()
            _shutdown_ray()
    print(json.dumps(summary, indent=2, sort_keys=True))
    return 0


def _shutdown_ray() -> None:
    ray = sys.modules.get("ray")
    if ray is not None and ray.is_initialized():
        ray.shutdown()


def add_visualize_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("visualize", help="draw a job's boxes on its original images as PNGs")
    p.add_argument("--results", required=True, help="a job's --output (or one Parquet file)")
    p.add_argument("--out", required=True, help="folder or URI for the PNGs")
    p.add_argument("--n", type=int, default=8, help="number of images (default: %(default)s)")
    p.add_argument("--min-score", type=float, default=0.0, help="draw boxes scoring at least this")
    p.set_defaults(func=cmd_visualize)


def cmd_visualize(args: argparse.Namespace) -> int:
    from inference.uris import resolve
    from inference.visualize import write_samples

    paths = write_samples(resolve(args.results, "--results"), resolve(args.out, "--out"), args.n,
                          args.min_score)
    print("\n".join(paths))
    return 0


def add_samples_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("samples", help="write synthetic VOC-sized sample images to a folder")
    p.add_argument("out", help="folder to write into")
    p.add_argument("--n", type=int, default=8, help="number of images (default: %(default)s)")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=cmd_samples)


def cmd_samples(args: argparse.Namespace) -> int:
    from inference.samples import make_samples

    print("\n".join(make_samples(args.out, args.n, seed=args.seed)))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="detectionjob", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    add_run_parser(sub)
    add_visualize_parser(sub)
    add_samples_parser(sub)
    add_plugin_commands(sub)
    return parser


def add_plugin_commands(sub: argparse._SubParsersAction) -> None:
    """Subcommands that installed packages add through the ``detectionjob.commands`` entry points
    (the operator's ``render`` and ``operator``): the job never imports the operator by name."""
    from importlib.metadata import entry_points

    for point in entry_points(group=PLUGIN_GROUP):
        try:
            register = point.load()
        except ImportError as exc:  # e.g. a worker image without the operator's dependencies
            logging.getLogger("detectionjob").debug("no %r commands: %s", point.name, exc)
            continue
        register(sub)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if getattr(args, "verbose", False) else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    try:
        return int(args.func(args) or 0)
    except USER_ERRORS as exc:
        print(f"detectionjob {args.command}: error: {exc}", file=sys.stderr)
        return 2


def entry() -> None:
    """The console script: :func:`main`, then exit without the interpreter's teardown.

    With torch and Ray loaded, tearing the interpreter down takes about 2 s after the work is done.
    By then every output is written and closed; Ray (if this process started or joined it) is shut
    down and the standard streams are flushed explicitly before the process exits.
    """
    code = main()
    _shutdown_ray()
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
