"""The job: plan the listing, then stream ``list (read tasks) -> shard stage (decode, detect,
write the part) -> counts``; the driver keeps counts, shard ids and K samples, never the rows."""

from __future__ import annotations

import logging
import re
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import asdict

import pyarrow.fs as pafs

from inference.console import Console
from inference.efficiency import device_use
from inference.listing import Skip, Unit, plan_manifest, plan_units, skip_for
from inference.options import RunConfig
from inference.pool import PoolPlan, parse_workers, plan_pool
from inference.preflight import check_output, first_image, listing_error, no_images
from inference.reasons import NOTHING_TO_DO, PHRASES
from inference.shard_source import ShardSource, Tally
from inference.shard_stage import ShardStage
from inference.store import StoreUnreachable
from inference.summary import Summary
from inference.uris import Location, UriError, normalize_extensions, resolve
from inference.watchdog import Watchdog
from inference.writer import (
    JOB_NAME,
    SAMPLES_DIR,
    SUMMARY_NAME,
    clear_outputs,
    finished_shards,
    read_json,
    remove_attempts_folder,
    remove_stale,
    write_json,
)

log = logging.getLogger("detectionjob")

# (done, total, failed) -> None; total is 0 while the listing is still going on.
# (done, total, failed, stalled): stalled is the stall watchdog's line while a detector is stalled.
ProgressCallback = Callable[[int, int, int, str | None], None]
# Shards a listing task may run ahead of the detectors (Ray Data's default is 2): the total is known
# early for the progress column, at ~25 KB a shard (256 URIs) of object store per listing task.
LIST_AHEAD = 1024
# The settings a resumed run must share with the run it resumes (else its rows would mix models).
RESUME_KEYS = ("model", "weights", "score_threshold", "precision")


class JobFailed(RuntimeError):
    """The job ran to its end but its result breaks the failure policy; the message says why."""

    complete = True  # every result was written


_STORE_VERDICT = re.compile(rf"\b{StoreUnreachable.__name__}: (.+)")


class StoreFailed(JobFailed):
    """A store stayed down for longer than ``--store-wait``; the message names it. The shards
    finished before are written (``--resume`` skips them)."""

    complete = False


def store_failure(exc: BaseException) -> str | None:
    """The verdict of a store that stayed down (:class:`inference.store.StoreUnreachable`) in a
    failure of the pipeline, or None. Ray Data hands the driver the detector's exception as text
    only (a ``UserCodeException`` with the remote traceback): the verdict is its last line."""
    seen: set[int] = set()
    todo: list[BaseException | None] = [exc]
    while todo:
        cur = todo.pop()
        if cur is None or id(cur) in seen:
            continue
        seen.add(id(cur))
        if type(cur) is StoreUnreachable:
            return str(cur)
        found = _STORE_VERDICT.findall(str(cur))
        if found:
            return found[-1].strip()
        todo += [cur.__cause__, cur.__context__, getattr(cur, "cause", None)]
    return None


def _verbose() -> bool:
    return log.isEnabledFor(logging.DEBUG)


def _start_ray(address: str | None) -> None:
    """Start or join Ray. Unless ``-v``, Ray's Python loggers print errors only (no notice that
    token authentication is on, no Ray Data plan or "execution finished" lines); their files in
    Ray's session folder keep everything. Workers' output is still forwarded."""
    import ray

    verbose = _verbose()
    if not ray.is_initialized():
        ray.init(address=address, ignore_reinit_error=True,
                 logging_level=logging.INFO if verbose else logging.ERROR,
                 log_to_driver=True, include_dashboard=False if address is None else None)
    import ray.data  # configures the "ray.data" logger: a console handler at INFO, a file handler

    for handler in logging.getLogger("ray.data").handlers:
        if handler.get_name() == "console" and not verbose:
            handler.setLevel(logging.ERROR)


def _cluster_resources() -> tuple[float, float, float | None]:
    """The cluster's CPUs and GPUs, and the CPUs of its largest node."""
    import ray

    res = ray.cluster_resources()
    nodes = [float(n["Resources"].get("CPU", 0)) for n in ray.nodes() if n.get("Alive")]
    return float(res.get("CPU", 1.0)), float(res.get("GPU", 0.0)), max(nodes, default=0) or None


