"""Scale benchmark (issue 11): does the driver's memory stay flat as the number of images N grows?

One run, printed as Markdown tables:

1. **Listing and planning over N** (local folders; a real MinIO on loopback, foldered and flat):
   - *new*: a fresh process runs ``plan_units`` and a Ray Data pipeline
     ``read_datasource(ShardSource(...))`` whose consumer only counts shards and URIs (no model),
     under ``ray.init(num_cpus=2)``; it reports wall time, time to the first shard, the driver's
     peak RSS (``VmHWM`` of its own process: the driver only, not Ray's daemons or workers) and the
     peak RSS of the worker processes that ran the read tasks (a probe fused into the read task
     reports its process id; their ``VmHWM`` is read before Ray shuts down);
   - *old*: a fresh process lists everything the way the driver did before the rewrite
     (``FileSelector(recursive=True)``, filter, sort, one dict per file) and reports its peak RSS.
   The read is set up as the job sets it up (``target_max_block_size`` = 1 B: one block per
   shard). The flat prefix is listed once more under Ray Data's default target (128 MiB), which
   merges the blocks a read task yields, so that a unit's shards leave its read task together
   when the unit is listed; the "blocks" column shows how many blocks the consumer got.
2. **Whole jobs at two sizes 10x apart**: ``detectionjob run`` (through ``inference.cli.main``) in a
   wrapper process that prints its own ``VmHWM`` afterwards, so the driver's peak is exact.

    python benchmarks/scale.py                                   # everything (about 30 min)
    python benchmarks/scale.py --local-n 10000,100000 --s3-n 10000 --job-n 64,640
    python benchmarks/scale.py --skip-s3 --skip-jobs

Large local trees (empty ``.jpg`` files, 100 subfolders) and the small JPEGs are cached under
``~/.cache/detectionjob/bench/`` keyed by N; everything else (MinIO's data, Ray's session files,
job outputs) lives in one temporary folder that is deleted at the end.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
CACHE = Path(os.environ.get("DETECTIONJOB_BENCH_CACHE", Path.home() / ".cache" / "detectionjob" / "bench"))
EXTENSIONS = ("jpg",)
FOLDERS = 100
JOB_IMAGE_SIZE = (128, 96)  # make_samples needs height >= 82 (96x72 raises ValueError)
MODEL = "fasterrcnn_mobilenet_v3_large_320_fpn"


# --- /proc ------------------------------------------------------------------------------------

def status_kib(field: str, pid: int | str = "self") -> int:
    """A ``kB`` field of ``/proc/<pid>/status`` (``VmHWM``: peak RSS; ``VmRSS``: now); 0 if gone."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def mib(kib: float) -> str:
    return f"{kib / 1024:.0f} MiB"


# --- children (fresh processes) ---------------------------------------------------------------

def _probe(block):
    """Fused into the read task: tag the block with this worker's pid and peak RSS so far."""
    import os as _os

    import pyarrow as _pa

    hwm = 0
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                hwm = int(line.split()[1])
    n = block.num_rows
    return (block.append_column("pid", _pa.array([_os.getpid()] * n, _pa.int64()))
            .append_column("hwm_kib", _pa.array([hwm] * n, _pa.int64())))


