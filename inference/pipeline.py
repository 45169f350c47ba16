"""The job: list images, then stream ``decode (CPU) -> detector actor pool -> Parquet``."""

from __future__ import annotations

import logging
import math
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import pyarrow.fs as pafs

from inference.decode import load_images
from inference.detect_stage import DetectStage
from inference.pool import PoolPlan, parse_workers, plan_pool
from inference.spec import ModelError, ModelSpec, check_model_name
from inference.summary import Summary
from inference.uris import Location, list_images, normalize_extensions, resolve
from inference.writer import SAMPLES_DIR, SUMMARY_NAME, PartWriter, clear_outputs, done_paths

log = logging.getLogger("detectionjob")

# (done, total, failed) -> None; called every ``progress_interval`` seconds and at the end.
ProgressCallback = Callable[[int, int, int], None]


@dataclass
class RunConfig:
    """Everything ``detectionjob run`` takes; field names are the CLI's option names."""

    input: str
    output: str
    extensions: list[str] = field(default_factory=list)
    model: str = "fasterrcnn_resnet50_fpn_v2"
    weights: str = "DEFAULT"
    score_threshold: float = 0.5
    batch_size: int = 4
    num_gpus: float | None = None
    workers: str | None = None
    limit: int | None = None
    samples: int = 0
    resume: bool = False
    seed: int = 0
    precision: str = "fp32"
    ray_address: str | None = None
    progress_interval: float = 5.0
    rows_per_file: int = 1000

    def validate(self) -> None:
        """Fail fast, before Ray starts and before the output is touched, with the option named."""
        check_model_name(self.model)
        if self.batch_size < 1:
            raise ValueError(f"--batch-size: must be >= 1, got {self.batch_size}")
        if not 0.0 <= self.score_threshold <= 1.0:
            raise ValueError(f"--score-threshold: must be within [0, 1], got {self.score_threshold}")
        if self.num_gpus is not None and self.num_gpus < 0:
            raise ValueError(f"--num-gpus: must be >= 0, got {self.num_gpus}")
        if self.limit is not None and self.limit < 0:
            raise ValueError(f"--limit: must be >= 0, got {self.limit}")
        if self.samples < 0:
            raise ValueError(f"--samples: must be >= 0, got {self.samples}")
        if self.precision not in ("fp32", "fp16", "bf16"):
            raise ValueError(f"--precision: one of fp32, fp16, bf16, got {self.precision!r}")
        parse_workers(self.workers)
        w = self.weights
        is_file = ("/" in w or w.endswith((".pth", ".pt"))) and not w.startswith(("http://", "https://"))
        if is_file and w.lower() != "none":
            loc = resolve(w, option="--weights")
            if loc.fs.get_file_info(loc.path).type != pafs.FileType.File:
                raise ModelError(f"--weights: no file at {w!r}")


def _start_ray(address: str | None) -> None:
    import ray

    if not ray.is_initialized():
        ray.init(address=address, ignore_reinit_error=True, logging_level=logging.WARNING,
                 log_to_driver=True, include_dashboard=False if address is None else None)


def _cluster_resources() -> tuple[float, float]:
    import ray

    res = ray.cluster_resources()
    return float(res.get("CPU", 1.0)), float(res.get("GPU", 0.0))


def build_dataset(uris: list[tuple[str, str]], fs: pafs.FileSystem, config: RunConfig, plan: PoolPlan):
    """The streaming Ray Data pipeline, top to bottom."""
    import ray.data

    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = log.isEnabledFor(logging.DEBUG)
    items = [{"path": path, "uri": uri} for path, uri in uris]
    spec = ModelSpec(config.model, config.weights, config.score_threshold, config.seed)
    # Merged into the job's runtime env. Both stages get it: with equal remote args Ray Data fuses
    # decode into the detector actor on a CPU-only cluster (no object-store hop, no extra worker).
    runtime_env = {"env_vars": plan.env_vars()}
    return (
        ray.data.from_items(items, override_num_blocks=max(1, min(math.ceil(len(items) / 16), 4096)))
        # Read and decode on CPU; images travel as uint8, never as float32.
        .map_batches(load_images, fn_kwargs={"fs": fs}, batch_size=16, num_cpus=plan.decode_cpus,
                     runtime_env=runtime_env)
        # Detect on the actor pool; float conversion happens on the actor's device.
        .map_batches(
            DetectStage,
            fn_constructor_kwargs={"spec": spec, "device": plan.device,
                                   "num_threads": plan.torch_threads, "precision": config.precision},
            batch_size=config.batch_size,
            batch_format="numpy",
            compute=ray.data.ActorPoolStrategy(min_size=plan.min_size, max_size=plan.max_size),
            num_cpus=plan.num_cpus,
            num_gpus=plan.num_gpus,
            runtime_env=runtime_env,
        )
    )


def run(config: RunConfig, progress: ProgressCallback | None = None) -> dict:
    """Run the job; returns the summary that is also written to ``_summary.json``."""
    started = time.monotonic()
    config.validate()
    src = resolve(config.input, option="--input")
    dst = resolve(config.output, option="--output")
    files = list_images(src, normalize_extensions(config.extensions))
    listed = len(files)
    if config.resume:
        done = done_paths(dst)
        files = [f for f in files if src.uri(f) not in done]
    skipped = listed - len(files)
    files = files[: config.limit]
    if not config.resume:
        removed = clear_outputs(dst)
        if removed:
            log.info("overwrite: removed %d part files of an earlier run", removed)

    summary = Summary(total=len(files), started=started)
    writer = PartWriter(dst, rows_per_file=config.rows_per_file)
    plan = None
    print(f"[detectionjob] {listed} images listed under {config.input}, {skipped} already done, "
          f"{len(files)} to process", file=sys.stderr, flush=True)
    if files:
        _start_ray(config.ray_address)
        plan = plan_pool(parse_workers(config.workers), config.num_gpus, *_cluster_resources())
        for note in plan.notes:
            print(f"[detectionjob] {note}", file=sys.stderr, flush=True)
        ds = build_dataset([(f, src.uri(f)) for f in files], src.fs, config, plan)
        last = time.monotonic()
        for table in ds.iter_batches(batch_size=None, batch_format="pyarrow"):
            writer.add(table)
            summary.add(table)
            if time.monotonic() - last >= config.progress_interval:
                last = time.monotonic()
                print(summary.progress_line(), file=sys.stderr, flush=True)
                if progress:
                    progress(summary.images, summary.total, summary.failed)
    writer.flush()
    if progress:
        progress(summary.images, summary.total, summary.failed)

    samples = []
    if config.samples:
        from inference.visualize import write_samples

        samples = write_samples(dst, Location(dst.fs, dst.join(SAMPLES_DIR), dst.scheme), config.samples)
    result = summary.as_dict()  # wall time and images/s up to here, samples included
    result.update(
        input=config.input, output=config.output, model=config.model, weights=config.weights,
        score_threshold=config.score_threshold, listed_images=listed, skipped_existing=skipped,
        files=[dst.uri(f) for f in writer.files], pool=asdict(plan) if plan else None,
    )
    if config.samples:
        result["samples"] = samples
    writer.write_json(SUMMARY_NAME, result)
    return result
