"""The ``detectionjob`` command: ``run``, ``visualize``, ``samples`` (+ ``render``/``operator``)."""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import sys

from inference.model_config import ModelError
from inference.options import RunConfig, add_run_arguments, from_args, from_json
from inference.pool import WorkersError
from inference.uris import UriError

USER_ERRORS = (UriError, ModelError, WorkersError, ValueError, FileNotFoundError, PermissionError)
PLUGIN_GROUP = "detectionjob.commands"


def add_run_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("run", help="detect objects in every image under --input, write Parquet to --output")
    add_run_arguments(p)  # one flag per option of inference.options.RunConfig
    for name, kwargs in CLI_ONLY.items():
        p.add_argument(*name.split(), **kwargs)
    p.set_defaults(func=cmd_run)


#: The flags of ``run`` that are not job options: how the options arrive, and how much is logged.
CLI_ONLY: dict[str, dict] = {
    "--args-json-env": {
        "metavar": "NAME", "default": None,
        "help": "read the options above from a JSON object in environment variable NAME "
                "(how the operator passes user strings without a shell)"},
    "-v --verbose": {"action": "store_true",
                     "help": "Ray's own log lines (kept off the console otherwise), debug logs and Ray "
                             "Data's progress bars"},
}


def run_config(args: argparse.Namespace) -> RunConfig:
    """A RunConfig from parsed flags, or from the JSON named by ``--args-json-env``."""
    if not args.args_json_env:
        return from_args(args)
    raw = os.environ.get(args.args_json_env)
    if raw is None:
        raise ValueError(f"--args-json-env: environment variable {args.args_json_env} is not set")
    return from_json(raw, f"--args-json-env: {args.args_json_env}")


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
    try:
        from inference.pipeline import JobFailed, run
    except ModuleNotFoundError as exc:  # installed without the "job" extra (as the operator is)
        print(f"detectionjob run: error: the job's dependencies are not installed (no {exc.name}): "
              "pip install 'detectionjob[job]'", file=sys.stderr)
        return 2

    from inference.console import NativeFilter, Plain

    config = run_config(args)
    reporter = _progress_reporter()
    # stderr: our lines and progress (a bar on a terminal); Ray's chatter only with -v.
    err = Plain() if args.verbose else NativeFilter()
    # stdout is the summary's alone: Ray forwards its notices (a worker or raylet lost, a task
    # retried) to the driver's sys.stdout, up to its shutdown; they go to stderr instead.
    with contextlib.redirect_stdout(sys.stderr):
        try:
            summary = run(config, progress=reporter, console=err.console)
            if reporter is not None:
                reporter.finish(summary)
        except JobFailed as exc:
            written = "every result is written" if exc.complete else "the shards finished before are written"
            print(f"detectionjob run: failed: {exc} ({written}; see _summary.json)")
            return 1
        finally:
            if reporter is not None:
                reporter.close()
            _shutdown_ray()
            err.close()
    if sys.stdout.isatty():  # a person: a few lines; a pipe or file gets the JSON
        from inference.console import human_summary

        print(human_summary(summary))
    else:
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


def add_evaluate_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("evaluate", help="COCO-style box AP of a job's results against ground truth "
                                        "(COCO JSON or Pascal VOC XML)")
    p.add_argument("--results", required=True, metavar="URI",
                   help="a job's --output (or one Parquet file)")
    p.add_argument("--annotations", required=True, metavar="URI",
                   help="a COCO instances JSON file, or a folder of Pascal VOC XML files (local, s3://, gs://)")
    p.add_argument("--label-map", metavar="FILE",
                   help="YAML or JSON: annotation class name -> the model's label name (or a list), for "
                        "names the built-in VOC table does not cover")
    p.add_argument("--output", metavar="URI",
                   help="a folder for _evaluation.json and _evaluation/pr_curves.png, or a .json file "
                        "(default: beside the results)")
    p.set_defaults(func=cmd_evaluate)


def cmd_evaluate(args: argparse.Namespace) -> int:
    try:
        from inference.evaluate import evaluate, write
    except ModuleNotFoundError as exc:  # installed without the "job" extra
        print(f"detectionjob evaluate: error: the evaluation's dependencies are not installed "
              f"(no {exc.name}): pip install 'detectionjob[job]'", file=sys.stderr)
        return 2

    evaluation = evaluate(args.results, args.annotations, args.label_map, args.output)
    write(evaluation)  # only once everything is computed
    for line in evaluation.warnings:
        print(f"detectionjob evaluate: {line}", file=sys.stderr)
    if sys.stdout.isatty():  # a person: the per-class table; a pipe or file gets the JSON
        from inference.evaluate_report import table

        print(table(evaluation.report))
    else:
        print(evaluation.text())
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
    add_evaluate_parser(sub)
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