def child_new(src_uri: str, shard_size: int, ray_tmp: str, ray_default_blocks: bool = False) -> dict:
    """The new path: plan the units, stream shards through Ray Data, count them. The read is set up
    as ``inference.pipeline.build_dataset`` sets it up (Ray Data's ``target_max_block_size`` = 1 B,
    so each shard is its own block, and the listing's run-ahead); ``ray_default_blocks`` leaves
    Ray Data's block size target at its default (128 MiB) instead."""
    import logging

    import pyarrow.compute as pc
    import ray
    import ray.data

    import inference.pipeline as job
    from inference.listing import plan_units
    from inference.shard_source import ShardSource
    from inference.uris import resolve

    t0 = time.monotonic()
    src = resolve(src_uri)
    units = plan_units(src)
    t_plan = time.monotonic()
    ray.init(num_cpus=2, include_dashboard=False, logging_level=logging.WARNING, _temp_dir=ray_tmp)
    t_ray = time.monotonic()
    hwm_after_init = status_kib("VmHWM")
    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False
    if not ray_default_blocks:
        ctx.target_max_block_size = 1  # as build_dataset does
    ahead = getattr(job, "LIST_AHEAD", None)
    remote = {"_generator_backpressure_num_objects": 2 * ahead} if ahead else {}
    ds = (ray.data.read_datasource(ShardSource(src, units, EXTENSIONS, shard_size), num_cpus=1.0,
                                   override_num_blocks=max(1, len(units)), ray_remote_args=remote)
          # Same resources and remote args as the read, so Ray Data fuses it into the read task.
          .map_batches(_probe, batch_size=None, batch_format="pyarrow", num_cpus=1.0, **remote))
    shards = uris = blocks = 0
    first = None
    workers: dict[int, int] = {}
    for block in ds.iter_batches(batch_size=None, batch_format="pyarrow"):
        if first is None:
            first = time.monotonic()
        blocks += 1
        shards += block.num_rows
        uris += pc.sum(pc.list_value_length(block.column("uris"))).as_py() or 0
        for pid, hwm in zip(block.column("pid").to_pylist(), block.column("hwm_kib").to_pylist(),
                            strict=True):
            workers[pid] = max(workers.get(pid, 0), hwm)
    t_end = time.monotonic()
    for pid in workers:  # the whole life of each read worker, up to now
        workers[pid] = max(workers[pid], status_kib("VmHWM", pid))
    stats = ds.stats()
    result = {
        "units": len(units), "shards": shards, "uris": uris, "blocks": blocks,
        "plan_s": t_plan - t0, "ray_init_s": t_ray - t_plan,
        "first_shard_s": (first - t_ray) if first else None, "list_s": t_end - t_ray,
        "driver_hwm_kib": status_kib("VmHWM"), "driver_hwm_after_init_kib": hwm_after_init,
        "read_workers": len(workers), "read_worker_hwm_kib": max(workers.values(), default=0),
        "fused": "ListImages->MapBatches(_probe)" in stats,
        "driver_rss_anon_kib": status_kib("RssAnon"), "driver_rss_shmem_kib": status_kib("RssShmem"),
    }
    ray.shutdown()
    return result


def child_old(src_uri: str) -> dict:
    """The old path: the whole listing in one list, sorted, then one dict per file."""
    import pyarrow.fs as pafs

    from inference.uris import resolve

    t0 = time.monotonic()
    src = resolve(src_uri)
    suffixes = tuple("." + e for e in EXTENSIONS)
    selector = pafs.FileSelector(src.path, recursive=True, allow_not_found=src.scheme != "")
    infos = src.fs.get_file_info(selector)
    t_list = time.monotonic()
    files = sorted(f.path for f in infos
                   if f.type == pafs.FileType.File and f.path.lower().endswith(suffixes))
    del infos
    items = [{"path": f, "uri": src.uri(f)} for f in files]
    t_end = time.monotonic()
    return {"uris": len(items), "list_s": t_list - t0, "wall_s": t_end - t0,
            "peak_kib": status_kib("VmHWM")}


def child_job(argv: list[str]) -> None:
    """``detectionjob run`` in this process, then this process's peak RSS on the last line."""
    from inference.cli import main

    code = main(argv)
    print(f"\n@@VMHWM_KIB {status_kib('VmHWM')}", flush=True)
    ray = sys.modules.get("ray")
    if ray is not None and ray.is_initialized():
        ray.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def run_child(args: list[str], env: dict, timeout: float) -> dict:
    t0 = time.monotonic()
    proc = subprocess.run([sys.executable, str(Path(__file__).resolve()), *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=timeout, check=False)
    wall = time.monotonic() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"child {args[:3]} failed ({proc.returncode}):\n{proc.stderr[-4000:]}")
    return {**json.loads(proc.stdout.strip().splitlines()[-1]), "process_s": wall}


# --- inputs -----------------------------------------------------------------------------------

def names(n: int) -> list[tuple[int, int]]:
    """(folder, index) of N images spread over FOLDERS folders."""
    per = n // FOLDERS
    return [(d, d * per + j) for d in range(FOLDERS) for j in range(per)]


