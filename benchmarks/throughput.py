"""Throughput benchmark: bare PyTorch loop vs the reference Ray Data example vs ``detectionjob run``.

One run, same generated VOC-sized images, same model and batch size; each pipeline runs as its own
process tree, timed and memory-sampled from outside. Prints a Markdown table with ratios. With other
pipelines to compare, the bare loop runs first and last and the ratios use the mean of the two, since
a shared machine's speed drifts over the minutes a run takes.

    python benchmarks/throughput.py --n 2048 --model fasterrcnn_mobilenet_v3_large_320_fpn
    python benchmarks/throughput.py --n 256 --memory-n 256,4096 --deadlock-check
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from memtrack import run_measured  # noqa: E402

from inference.options import PRECISIONS  # noqa: E402

CACHE = Path(os.environ.get("DETECTIONJOB_BENCH_CACHE", Path.home() / ".cache" / "detectionjob" / "bench"))


CHUNK = 1024  # images per generating process beyond the first CHUNK (4096 took 55 s on one core)


def _make_chunk(path: Path, k: int, count: int) -> None:
    from inference.samples import make_samples

    part = path / f".part{k}"
    for f in make_samples(str(part), n=count, size=(500, 375), seed=(k << 32) + count):
        os.rename(f, path / f"c{k:03d}_{os.path.basename(f)}")
    part.rmdir()


def images_dir(n: int) -> Path:
    """N VOC-sized (500x375) JPEGs, generated once and cached (up to CHUNK: the same images as
    ever, in one process; more: CHUNK at a time in a process each)."""
    from concurrent.futures import ProcessPoolExecutor

    from inference.samples import make_samples

    path = CACHE / f"voc-like-{n}"
    if len(list(path.glob("*.jpg"))) != n:
        shutil.rmtree(path, ignore_errors=True)
        if n <= CHUNK:
            make_samples(str(path), n=n, size=(500, 375), seed=n)
            return path
        path.mkdir(parents=True)
        counts = [min(CHUNK, n - start) for start in range(0, n, CHUNK)]
        with ProcessPoolExecutor(min(len(counts), os.cpu_count() or 1)) as pool:
            list(pool.map(_make_chunk, [path] * len(counts), range(len(counts)), counts))
    return path


class GpuSampler:
    """``nvidia-smi`` every 200 ms while a pipeline runs: GPU utilisation (the share of time a kernel
    ran) and memory used. Steady state: from the first sample with a kernel running to the last."""

    def __init__(self) -> None:
        self.samples: list[tuple[int, int]] = []
        self.proc = None

    def __enter__(self) -> GpuSampler:
        smi = shutil.which("nvidia-smi")
        if smi:
            self.proc = subprocess.Popen([smi, "--query-gpu=utilization.gpu,memory.used",
                                          "--format=csv,noheader,nounits", "-lms", "200"],
                                         stdout=subprocess.PIPE, text=True)
            threading.Thread(target=self._read, daemon=True).start()
        return self

    def _read(self) -> None:
        for line in self.proc.stdout:
            try:
                util, mem = (int(x) for x in line.strip().split(","))
            except ValueError:
                continue
            self.samples.append((util, mem))

    def __exit__(self, *exc) -> None:
        if self.proc:
            self.proc.terminate()
            self.proc.wait()

    def stats(self) -> dict:
        steady = steady_stretch([u for u, _ in self.samples])
        if not steady:
            return {}
        return {"gpu_util_steady": sum(steady) / len(steady),
                "gpu_mem_peak_mib": max(m for _, m in self.samples), "gpu_samples": len(self.samples)}


def steady_stretch(utils: list[int], idle: int = 5) -> list[int]:
    """The samples of the longest stretch with a kernel running and never ``idle`` samples (a second
    at 200 ms) without one: the steady state, not a start-up blip seconds before it."""
    stretches, current, quiet = [], [], 0
    for u in utils:
        quiet = 0 if u > 0 else quiet + 1
        if quiet >= idle:
            if current:
                stretches.append(current)
            current = []
        elif u > 0 or current:
            current.append(u)
    stretches.append(current)
    best = max(stretches, key=lambda s: sum(u > 0 for u in s))
    while best and best[-1] == 0:
        best = best[:-1]
    return best


def sampled(fn, *a, **kw) -> dict:
    """``fn``'s row with the GPU's use while it ran; a pipeline that fails is a row that says so
    (the others still run: a GPU machine's minutes are few)."""
    with GpuSampler() as gpu:
        try:
            r = fn(*a, **kw)
        except Exception as exc:  # noqa: BLE001 - reported in the table and on stderr
            print(f"{fn.__name__} failed: {exc}", file=sys.stderr)
            first = str(exc).strip().splitlines()[-1:] or [type(exc).__name__]
            r = {"rate": 0.0, "wall": 0.0, "peak_bytes": 0, "note": f"FAILED: {first[0][:200]}"}
    return {**r, **gpu.stats()}


def gib(b: int) -> str:
    return f"{b / 2**30:.2f} GiB"


def bare(args, images: Path, kept: bool = False) -> dict:
    cmd = [sys.executable, str(HERE / "bare_loop.py"), "--images", str(images), "--model", args.model,
           "--batch-size", str(args.batch_size), "--precision", args.precision]
    cmd += ["--keep-freed-memory"] if kept else []
    r = run_measured(cmd, timeout=args.timeout, interval=args.memory_interval)
    assert r["rc"] == 0, r["stderr"][-3000:]
    inner = json.loads(r["stdout"].strip().splitlines()[-1])
    return {**r, "images": inner["images"], "rate": inner["images"] / inner["seconds"],
            "gpu_peak_bytes": inner.get("gpu_peak_bytes"),
            "note": f"model time only (images pre-decoded, model loaded); batch {args.batch_size}"
                    + ("; our detector's malloc thresholds (inference.allocator)" if kept else "")}


def reference(args, images: Path, n: int, concurrency: int, timeout: float) -> dict:
    with tempfile.TemporaryDirectory() as out:
        r = run_measured([sys.executable, str(HERE / "reference.py"), "--images", str(images), "--output",
                          out, "--model", args.model, "--batch-size", "4", "--concurrency",
                          str(concurrency)], timeout=timeout, interval=args.memory_interval)
    if r["timed_out"]:
        return {**r, "images": n, "rate": 0.0, "note": f"concurrency={concurrency}: hung, killed after "
                                                       f"{timeout:.0f} s"}
    assert r["rc"] == 0, r["stderr"][-3000:]
    return {**r, "images": n, "rate": n / r["wall"],
            "note": f"whole process, Ray start included; batch 4, concurrency={concurrency}"}


def detectionjob(args, images: Path, n: int, workers: str | None = None,
                 timeout: float | None = None) -> dict:
    with tempfile.TemporaryDirectory() as out:
        cmd = [shutil.which("detectionjob") or "detectionjob", "run", "--input", str(images), "--output",
               out, "--model", args.model, "--weights", "none", "--batch-size",
               str(args.job_batch_size or args.batch_size)]
        workers = workers or args.job_workers
        cmd += ["--workers", workers] if workers else []
        cmd += ["--num-gpus", args.num_gpus] if args.num_gpus else []
        cmd += ["--shard-size", str(args.job_shard_size)] if args.job_shard_size else []
        cmd += ["--streams", str(args.job_streams)] if args.job_streams else []
        cmd += ["--precision", args.precision] if args.precision != "fp32" else []
        r = run_measured(cmd, timeout=timeout or args.timeout, interval=args.memory_interval)
    if r["timed_out"]:
        return {**r, "images": n, "rate": 0.0, "note": f"hung, killed after {timeout:.0f} s"}
    assert r["rc"] == 0, r["stderr"][-3000:]
    summary = json.loads(r["stdout"])
    assert summary["images"] == n and summary["failed_images"] == 0
    verdict = summary.get("advice", "").split(":")[0]
    first = summary.get("seconds_to_first_detection") or 0.0
    steady = n / (summary["wall_seconds"] - first) if summary["wall_seconds"] > first else 0.0
    ready = summary.get("seconds_to_detector_ready") or 0.0
    return {**r, "images": n, "rate": n / r["wall"], "inner_rate": summary["images_per_second"],
            "steady_rate": steady, "summary": {k: v for k, v in summary.items() if k != "samples"},
            "note": f"whole CLI process, Ray start included; {steady:.1f} images/s from the first detection "
                    f"({first:.1f} s; model on the device at {ready:.1f} s) "
                    f"on; shards of {summary.get('shard_size')}; pool {summary['pool']['max_size']}"
                    f"{', ' + args.num_gpus + ' GPU each' if args.num_gpus else ''}, "
                    f"batch {summary.get('batch_sizes_used') or args.batch_size}, "
                    f"streams {summary['pool'].get('streams', 1)}; "
                    f"busy {summary.get('busy_fraction', 0):.0%} of "
                    f"{summary.get('device_seconds', 0):.0f} device-s, input wait "
                    f"{summary.get('input_wait_fraction', 0):.0%} ({verdict})"}


def versions() -> str:
    import ray
    import torch
    import torchvision

    device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu"
    return (f"{platform.node()} {platform.machine()} {os.cpu_count()} CPUs, {device}; Python "
            f"{platform.python_version()}, torch {torch.__version__}, torchvision {torchvision.__version__}, "
            f"ray {ray.__version__}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=2048, help="images (default: %(default)s)")
    p.add_argument("--model", default="fasterrcnn_mobilenet_v3_large_320_fpn")
    p.add_argument("--batch-size", type=int, default=4, help="bare loop and detectionjob batch size")
    p.add_argument("--job-batch-size", help="detectionjob's instead (`auto`)")
    p.add_argument("--num-gpus", help="detectionjob --num-gpus (0.5: two detectors per GPU)")
    p.add_argument("--job-workers", help="detectionjob --workers")
    p.add_argument("--job-shard-size", type=int, help="detectionjob --shard-size")
    p.add_argument("--job-streams", type=int, help="detectionjob --streams")
    p.add_argument("--modes", default="bare,reference,detectionjob",
                   help="of bare, bare-kept (the bare loop with our detector's malloc thresholds), "
                        "reference, detectionjob (default: %(default)s)")
    p.add_argument("--reference-concurrency", type=int, default=1,
                   help="actor pool size of the reference (2 deadlocks on a 2-CPU machine)")
    p.add_argument("--precision", default="fp32", choices=PRECISIONS)
    p.add_argument("--memory-n", default="", help="e.g. 256,4096: detectionjob peak memory at each N")
    p.add_argument("--deadlock-check", action="store_true",
                   help="also run reference and detectionjob with 2 workers on the (2-CPU) machine")
    p.add_argument("--memory-interval", type=float, default=2.0,
                   help="seconds between memory samples (default: %(default)s); reading PSS walks every "
                        "process's page tables, about 5 ms per process, which slows what it measures")
    p.add_argument("--no-bracket", action="store_true",
                   help="run the bare loop once, not before and after the other pipelines")
    p.add_argument("--timeout", type=float, default=3600)
    p.add_argument("--json", help="write raw results here")
    args = p.parse_args()
    # A SIGTERM (timeout(1), a CI runner) unwinds like Ctrl-C: run_measured then kills the pipeline's
    # process tree, Ray's daemons included, instead of leaving it running.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))

    images = images_dir(args.n)
    rows: dict[str, dict] = {}
    modes = args.modes.split(",")
    bracket = "bare" in modes and len(modes) > 1 and not args.no_bracket
    if "bare" in modes:
        rows["bare PyTorch loop" + (" (first)" if bracket else "")] = sampled(bare, args, images)
    if "bare-kept" in modes:
        rows["bare PyTorch loop, memory kept"] = sampled(bare, args, images, kept=True)
    if "reference" in modes:
        rows["reference Ray Data example"] = sampled(reference, args, images, args.n,
                                                     args.reference_concurrency, args.timeout)
    if "detectionjob" in modes:
        rows["detectionjob run"] = sampled(detectionjob, args, images, args.n)
    if bracket:
        # This machine's speed drifts over minutes: the floor is the mean of a run before and after.
        rows["bare PyTorch loop (last)"] = sampled(bare, args, images)
    bare_rates = [r["rate"] for name, r in rows.items() if name.startswith("bare PyTorch loop (")
                  or name == "bare PyTorch loop"]
    base = sum(bare_rates) / len(bare_rates) if bare_rates else None

    print(f"\n{datetime.date.today()} | {versions()}")
    print(f"model {args.model}, N = {args.n} VOC-sized (500x375) images, precision {args.precision}, "
          f"memory sampled every {args.memory_interval:g} s")
    if len(bare_rates) > 1:
        print(f"bare loop: {' and '.join(f'{r:.2f}' for r in bare_rates)} images/s before and after; "
              f"ratios are to their mean, {base:.2f}")
    print()
    gpu = any("gpu_util_steady" in r for r in rows.values())
    gpu_head = " GPU busy (steady, nvidia-smi) | GPU memory peak |" if gpu else ""
    print("| pipeline | images/s | vs bare loop | wall s | peak memory (PSS, process tree) |"
          f"{gpu_head} notes |")
    print("|---|---:|---:|---:|---:|" + ("---:|---:|" if gpu else "") + "---|")
    for name, r in rows.items():
        ratio = f"{r['rate'] / base:.2f}x" if base else "-"
        memory = gib(r["peak_bytes"])
        cells = (f" {r.get('gpu_util_steady', 0):.0f} % | {r.get('gpu_mem_peak_mib', 0) / 1024:.1f} GiB |"
                 if gpu else "")
        print(f"| {name} | {r['rate']:.2f} | {ratio} | {r['wall']:.1f} | {memory} |{cells} {r['note']} |")
    if "reference Ray Data example" in rows and "detectionjob run" in rows:
        ref, ours = rows["reference Ray Data example"]["rate"], rows["detectionjob run"]["rate"]
        if ref:
            print(f"\ndetectionjob run / reference: {ours / ref:.2f}x")

    if args.memory_n:
        print("\n| detectionjob run N | wall s | images/s | peak memory |\n|---:|---:|---:|---:|")
        peaks = []
        for n in [int(x) for x in args.memory_n.split(",")]:
            r = detectionjob(args, images_dir(n), n)
            peaks.append(r["peak_bytes"])
            print(f"| {n} | {r['wall']:.1f} | {r['rate']:.2f} | {gib(r['peak_bytes'])} |")
            rows[f"memory N={n}"] = r
        print(f"\npeak memory ratio, largest N / smallest N: {peaks[-1] / peaks[0]:.2f}x")

    if args.deadlock_check:
        cpus = os.cpu_count() or 2
        timeout = 300.0
        small = images_dir(64)
        ref = reference(args, small, 64, cpus, timeout)
        ours = detectionjob(args, small, 64, workers=str(cpus), timeout=timeout)
        print(f"\nworkers = CPUs ({cpus}), 64 images, {timeout:.0f} s limit:")
        for name, r in (("reference, concurrency=CPUs", ref), ("detectionjob run --workers CPUs", ours)):
            print(f"- {name}: " + ("HUNG (killed)" if r["timed_out"] else f"finished in {r['wall']:.1f} s"))

    if args.json:
        Path(args.json).write_text(json.dumps(
            {k: {kk: vv for kk, vv in v.items() if kk not in ("stdout", "stderr")} for k, v in rows.items()},
            indent=2))


if __name__ == "__main__":
    main()
