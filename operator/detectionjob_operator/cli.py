"""``detectionjob render`` and ``detectionjob operator``, added to the main CLI by :func:`register`."""

from __future__ import annotations

import argparse
import sys
from typing import Any

import yaml

from detectionjob_operator.crd_schema import SpecError

EXIT_INVALID = 2


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``render`` and ``operator``; each sets ``func(args) -> int``."""
    render = subparsers.add_parser(
        "render", help="print the RayJob a DetectionJob becomes (no cluster needed)",
        description="Validate a DetectionJob and print the KubeRay RayJob the operator creates "
                    "for it, as YAML. Exit code 2 on an invalid spec, naming the field.")
    render.add_argument("-f", "--filename", required=True, metavar="FILE",
                        help="DetectionJob YAML ('-' for stdin); several documents are allowed")
    render.add_argument("-n", "--namespace", default=None,
                        help="namespace for documents without one (default: default)")
    render.add_argument("--no-progress", action="store_true",
                        help="as the operator with --no-progress (no reporter ServiceAccount)")
    render.set_defaults(func=cmd_render)

    op = subparsers.add_parser(
        "operator", help="run the DetectionJob operator (kopf)",
        description="Watch DetectionJobs, create their RayJobs, keep their status.")
    scope = op.add_mutually_exclusive_group()
    scope.add_argument("--namespace", "-n", action="append", dest="namespaces", default=[],
                       metavar="NS", help="watch this namespace (repeatable; glob patterns allowed)")
    scope.add_argument("--all-namespaces", "-A", action="store_true",
                       help="watch the whole cluster (the default without --namespace)")
    op.add_argument("--liveness", metavar="URL", default="http://0.0.0.0:8080/healthz",
                    help="liveness endpoint, '' to disable (default: %(default)s)")
    op.add_argument("--metrics-port", type=int, default=9090,
                    help="Prometheus metrics port, 0 to disable (default: %(default)s)")
    peering = op.add_mutually_exclusive_group()
    peering.add_argument("--peering", metavar="NAME", default=None,
                         help="kopf peering object for HA replicas (one active, others standby); "
                              "needs kopf's peering CRDs")
    peering.add_argument("--standalone", action="store_true",
                         help="no peering (the default): run as the only replica")
    op.add_argument("--priority", type=int, default=None,
                    help="peering priority of this replica (default with --peering: random, so "
                         "identical replicas never tie; kopf pauses all replicas on a tie)")
    op.add_argument("--log-format", choices=("json", "text"), default="text",
                    help="log format (default: %(default)s)")
    op.add_argument("--no-progress", action="store_true",
                    help="do not give jobs a ServiceAccount that may patch their status")
    op.add_argument("--verbose", "-v", action="store_true", help="debug logs")
    op.set_defaults(func=cmd_operator)


def _documents(filename: str) -> list[Any]:
    if filename == "-":
        text = sys.stdin.read()
    else:
        with open(filename, encoding="utf-8") as fh:
            text = fh.read()
    return [doc for doc in yaml.safe_load_all(text) if doc is not None]


def cmd_render(args: argparse.Namespace) -> int:
    from detectionjob_operator.spec import parse
    from detectionjob_operator.translate import Options, to_rayjob

    source = "<stdin>" if args.filename == "-" else args.filename
    try:
        docs = _documents(args.filename)
    except OSError as exc:
        print(f"error: {source}: {exc.strerror or exc}", file=sys.stderr)
        return EXIT_INVALID
    except yaml.YAMLError as exc:
        print(f"error: {source}: not valid YAML: {exc}", file=sys.stderr)
        return EXIT_INVALID
    if not docs:
        print(f"error: {source}: no DetectionJob in the file", file=sys.stderr)
        return EXIT_INVALID
    rendered = []
    for i, doc in enumerate(docs):
        try:
            dj = parse(doc, default_namespace=args.namespace or "default")
        except SpecError as exc:
            where = f"{source}" + (f" (document {i + 1})" if len(docs) > 1 else "")
            print(f"error: {where}: invalid DetectionJob: {exc}", file=sys.stderr)
            return EXIT_INVALID
        rendered.append(to_rayjob(dj, Options(progress=not args.no_progress)))
    sys.stdout.write(dump_yaml(rendered))
    return 0


def dump_yaml(objs: list[dict[str, Any]]) -> str:
    """YAML documents, keys in the order built, no anchors, long strings unwrapped."""

    class _Dumper(yaml.SafeDumper):
        def ignore_aliases(self, data: Any) -> bool:
            return True

    return yaml.dump_all(objs, Dumper=_Dumper, sort_keys=False, width=1 << 16,
                         default_flow_style=False)


def cmd_operator(args: argparse.Namespace) -> int:
    from detectionjob_operator.runner import OperatorConfig, run

    config = OperatorConfig(
        namespaces=tuple(args.namespaces),
        liveness=args.liveness or None,
        metrics_port=args.metrics_port,
        peering=args.peering,
        priority=args.priority,
        log_format=args.log_format,
        verbose=args.verbose,
        progress=not args.no_progress,
    )
    return run(config)


def main(argv: list[str] | None = None) -> int:
    """Stand-alone entry point (``python -m detectionjob_operator``)."""
    parser = argparse.ArgumentParser(prog="detectionjob")
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return args.func(args)