def local_tree(n: int) -> Path:
    """N empty ``.jpg`` files in 100 subfolders, created once and cached (listing never opens them)."""
    root, done = CACHE / f"tree-{n}", CACHE / f"tree-{n}.complete"
    if done.exists():
        return root
    shutil.rmtree(root, ignore_errors=True)
    t0 = time.monotonic()
    for d in range(FOLDERS):
        os.makedirs(root / f"d{d:03d}")
    for d, i in names(n):
        os.close(os.open(root / f"d{d:03d}" / f"img_{i:07d}.jpg", os.O_CREAT | os.O_WRONLY, 0o644))
    done.write_text(f"{n}\n")
    print(f"[scale] created {n} files under {root} in {time.monotonic() - t0:.0f} s", file=sys.stderr)
    return root


def job_images(n: int) -> Path:
    from inference.samples import make_samples

    path = CACHE / f"small-{JOB_IMAGE_SIZE[0]}x{JOB_IMAGE_SIZE[1]}-{n}"
    if len(list(path.glob("*.jpg"))) != n:
        shutil.rmtree(path, ignore_errors=True)
        make_samples(str(path), n=n, size=JOB_IMAGE_SIZE, seed=n)
    return path


# --- sections ---------------------------------------------------------------------------------

def listing_row(n: int, layout: str, uri: str, env: dict, ray_tmp: str, args,
                ray_default_blocks: bool = False, old: dict | None = None) -> dict:
    if old is None:
        print(f"[scale] listing {layout} N={n}: old path", file=sys.stderr, flush=True)
        old = run_child(["--child", "old", "--src", uri], env, args.timeout)
    print(f"[scale] listing {layout} N={n}: new path", file=sys.stderr, flush=True)
    extra = ["--ray-default-blocks"] if ray_default_blocks else []
    new = run_child(["--child", "new", "--src", uri, "--shard-size", str(args.shard_size), "--ray-tmp",
                     ray_tmp, *extra], env, args.timeout)
    assert new["uris"] == n == old["uris"], (n, new["uris"], old["uris"])
    row = {"n": n, "layout": layout, "new": new, "old": old}
    print(f"[scale] {json.dumps(row)}", file=sys.stderr, flush=True)
    return row


