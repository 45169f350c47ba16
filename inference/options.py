"""The options of ``detectionjob run``, defined once (torch-, Ray- and pyarrow-free).

:class:`RunConfig` is the definition: each field is one option, with its default, help text and
check. From it come the CLI's flags (:func:`add_run_arguments`), the JSON the operator puts in the
RayJob (:func:`to_json`) and the job reads back (:func:`from_json`), the checks a run starts with
(:meth:`RunConfig.validate`) and the README's flag table (:func:`markdown_table`,
``hack/sync-docs.py``). A new option is a new field here, plus the code that uses it.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable, Mapping
from dataclasses import MISSING, Field, dataclass, field, fields
from typing import Any

from inference.model_config import DEFAULT_MODEL, ModelConfig, ModelError, unknown_model
from inference.pool import GPU_STREAMS, parse_workers

PRECISIONS = ("fp32", "fp16", "bf16")
AUTO_BATCH_CAP = 64  # `--batch-size auto` tries this many VOC-sized images, then half, ... down to 1
AUTO_BATCH_CPU = 4  # `--batch-size auto` on a CPU, where memory is not what limits a batch
#: What ``--extensions`` (and a DetectionJob's ``spec.input.fileExtensions``) default to.
DEFAULT_EXTENSIONS = ("jpg", "jpeg", "png", "bmp", "webp", "tif", "tiff")


@dataclass(frozen=True)
class Doc:
    """How one option is shown and checked (a field's ``metadata["option"]``)."""

    help: str  # Markdown: --help shows it without the backticks
    metavar: str | None = None
    default_text: str | None = None  # the default in words, where the value alone would not say it
    parse: Callable[[str], Any] | None = None  # a flag's string -> the value
    check: Callable[[Any], str | None] | None = None  # the problem with a value, or None
    error: type[ValueError] = ValueError  # raised with ``--flag: problem``
    cli: bool = True  # False: set by code and tests only (no flag, not in the README)
    crd: str | None = None  # the DetectionJob field (path under spec) it passes through from, if any


def option(default: Any, help: str, **doc: Any) -> Any:
    """A :class:`RunConfig` field: ``default`` (a list is copied per instance) and its :class:`Doc`."""
    meta = {"option": Doc(help=help, **doc)}
    if isinstance(default, (list, tuple)):
        return field(default_factory=lambda: list(default), metadata=meta)
    return field(default=default, metadata=meta)


def _at_least(low: int) -> Callable[[Any], str | None]:
    return lambda v: None if v is None or v >= low else f"must be >= {low}, got {v}"


def _within(low: float, high: float) -> Callable[[Any], str | None]:
    return lambda v: None if low <= v <= high else f"must be within [{low:g}, {high:g}], got {v}"


def _num_gpus(value: str) -> float | None:
    return None if value.lower() == "auto" else float(value)


def _batch_size(value: str) -> int | None:
    return None if value.lower() == "auto" else int(value)


def _extensions(value: str) -> list[str]:
    return [v for v in value.split(",") if v.strip()]


def _workers(value: Any) -> None:
    parse_workers(value)  # raises WorkersError, which names --workers


@dataclass
class RunConfig:
    """Everything ``detectionjob run`` takes; field names are the options' (``--score-threshold``
    is ``score_threshold``), also in the operator's JSON."""

    input: str | None = option(
        None, "a folder, `local://PATH`, `s3://BUCKET/PREFIX`, `gs://BUCKET/PREFIX` or one file; "
              "listed recursively, streamed", metavar="URI", default_text="this or `--input-list`")
    input_list: str | None = option(
        None, "instead of `--input`: a file of image URIs, local or `s3://`/`gs://`: text (one per "
              "line, `#` comments), `.csv` (a one-column CSV may have no header), `.jsonl`/`.manifest` "
              "(SageMaker's `source-ref`) or `.parquet`; relative entries are relative to its folder",
        metavar="URI")
    input_list_column: str | None = option(
        None, "the CSV/Parquet column or JSON key of `--input-list` with the URIs", metavar="C",
        default_text="`uri`, `source-ref`, `path`, `image`, ... or the only column")
    output: str = option("", "folder or URI for `part-*.parquet`, `_summary.json`, `_samples/`",
                         metavar="URI", default_text="required")
    extensions: list[str] = option(
        [], "which files are images (comma-separated, case-insensitive)", metavar="LIST",
        parse=_extensions, default_text="`" + ",".join(DEFAULT_EXTENSIONS) + "`",
        crd="input.fileExtensions")
    list_hidden: bool = option(
        False, "also list folders named `_*` or `.*` (left out by default: job outputs such as "
               "`_samples/`, `.git`, dataset tools' metadata). The job's own `--output` is never "
               "listed, wherever it lies under the input", crd="input.listHidden")
    allow_empty: bool = option(
        False, "an input without images is a success (exit 0, one line) instead of an error "
               "(exit 2): for incremental pipelines", crd="input.allowEmpty")
    model: str = option(
        DEFAULT_MODEL, "any torchvision detection builder (`fasterrcnn_*`, `retinanet_*`, `fcos_*`, "
                       "`ssd*`, `maskrcnn_*`, `keypointrcnn_*`)", metavar="NAME",
        check=unknown_model, error=ModelError, crd="model.name")
    weights: str = option(
        "DEFAULT", "`DEFAULT` (torchvision's pretrained weights, downloaded to `$TORCH_HOME`), a "
                   "weights enum member (`COCO_V1`), `none` (random init seeded by `--seed`, for smoke "
                   "tests), or a state_dict path / `s3://` / `gs://` / `https://` URI (plain or "
                   "`{\"model\": state_dict}` checkpoints)", metavar="W", crd="model.weights")
    score_threshold: float = option(
        0.5, "keep boxes scoring at least F (also set inside the model, whose own default is 0.05)",
        metavar="F", check=_within(0, 1), crd="model.scoreThreshold")
    batch_size: int | None = option(
        4, "images per detector call; `auto`: the largest power of two up to "
           f"{AUTO_BATCH_CAP} VOC-sized images that fits the GPU (tried from the top at start; "
           f"{AUTO_BATCH_CPU} on a CPU). A batch "
           "that runs the GPU out of memory is halved and retried, and later ones cut to that size",
        metavar="N|auto", parse=_batch_size, check=_at_least(1), crd="batchSize")
    num_gpus: float | None = option(
        None, "GPUs per detector actor (`0.5` packs two per GPU); `auto` = 1 when Ray sees GPUs, "
              "else CPU", metavar="G", default_text="`auto`", parse=_num_gpus, check=_at_least(0))
    streams: int | None = option(
        None, "batches each detector runs at once, each from its own thread and, on a GPU, its own "
              "CUDA stream: one batch's kernels run while another's are prepared and launched, where "
              "one batch alone leaves the GPU idle between its kernels", metavar="N",
        default_text=f"{GPU_STREAMS} on a GPU, 1 on a CPU", check=_at_least(1))
    workers: str | None = option(
        None, "detector actors: N, or `MIN:MAX` to autoscale. Default: one per GPU, or one per 8 "
              "CPUs. On CPU the pool never takes the last free CPU", metavar="N|MIN:MAX",
        default_text="auto", check=_workers)
    limit: int | None = option(None, "process at most N images (after `--resume` skipping; lists "
                                     "in one task)", metavar="N", default_text="all",
                               check=_at_least(0), crd="input.limit")
    samples: int = option(
        0, "write K annotated PNGs to `OUTPUT/_samples/` (a DetectionJob's `spec.output.samples` "
           "defaults to 8: on a cluster the output is where its user looks; here the images are at "
           "hand)", metavar="K", check=_at_least(0), crd="output.samples")
    resume: bool = option(
        False, "keep earlier results, skip the shards that already have a part. Refuses an output "
               "written with another model, weights, threshold or precision (`_job.json`). Parts of "
               "shards the input no longer has are removed at the end. Without it (overwrite) the job "
               "first deletes the `part-*.parquet`, `_job.json`, `_summary.json` and `_samples/` of "
               "an earlier run, and nothing else")
    retry_errors: bool = option(False, "with `--resume`: detect the error rows of finished shards again")
    allow_config_change: bool = option(
        False, "with `--resume`: accept another model, weights, threshold or precision than the "
               "resumed run's (its rows and the new ones then differ)")
    shard_size: int = option(256, "images per shard on average: the unit of work, of `--resume` and "
                                  "of one part file", metavar="N", check=_at_least(1),
                             crd="output.shardSize")
    max_failed_fraction: float = option(
        0.1, "exit 1 (after writing every result) when more than F of the images failed; `1` never "
             "fails", metavar="F", check=_within(0, 1), crd="failurePolicy.maxFailedFraction")
    batch_timeout: float | None = option(
        None, "a detector batch (read, decode, detect of `--batch-size` images) taking longer than S "
              "seconds, or a detector not heard from for S seconds, counts as stalled: its process is "
              "stopped, Ray restarts it and the shard is tried again; an image that stalls twice alone "
              "becomes an error row. `0` turns this off",
        metavar="S", default_text="max(10 × p95 of the batch times, 120 s); a detector's first batch "
                                  "max(3 × that, 600 s)", check=_at_least(0), crd="batchTimeoutSeconds")
    store_wait: float = option(
        300.0, "a store (S3, GCS) that stops answering is waited for, with backoff, up to S seconds; "
               "its images do not become error rows meanwhile. Down for longer: the job fails, naming "
               "the store", metavar="S", check=_at_least(0), crd="failurePolicy.storeWaitSeconds")
    evaluate_annotations: str | None = option(
        None, "after detection, score the results against these annotations (a COCO instances JSON or "
              "a folder of Pascal VOC XML, as `detectionjob evaluate`): `_evaluation.json` beside them, "
              "`evaluation` (`map`, `map_50`) in the summary", metavar="URI",
        crd="evaluation.annotations.uri")
    cost_per_device_hour: float | None = option(
        None, "the price of one device (GPU; a CPU detector counts as one) for an hour: "
              "`estimated_cost` in the summary, for charge-back", metavar="PRICE", check=_at_least(0),
        crd="cost.perDeviceHour")
    seed: int = option(0, "seed for `--weights none`", metavar="N")
    precision: str = option("fp32", "autocast precision on GPU: `fp32`, `fp16` or `bf16`; fp16 keeps "
                                    "more of fp32's detections than bf16, bf16 is faster (measured in "
                                    "benchmarks/RESULTS.md)",
                            metavar="P", check=lambda v: None if v in PRECISIONS else
                            f"one of {', '.join(PRECISIONS)}, got {v!r}", crd="model.precision")
    ray_address: str | None = option(None, "the Ray cluster to join", metavar="ADDRESS",
                                     default_text="`RAY_ADDRESS` or a local one")
    progress_interval: float = option(5.0, "seconds between progress lines", cli=False)

    def validate(self) -> None:
        """Fail fast, before Ray starts and before the output is touched, with the option named."""
        if bool(self.input) == bool(self.input_list):
            raise ValueError("--input / --input-list: give exactly one (a folder or prefix, or a file "
                             "listing image URIs)")
        if not self.output:
            raise ValueError("--output: required")
        for f in fields(self):
            doc = _doc(f)
            problem = doc.check(getattr(self, f.name)) if doc.check else None
            if problem:
                raise doc.error(f"{flag(f)}: {problem}")
        if self.retry_errors and not self.resume:
            raise ValueError("--retry-errors: only with --resume (it re-runs the error rows of a "
                             "finished output)")
        self._check_weights_file()

    def _check_weights_file(self) -> None:
        w = self.weights
        is_file = ("/" in w or w.endswith((".pth", ".pt"))) and not w.startswith(("http://", "https://"))
        if is_file and w.lower() != "none":
            import pyarrow.fs as pafs

            from inference.uris import resolve

            loc = resolve(w, option="--weights")
            if loc.fs.get_file_info(loc.path).type != pafs.FileType.File:
                raise ModelError(f"--weights: no file at {w!r}")

    def model_config(self) -> ModelConfig:
        """What the detectors build: each ModelConfig field is the option of the same name
        (its ``name`` is ``--model``), so a new model option is a field in both, nothing else."""
        return ModelConfig(**{f.name: getattr(self, "model" if f.name == "name" else f.name)
                              for f in fields(ModelConfig)})

    def settings(self) -> dict:
        """What ``_job.json`` records of this run (checked by a later ``--resume``)."""
        from inference.uris import normalize_extensions

        return {"input": self.input, "input_list": self.input_list, "model": self.model,
                "weights": self.weights, "score_threshold": self.score_threshold,
                "precision": self.precision, "shard_size": self.shard_size,
                "extensions": list(normalize_extensions(self.extensions))}


NAMES = frozenset(f.name for f in fields(RunConfig))


def _doc(f: Field) -> Doc:
    return f.metadata["option"]


def flag(f: Field) -> str:
    return "--" + f.name.replace("_", "-")


def _default(f: Field) -> Any:
    return f.default_factory() if f.default is MISSING else f.default  # type: ignore[misc]


def default_text(f: Field) -> str:
    """The default as the help and the README show it."""
    doc, value = _doc(f), _default(f)
    if doc.default_text:
        return doc.default_text
    if isinstance(value, bool):
        return "on" if value else "off"
    if value is None:
        return "—"
    return "`" + (",".join(value) if isinstance(value, list) else str(value)) + "`"


def crd_paths() -> dict[str, str]:
    """Option name -> the DetectionJob field it passes through from (``"model.name"``)."""
    return {f.name: _doc(f).crd for f in fields(RunConfig) if _doc(f).crd}


def cli_fields() -> list[Field]:
    return [f for f in fields(RunConfig) if _doc(f).cli]


def add_run_arguments(parser: argparse.ArgumentParser) -> None:
    """One flag per option, with its default, in the definition's order."""
    for f in cli_fields():
        doc = _doc(f)
        default = default_text(f)
        text = doc.help + ("" if default == "—" else f" (default: {default})")
        text = text.replace("`", "").replace("%", "%%")
        if isinstance(_default(f), bool):
            parser.add_argument(flag(f), action="store_true", help=text)
            continue
        kind = doc.parse or {"int": int, "float": float}.get(str(f.type).split(" ")[0], str)
        parser.add_argument(flag(f), type=kind, default=_default(f), metavar=doc.metavar, help=text)


def from_args(args: argparse.Namespace) -> RunConfig:
    """A RunConfig from parsed flags (the namespace's other entries are ignored)."""
    return RunConfig(**{k: v for k, v in vars(args).items() if k in NAMES})


def to_json(values: Mapping[str, Any]) -> str:
    """Options as shell-inert JSON (pure ASCII, no ``$`` or backtick): what the operator passes.

    Raises ``TypeError`` for a name that is not an option, so the two sides cannot drift.
    """
    unknown = sorted(set(values) - NAMES)
    if unknown:
        raise TypeError(f"not options of detectionjob run: {', '.join(unknown)}")
    text = json.dumps(dict(values), ensure_ascii=True, sort_keys=True, allow_nan=False)
    return text.replace("$", "\\u0024").replace("`", "\\u0060")


def from_json(text: str, source: str) -> RunConfig:
    """The RunConfig of a JSON object (``source`` names where it came from, for errors)."""
    data = json.loads(text)
    if not isinstance(data, dict):
        raise ValueError(f"{source} must hold a JSON object")
    unknown = sorted(set(data) - NAMES)
    if unknown:
        raise ValueError(f"{source}: unknown option(s) {', '.join(unknown)}")
    values = {k: v for k, v in data.items() if v is not None}
    if isinstance(values.get("workers"), int):
        values["workers"] = str(values["workers"])
    for f in fields(RunConfig):  # a string where the flag's parser makes the value: "auto" and the like
        parse = _doc(f).parse
        if parse is not None and isinstance(values.get(f.name), str):
            try:
                values[f.name] = parse(values[f.name])
            except ValueError:
                raise ValueError(f"{source}: {flag(f)}: cannot read {values[f.name]!r}") from None
    return RunConfig(**values)


def markdown_table(extra: list[tuple[str, str, str]] = ()) -> str:
    """The README's table of flags: ``| flag | default | meaning |``, then ``extra`` rows."""
    rows = [("Flag", "Default", "Meaning")]
    for f in cli_fields():
        doc = _doc(f)
        name = flag(f) + (f" {doc.metavar}" if doc.metavar and not isinstance(_default(f), bool) else "")
        rows.append((f"`{name}`", default_text(f), doc.help))
    rows += [(f"`{name}`", default, text) for name, default, text in extra]
    lines = ["| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |" for row in rows]
    return "\n".join([lines[0], "|---|---|---|", *lines[1:]]) + "\n"