def _start_tally(units: int, started_wall: float):
    """The :class:`Tally` actor, on the driver's node where it can be (on KubeRay the head, where no
    detector runs) and at nice 0: at Ray's default nice 15 it starved beside busy detectors, its
    snapshots timed out and the progress column went from 0 to done with nothing between."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    here = ray.get_runtime_context().get_node_id()
    return ray.remote(Tally).options(
        num_cpus=0, runtime_env={"env_vars": {"RAY_worker_niceness": "0"}},
        scheduling_strategy=NodeAffinitySchedulingStrategy(here, soft=True),
    ).remote(units, started_wall)


def plan_input(config: RunConfig, dst: Location | None = None) -> tuple[Location, list[Unit], Skip]:
    """The input's location, its listing units (cheap: one directory or one page of keys) and what
    the listing leaves out (``dst``, the job's output, and hidden folders)."""
    option = "--input-list" if config.input_list else "--input"
    src = resolve(config.input_list or config.input, option=option)
    skip = skip_for(src, dst, config.list_hidden)
    try:
        if config.input_list:
            return src, plan_manifest(src, config.input_list_column), skip
        return src, plan_units(src, skip=skip), skip
    except Exception as exc:  # noqa: BLE001 - the store's answer, as the user's error
        raise listing_error(src, option, exc) from exc


def check_input(config: RunConfig, src: Location, units: list[Unit], skip: Skip) -> bool:
    """Before any work: False when the input has no image and ``--allow-empty`` says that is fine;
    :class:`NoImages` when it is not; True when there is an image (or too much to look through)."""
    if config.input_list:
        return True
    extensions = normalize_extensions(config.extensions)
    try:
        found, others = first_image(src, units, extensions, skip)
    except Exception as exc:  # noqa: BLE001
        raise listing_error(src, "--input", exc) from exc
    if found is not False:
        return True
    if config.allow_empty:
        return False
    raise no_images(src, extensions, others)


def prepare_output(dst: Location, config: RunConfig) -> frozenset[str]:
    """Overwrite: remove an earlier run's files. Resume: the finished shards, after checking that
    the earlier run used the same model, weights, threshold and precision."""
    if not config.resume:
        removed = clear_outputs(dst)
        if removed:
            log.info("overwrite: removed %d part files of an earlier run", removed)
        return frozenset()
    earlier = read_json(dst, JOB_NAME)
    if earlier:
        now = config.settings()
        changed = [k for k in RESUME_KEYS if earlier.get(k) != now[k]]
        if changed and not config.allow_config_change:
            diffs = "; ".join(f"{k}: {earlier.get(k)!r} then, {now[k]!r} now" for k in changed)
            raise ValueError(f"--resume: the output was written with other settings ({diffs}); its rows "
                             "would mix the two. Use another --output, or --allow-config-change")
    return finished_shards(dst)


def build_dataset(source: ShardSource, config: RunConfig, plan: PoolPlan, dst: Location,
                  inputs: dict[str, Location], tally):
    """The streaming Ray Data pipeline, top to bottom."""
    import ray.data

    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = _verbose()
    # Shards a listing task may run ahead of the detectors (2 objects per block: data, metadata).
    ctx._max_num_blocks_in_streaming_gen_buffer = LIST_AHEAD
    # Every shard the listing yields is its own block, at once. Ray Data otherwise merges a read
    # task's small outputs up to 128 MiB: a whole listing would pass as one block at its end, and
    # no detector would start before it (tests/job/test_shards_job.py, the named-pipe manifest).
    # Nothing big flows here: shards of URIs in, a count row per shard out.
    ctx.target_max_block_size = 1
    spec = config.model_config()
    return (
        # List, one read task per unit: a shard of URIs flows on as soon as it is listed.
        ray.data.read_datasource(source, num_cpus=plan.reader_cpus,
                                 override_num_blocks=max(1, len(source.units)))
        # One shard per call: read and decode on threads, detect on the device, write the part.
        .map_batches(
            ShardStage,
            fn_constructor_kwargs={"spec": spec, "out": dst, "inputs": inputs,
                                   "batch_size": config.batch_size, "samples": config.samples,
                                   "tally": tally, "device": plan.device,
                                   "num_threads": plan.torch_threads, "precision": config.precision,
                                   "store_wait": config.store_wait,
                                   "devices": plan.num_gpus or 1.0, "streams": plan.streams},
            batch_size=1,
            batch_format="pyarrow",
            # ``--streams`` shards at once per actor, from as many threads
            compute=ray.data.ActorPoolStrategy(min_size=plan.min_size, max_size=plan.max_size,
                                               max_concurrent_calls_per_actor=plan.streams,
                                               enable_true_multi_threading=plan.streams > 1),
            num_cpus=plan.num_cpus,
            num_gpus=plan.num_gpus,
            runtime_env={"env_vars": plan.env_vars()},
        )
    )


class _Reporter(threading.Thread):
    """Polls the tally: the console's progress (a bar redrawn twice a second on a terminal, else a
    line every ``interval`` s) and the progress callback."""

    def __init__(self, tally, interval: float, started: float, progress: ProgressCallback | None,
                 console: Console, watchdog: Watchdog | None = None):
        super().__init__(name="detectionjob-progress", daemon=True)
        self.tally, self.started, self.progress, self.console = tally, started, progress, console
        self.watchdog = watchdog
        self.interval = min(interval, 0.5) if console.tty else interval
        self.stopped = threading.Event()

    def report(self, final: bool = False) -> dict:
        import ray

        try:
            snap = ray.get(self.tally.snapshot.remote(), timeout=30)
        except Exception as exc:  # noqa: BLE001 - progress is best effort
            log.debug("progress: %s", exc)
            return {}
        if self.watchdog is not None:
            try:
                for line in self.watchdog.check(snap, final):
                    self.console.note(line)
            except Exception as exc:  # noqa: BLE001 - the watchdog must never end the job itself
                log.warning("stall watchdog: %s", exc)
        self.console.progress(snap, time.monotonic() - self.started, final=final)
        if self.progress:
            total = snap["to_do"] if snap["listing_finished"] else 0
            self.progress(snap["done"], total, snap["failed"],
                          self.watchdog.stalled if self.watchdog and not final else None)
        return snap

    def run(self) -> None:
        while not self.stopped.wait(self.interval):
            self.report()


def run(config: RunConfig, progress: ProgressCallback | None = None, console: Console | None = None) -> dict:
    """Run the job; returns the summary that is also written to ``_summary.json``."""
    import ray

    console = console or Console(sys.stderr)
    started, started_wall = time.monotonic(), time.time()
    config.validate()
    dst = resolve(config.output, option="--output")
    src, units, skip = plan_input(config, dst)
    has_images = check_input(config, src, units, skip)
    check_output(dst)
    if config.evaluate_annotations:
        check_annotations(config.evaluate_annotations)
    if not has_images:
        return _nothing_to_do(config, src, dst, started, console)
    finished = prepare_output(dst, config)
    write_json(dst, JOB_NAME, config.settings())

    _start_ray(config.ray_address)
    ray_started = time.time()
    plan = plan_pool(parse_workers(config.workers), config.num_gpus, *_cluster_resources(),
                     streams=config.streams)
    for note in plan.notes:
        console.note(note)
    console.note(f"listing {config.input or config.input_list} in {len(units)} part(s); "
                 f"{len(finished)} shards already done")
    tally = _start_tally(len(units), started_wall)
    tally.mark.remote("ray_started", ray_started)
    source = ShardSource(src, units, normalize_extensions(config.extensions), config.shard_size,
                         finished, config.retry_errors, config.limit, tally, skip)
    inputs = {src.scheme: src}  # image URIs of the input's scheme use its endpoint and keys
    summary = Summary(samples=config.samples, started=started)
    watchdog = Watchdog(tally, dst, config.batch_timeout)
    reporter = _Reporter(tally, config.progress_interval, started, progress, console, watchdog)
    try:
        dataset = build_dataset(source, config, plan, dst, inputs, tally)
        tally.mark.remote("pipeline_started", time.time())
        timing = _stream(dataset, summary, reporter)
    except Exception as exc:
        verdict = store_failure(exc)
        if verdict is None:
            raise
        _write_failed_summary(dst, summary, verdict)
        raise StoreFailed(verdict) from None
    ray.kill(tally)

    stale, samples = _finish_output(dst, config, summary)
    result = summary.as_dict()  # wall time and images/s up to here, samples included
    result.update(
        input=config.input, input_list=config.input_list, output=config.output, model=config.model,
        weights=config.weights, score_threshold=config.score_threshold, shard_size=config.shard_size,
        listing_units=len(units), pool=asdict(plan), removed_stale_parts=stale,
        stalls_recovered=watchdog.stalls,
        listing_seconds=timing.get("listing_seconds"),
        seconds_to_detector_ready=timing.get("seconds_to_detector_ready"),
        startup_seconds=timing.get("startup_seconds"),
    )
    result.update(device_use(timing.get("device_seconds") or 0.0, summary.busy_seconds, summary.wait_seconds,
                             summary.images, timing.get("seconds_to_first_detection"),
                             config.cost_per_device_hour))
    if config.samples:
        result["samples"] = samples
    empty = None
    if not summary.listed and not config.allow_empty:  # a listing too big for check_input's look
        empty = no_images(src, normalize_extensions(config.extensions), timing.get("other_files", 0),
                          "--input-list" if config.input_list else "--input")
    failure = str(empty) if empty else failure_reason(summary, config.max_failed_fraction)
    result["status"] = "failed" if failure else "succeeded"
    if failure:
        result["reason"] = failure
    write_json(dst, SUMMARY_NAME, result)
    if config.evaluate_annotations and not empty:
        result["evaluation"] = _evaluate(config, console)  # reads the summary's score threshold
        if "error" in result["evaluation"] and not failure:
            failure = result["evaluation"]["error"]
            result.update(status="failed", reason=failure)
        write_json(dst, SUMMARY_NAME, result)
    if empty:
        raise empty
    if failure:
        raise JobFailed(failure)
    return result


def check_annotations(uri: str, option: str = "--evaluate-annotations") -> None:
    """The annotations to evaluate against exist (before any work: a typo fails at once)."""
    loc = resolve(uri, option)
    try:
        found = loc.fs.get_file_info(loc.path).type != pafs.FileType.NotFound
    except Exception as exc:  # noqa: BLE001 - the store's answer, in one line
        raise UriError(f"{option}: {uri}: cannot be read: {str(exc).splitlines()[0]}") from None
    if not found:
        raise UriError(f"{option}: {uri}: not found (a COCO instances JSON file or a folder of Pascal "
                       "VOC XML files)")


def _evaluate(config: RunConfig, console: Console) -> dict:
    """``--evaluate-annotations``: score the results just written (``_evaluation.json`` beside
    them); the headline numbers, or the error that kept them from being computed."""
    from inference.evaluate import EvaluateError, evaluate, write

    try:
        evaluation = evaluate(config.output, config.evaluate_annotations)
        write(evaluation)
    except (EvaluateError, UriError, OSError) as exc:
        return {"annotations": config.evaluate_annotations,
                "error": f"--evaluate-annotations: {config.evaluate_annotations}{PHRASES['EvaluationFailed']}"
                         f"{str(exc).splitlines()[0]}"}
    for line in evaluation.warnings:
        console.note(line)
    report = evaluation.report
    console.note(f"evaluated against {config.evaluate_annotations}: mAP {report['map']:.3f}, "
                 f"AP50 {report['map_50']:.3f} ({report['evaluation']})")
    return {"annotations": config.evaluate_annotations, "map": report["map"], "map_50": report["map_50"],
            "report": report["evaluation"]}


def _write_failed_summary(dst: Location, summary: Summary, reason: str) -> None:
    """The summary of a job a store ended, if the output store takes it."""
    result = {**summary.as_dict(), "status": "failed", "reason": reason}
    try:
        write_json(dst, SUMMARY_NAME, result)
    except OSError as exc:
        log.warning("_summary.json not written: %s", str(exc).splitlines()[0] if str(exc) else exc)


def _nothing_to_do(config: RunConfig, src: Location, dst: Location, started: float,
                   console: Console) -> dict:
    """``--allow-empty`` and no image: say so, write the summary, start nothing."""
    message = f"nothing to do: no images under {src.uri(src.path)} (--allow-empty)"
    console.note(message)
    result = Summary(started=started).as_dict()
    result.update(input=config.input, input_list=config.input_list, output=config.output,
                  model=config.model, status="succeeded", reason=NOTHING_TO_DO, message=message)
    write_json(dst, SUMMARY_NAME, result)
    return result


def _stream(dataset, summary: Summary, reporter: _Reporter) -> dict:
    """Run the pipeline to its end, adding each shard's counts to ``summary``; the last tally."""
    reporter.start()
    try:
        for stats in dataset.iter_batches(batch_size=None, batch_format="pyarrow"):
            summary.add(stats)
    finally:
        reporter.stopped.set()
        reporter.join()
    return reporter.report(final=True)


def _finish_output(dst: Location, config: RunConfig, summary: Summary) -> tuple[int, list[str]]:
    """After the last shard: drop the attempts folder and the parts of shards the input no longer
    has (a whole run only), draw the samples. Returns (parts removed, sample paths)."""
    remove_attempts_folder(dst)
    stale = remove_stale(dst, summary.seen) if config.limit is None else 0
    if stale:
        log.info("removed %d part files of shards the input no longer has", stale)
    if not config.samples:
        return stale, []
    from inference.visualize import draw_rows

    return stale, draw_rows(summary.candidates, Location(dst.fs, dst.join(SAMPLES_DIR), dst.scheme))


def failure_reason(summary: Summary, max_fraction: float) -> str | None:
    """Why the job failed under ``--max-failed-fraction``, or None."""
    if not summary.images or summary.failed / summary.images <= max_fraction:
        return None
    examples = "; ".join(summary.example_errors[:3])
    share = 100 * summary.failed / summary.images
    return (f"{summary.failed} of {summary.images} images failed ({share:.1f}%), "
            f"more than --max-failed-fraction {max_fraction:g}; for example: {examples}")