def listing_table(rows: list[dict]) -> str:
    out = ["| N | layout | units | shards | blocks | plan s | ray.init s | first shard s | list s | URIs/s "
           "| driver peak (after init) | read-worker peak | old: list s | old: total s | old: peak |",
           "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        new, old = r["new"], r["old"]
        out.append(
            f"| {r['n']:,} | {r['layout']} | {new['units']} | {new['shards']:,} | {new['blocks']:,} "
            f"| {new['plan_s']:.2f} "
            f"| {new['ray_init_s']:.1f} | {new['first_shard_s']:.2f} | {new['list_s']:.1f} "
            f"| {new['uris'] / new['list_s']:,.0f} | {mib(new['driver_hwm_kib'])} "
            f"({mib(new['driver_hwm_after_init_kib'])}) | {mib(new['read_worker_hwm_kib'])} "
            f"| {old['list_s']:.1f} | {old['wall_s']:.1f} | {mib(old['peak_kib'])} |")
    return "\n".join(out)


def ratios(rows: list[dict], layout: str) -> str:
    same = sorted((r for r in rows if r["layout"] == layout), key=lambda r: r["n"])
    if len(same) < 2:
        return ""
    lo, hi = same[0], same[-1]
    new = hi["new"]["driver_hwm_kib"] / lo["new"]["driver_hwm_kib"]
    wrk = hi["new"]["read_worker_hwm_kib"] / lo["new"]["read_worker_hwm_kib"]
    old = hi["old"]["peak_kib"] / lo["old"]["peak_kib"]
    return (f"{layout}, N = {hi['n']:,} / N = {lo['n']:,}: new driver peak **{new:.2f}x** (goal <= 1.1x), "
            f"read-worker peak {wrk:.2f}x, old path peak {old:.2f}x.")


def local_section(args, ray_tmp: str) -> tuple[list[dict], str]:
    rows = []
    for n in args.local_n:
        root = local_tree(n)
        rows.append(listing_row(n, f"local, {FOLDERS} folders", str(root), dict(os.environ), ray_tmp, args))
    return rows, ratios(rows, f"local, {FOLDERS} folders")


def sweep_section(args, ray_tmp: str) -> str:
    """Same N, more and smaller shards: what each block (shard) costs the driver."""
    n = max(args.local_n)
    root = local_tree(n)
    rows = []
    for size in args.sweep_shard_sizes:
        print(f"[scale] sweep N={n} shard size {size}", file=sys.stderr, flush=True)
        new = run_child(["--child", "new", "--src", str(root), "--shard-size", str(size),
                         "--ray-tmp", ray_tmp], dict(os.environ), args.timeout)
        print(f"[scale] {json.dumps(new)}", file=sys.stderr, flush=True)
        rows.append((size, new))
    out = ["| shard size | shards = blocks | list s | driver peak | peak - after init | RssAnon at end "
           "| RssShmem at end |", "|---:|---:|---:|---:|---:|---:|---:|"]
    for size, r in rows:
        out.append(f"| {size} | {r['blocks']:,} | {r['list_s']:.1f} | {mib(r['driver_hwm_kib'])} "
                   f"| {mib(r['driver_hwm_kib'] - r['driver_hwm_after_init_kib'])} "
                   f"| {mib(r['driver_rss_anon_kib'])} | {mib(r['driver_rss_shmem_kib'])} |")
    (_, a), (_, b) = rows[0], rows[-1]
    per = (b["driver_hwm_kib"] - a["driver_hwm_kib"]) * 1024 / max(1, b["blocks"] - a["blocks"])
    return (f"N = {n:,} local files, {FOLDERS} folders, the new path at several shard sizes.\n\n"
            + "\n".join(out) + f"\n\nDriver peak per extra block: **{per:,.0f} bytes** "
              f"(({mib(b['driver_hwm_kib'])} - {mib(a['driver_hwm_kib'])}) / "
              f"({b['blocks']:,} - {a['blocks']:,} blocks)).")


def s3_section(args, tmp: Path, ray_tmp: str) -> tuple[list[dict], list[str]]:
    """MinIO on loopback: measure the PUT rate, upload what fits the budget, list each layout."""
    import boto3
    from botocore.config import Config

    sys.path.insert(0, str(REPO / "tests"))
    from harness.minio import MinioS3

    notes: list[str] = []
    rows: list[dict] = []
    saved_tempdir = tempfile.tempdir
    tempfile.tempdir = str(tmp)  # MinIO's data folder goes under our temp folder too
    s3 = MinioS3(tmp / "minio-logs")
    exported = contextlib.ExitStack()
    try:
        s3.start()
        exported.enter_context(s3.exported())
        client = boto3.session.Session().client(
            "s3", endpoint_url=s3.endpoint_url, region_name=s3.region, aws_access_key_id=s3.access_key,
            aws_secret_access_key=s3.secret_key,
            config=Config(max_pool_connections=64, retries={"mode": "standard"}))

        def put_all(keys: list[str]) -> float:
            t0 = time.monotonic()
            with ThreadPoolExecutor(args.put_threads) as pool:
                for _ in pool.map(lambda k: client.put_object(Bucket=s3.bucket, Key=k, Body=b""), keys,
                                  chunksize=64):
                    pass
            return time.monotonic() - t0

        probe = [f"putrate/img_{i:07d}.jpg" for i in range(args.put_probe)]
        rate = len(probe) / put_all(probe)
        notes.append(f"MinIO PUT rate (zero-byte objects, boto3, {args.put_threads} threads, loopback): "
                     f"**{rate:,.0f} objects/s** over {len(probe):,} PUTs.")
        # Objects needed for N: N foldered, plus N flat at the largest N.
        chosen: list[int] = []
        for n in sorted(args.s3_n):
            total = sum(chosen) + n + n
            if total / rate > args.s3_budget:
                notes.append(f"N = {n:,} skipped on MinIO: uploading {total:,} objects (foldered layouts "
                             f"+ one flat prefix) would take ~{total / rate / 60:.0f} min at that rate, "
                             f"over the {args.s3_budget / 60:.0f} min budget.")
                break
            chosen.append(n)
        if not chosen:
            return rows, notes
        env = {**os.environ, **s3.env}
        uploaded = 0
        t_up = 0.0
        for n in chosen:
            keys = [f"n{n}/d{d:03d}/img_{i:07d}.jpg" for d, i in names(n)]
            t_up += put_all(keys)
            uploaded += len(keys)
            rows.append(listing_row(n, f"MinIO, {FOLDERS} folders", s3.uri(f"n{n}"), env, ray_tmp, args))
        top = chosen[-1]
        keys = [f"flat{top}/img_{i:07d}.jpg" for i in range(top)]
        t_up += put_all(keys)
        uploaded += len(keys)
        notes.append(f"Uploaded {uploaded:,} objects in {t_up:.0f} s ({uploaded / t_up:,.0f} objects/s).")
        rows.append(listing_row(top, "MinIO, one flat prefix", s3.uri(f"flat{top}"), env, ray_tmp, args))
        # The same under Ray Data's default block size target: a read task's shards are merged.
        rows.append(listing_row(top, "MinIO, one flat prefix, Ray's default target_max_block_size",
                                s3.uri(f"flat{top}"), env, ray_tmp, args, ray_default_blocks=True,
                                old=rows[-1]["old"]))
        # One stream of ListObjectsV2 pages, no Ray: what one read task (or one --resume LIST) gets.
        t0, pages, keys_seen = time.monotonic(), 0, 0
        for page in client.get_paginator("list_objects_v2").paginate(
                Bucket=s3.bucket, Prefix=f"flat{top}/", PaginationConfig={"PageSize": 1000}):
            pages += 1
            keys_seen += len(page.get("Contents", []))
        dt = time.monotonic() - t0
        notes.append(f"One ListObjectsV2 stream over the flat prefix (boto3, no Ray): {keys_seen:,} keys in "
                     f"{pages} pages, {dt:.1f} s = **{keys_seen / dt:,.0f} keys/s**, "
                     f"{1000 * dt / pages:.0f} ms per 1,000-key page.")
        r = ratios(rows, f"MinIO, {FOLDERS} folders")
        if r:
            notes.append(r)
        return rows, notes
    finally:
        exported.close()
        s3.stop()
        tempfile.tempdir = saved_tempdir


def parse_job_stdout(stdout: str) -> tuple[dict, int]:
    head, _, tail = stdout.rpartition("@@VMHWM_KIB")
    lines = head.splitlines()
    start = max(i for i, line in enumerate(lines) if line == "{")
    return json.loads("\n".join(lines[start:])), int(tail.split()[0])


def part_stats(out: Path) -> dict:
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    parts = sorted(out.glob("part-*.parquet"))
    rows = size = dets = 0
    for p in parts:
        size += p.stat().st_size
        table = pq.read_table(p, columns=["scores"])
        rows += table.num_rows
        dets += pc.sum(pc.list_value_length(table.column("scores"))).as_py() or 0
    return {"parts": len(parts), "bytes": size, "rows": rows, "detections": dets}


def synthetic_part_bytes(tmp: Path, paths: list[str], per_row: int) -> float:
    """Bytes/row of one shard's part written by the job's own writer, with ``per_row`` detections
    per image (random boxes, scores, labels): the random-weight model finds none, real data does."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.fs as pafs

    from inference.uris import Location
    from inference.writer import write_part

    rng = np.random.default_rng(per_row)
    names = ["person", "car", "chair", "bottle", "cup", "dog", "bicycle", "truck", "bird", "book"]
    rows = []
    for path in paths:
        xy = rng.uniform(0, 400, (per_row, 2))
        boxes = np.concatenate([xy, xy + rng.uniform(5, 200, (per_row, 2))], axis=1).astype(np.float32)
        labels = rng.integers(1, 11, per_row)
        rows.append({"path": path, "width": 500, "height": 375, "boxes": boxes.tolist(),
                     "scores": rng.uniform(0.5, 1, per_row).astype(np.float32).tolist(),
                     "labels": labels.tolist(), "label_names": [names[i - 1] for i in labels],
                     "model": MODEL, "error": None})
    out = Location(pafs.LocalFileSystem(), str(tmp / f"synthetic-{per_row}"), "")
    part = write_part(out, "0123456789abcdef", pa.Table.from_pylist(rows))
    return os.path.getsize(part) / len(paths)


def jobs_section(args, tmp: Path, env: dict) -> tuple[list[dict], list[str]]:
    rows, notes = [], []
    for n in args.job_n:
        images = job_images(n)
        out = tmp / f"job-{n}"
        argv = ["run", "--input", str(images), "--output", str(out), "--model", MODEL, "--weights", "none",
                "--batch-size", "8"]
        argv += ["--shard-size", str(args.job_shard_size)] if args.job_shard_size != 256 else []
        print(f"[scale] job N={n}", file=sys.stderr, flush=True)
        t0 = time.monotonic()
        proc = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--child", "job", "--",
                               *argv], cwd=REPO, env=env, capture_output=True, text=True,
                              timeout=args.timeout, check=False)
        wall = time.monotonic() - t0
        if proc.returncode != 0:
            raise RuntimeError(f"job N={n} failed ({proc.returncode}):\n{proc.stderr[-4000:]}")
        summary, hwm = parse_job_stdout(proc.stdout)
        row = {"n": n, "process_s": wall, "summary": summary, "driver_hwm_kib": hwm, "parts": part_stats(out)}
        print(f"[scale] {json.dumps({k: v for k, v in row.items() if k != 'summary'})}", file=sys.stderr)
        rows.append(row)
        if n == args.job_n[-1]:
            import pyarrow.parquet as pq

            paths = pq.read_table(sorted(out.glob("part-*.parquet")), columns=["path"])
            paths = sorted(paths.column("path").to_pylist())[:256]
        shutil.rmtree(out, ignore_errors=True)
    lo, hi = rows[0], rows[-1]
    if len(rows) > 1:
        notes.append(f"Driver peak ratio, N = {hi['n']:,} / N = {lo['n']:,}: "
                     f"**{hi['driver_hwm_kib'] / lo['driver_hwm_kib']:.2f}x** (goal <= 1.1x).")
    p = hi["parts"]
    notes.append(f"Output of the N = {hi['n']:,} job: {p['parts']} parts, {p['rows']:,} rows, "
                 f"{p['bytes']:,} bytes = **{p['bytes'] / p['rows']:.0f} bytes/row** "
                 f"({p['detections'] / p['rows']:.1f} detections/row with random weights, zstd), "
                 f"{p['bytes'] / p['parts'] / 1024:.0f} KiB/part.")
    synthetic = {k: synthetic_part_bytes(tmp, paths, k) for k in (1, 10, 100)}
    notes.append(f"Same writer, one part of that job's {len(paths)} first paths with synthetic detections: "
                 + ", ".join(f"{k} per image -> {v:.0f} bytes/row" for k, v in synthetic.items()) + ".")
    return rows, notes


def jobs_table(rows: list[dict]) -> str:
    out = ["| N | shard size | process wall s | job wall s | images/s | listing s | first result s | shards "
           "| parts | driver peak | first result <= 30 s |",
           "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|"]
    for r in rows:
        s = r["summary"]
        first = s.get("seconds_to_first_detection")
        out.append(f"| {r['n']:,} | {s.get('shard_size')} | {r['process_s']:.1f} | {s['wall_seconds']:.1f} | "
                   f"{s['images_per_second']:.2f} | {s.get('listing_seconds')} | {first} | {s['shards']} | "
                   f"{s['parts_written']} | {mib(r['driver_hwm_kib'])} | "
                   f"{'yes' if first is not None and first <= 30 else 'no'} |")
    return "\n".join(out)


def sources_digest() -> str:
    """A fingerprint of the job's code (the working tree may differ from any commit)."""
    import hashlib

    digest = hashlib.sha256()
    for path in sorted((REPO / "inference").glob("*.py")):
        digest.update(path.name.encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:12]


def fused_note(rows: list[dict]) -> str:
    apart = [f"{r['layout']} N = {r['n']:,}" for r in rows if not r["new"]["fused"]]
    if not apart:
        return "Read-worker peak: the probe ran fused into the read tasks in every row."
    return f"Read-worker peak NOT from the read tasks (probe not fused) in: {'; '.join(apart)}."


def machine() -> str:
    import pyarrow
    import ray

    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return (f"{platform.machine()}, {os.cpu_count()} CPUs, {mem:.0f} GiB; "
            f"Python {platform.python_version()}, Ray {ray.__version__}, pyarrow {pyarrow.__version__}; "
            f"load average at start {os.getloadavg()[0]:.2f}")


def ints(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x]


def main() -> None:
    if len(sys.argv) > 2 and sys.argv[1] == "--child" and sys.argv[2] == "job":
        child_job(sys.argv[sys.argv.index("--") + 1:])
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--local-n", type=ints, default=[10_000, 100_000, 1_000_000])
    p.add_argument("--s3-n", type=ints, default=[10_000, 100_000, 1_000_000])
    p.add_argument("--s3-budget", type=float, default=900.0, help="seconds of uploading allowed")
    p.add_argument("--put-threads", type=int, default=32)
    p.add_argument("--put-probe", type=int, default=3000)
    p.add_argument("--job-n", type=ints, default=[256, 2560])
    p.add_argument("--shard-size", type=int, default=256)
    p.add_argument("--job-shard-size", type=int, default=256, help="--shard-size of the whole jobs")
    p.add_argument("--sweep-shard-sizes", type=ints, default=[256, 64, 16],
                   help="shard sizes for the driver-memory-per-block sweep (on the largest local N)")
    p.add_argument("--timeout", type=float, default=1800.0)
    p.add_argument("--skip-local", action="store_true")
    p.add_argument("--skip-s3", action="store_true")
    p.add_argument("--skip-jobs", action="store_true")
    p.add_argument("--skip-sweep", action="store_true")
    p.add_argument("--json", help="also write the raw measurements here")
    p.add_argument("--child", choices=["new", "old"], help=argparse.SUPPRESS)
    p.add_argument("--src", help=argparse.SUPPRESS)
    p.add_argument("--ray-tmp", help=argparse.SUPPRESS)
    p.add_argument("--ray-default-blocks", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child == "new":
        print(json.dumps(child_new(args.src, args.shard_size, args.ray_tmp, args.ray_default_blocks)))
        return
    if args.child == "old":
        print(json.dumps(child_old(args.src)))
        return

    CACHE.mkdir(parents=True, exist_ok=True)
    free = shutil.disk_usage(CACHE)
    st = os.statvfs(CACHE)
    need = sum(args.local_n) if not (args.skip_local and args.skip_sweep) else 0
    if st.f_favail < need * 1.2 + 3 * max(args.s3_n) or free.free < 5 * 2**30:
        sys.exit(f"not enough room under {CACHE}: {st.f_favail:,} inodes, {free.free / 2**30:.0f} GiB free")
    started = datetime.datetime.now().astimezone()
    tmp = Path(tempfile.mkdtemp(prefix="dj-scale-"))
    ray_tmp = str(tmp / "ray")
    os.environ["RAY_TMPDIR"] = str(tmp)  # Ray's session files go to <tmp>/ray, deleted at the end
    env = dict(os.environ)
    digest = sources_digest()
    report = [f"Run {started:%Y-%m-%d %H:%M %Z}; {machine()}; inference/*.py sha256 {digest}.", ""]
    raw: dict = {}
    try:
        if not args.skip_local:
            rows, ratio = local_section(args, ray_tmp)
            raw["local"] = rows
            report += ["### Listing, local folders (empty files, warm dentry cache)", "", listing_table(rows),
                       "", ratio, "", fused_note(rows), ""]
        if not args.skip_sweep:
            report += ["### Driver memory per shard (block)", "", sweep_section(args, ray_tmp), ""]
        if not args.skip_s3:
            rows, notes = s3_section(args, tmp, ray_tmp)
            raw["s3"] = rows
            report += ["### Listing, MinIO on loopback", ""]
            report += ([listing_table(rows), ""] if rows else []) + [f"- {x}" for x in notes]
            report += [f"- {fused_note(rows)}", ""] if rows else [""]
        if not args.skip_jobs:
            rows, notes = jobs_section(args, tmp, env)
            raw["jobs"] = rows
            report += [f"### Whole jobs (`detectionjob run --model {MODEL} --weights none --batch-size 8`, "
                       f"{JOB_IMAGE_SIZE[0]}x{JOB_IMAGE_SIZE[1]} JPEGs)", "", jobs_table(rows), ""]
            report += [f"- {x}" for x in notes] + [""]
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    after = sources_digest()
    report.append("inference/*.py unchanged during the run." if after == digest else
                  f"inference/*.py CHANGED during the run ({digest} -> {after}): rows may mix versions.")
    minutes = (datetime.datetime.now().astimezone() - started).total_seconds() / 60
    report.append(f"Total benchmark time: {minutes:.0f} min; load average at the end "
                  f"{os.getloadavg()[0]:.2f}.")
    print("\n".join(report))
    if args.json:
        Path(args.json).write_text(json.dumps(raw, indent=2, default=str))


if __name__ == "__main__":
    main()
