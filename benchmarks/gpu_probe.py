"""Where a GPU detector's time goes (issue 12), in one process, without Ray:

* start-up: importing torch, initialising CUDA, building the model on the CPU and moving it, building
  it on the device, the first batch;
* images/s and GPU busy (``nvidia-smi``) of the bare loop (pre-decoded images, model time only) and
  of variants: the same with the next batch read and decoded alongside (what a detector does; with
  Pillow as the job does, and with ``torchvision.io.decode_jpeg``), our
  :class:`~inference.detector.Detector` called as the shard stage calls it (read ahead, Arrow rows
  out), and each of those from 2 threads at once on their own CUDA streams (``--streams 2``), and
  the bare loop with ``channels_last`` weights.

    python benchmarks/gpu_probe.py --n 512 --model fasterrcnn_resnet50_fpn_v2 --precision fp32,bf16
"""

from __future__ import annotations

import time

T0 = time.perf_counter()

import argparse  # noqa: E402
import json  # noqa: E402
import threading  # noqa: E402
from collections.abc import Callable  # noqa: E402
from concurrent.futures import ThreadPoolExecutor  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import pyarrow.fs as pafs  # noqa: E402
import torch  # noqa: E402
import torchvision  # noqa: E402, F401

T_IMPORT = time.perf_counter() - T0

from decode_interference import torchvision_decode  # noqa: E402
from throughput import GpuSampler, images_dir  # noqa: E402

from inference.decode import decode_image, load_uris  # noqa: E402
from inference.detector import AUTOCAST_DTYPES, Detector  # noqa: E402
from inference.models import ModelConfig, build_model  # noqa: E402

LOCAL = pafs.LocalFileSystem()


def locate(uri: str) -> tuple[pafs.FileSystem, str]:
    return LOCAL, uri


def startup(spec: ModelConfig, batch: list[np.ndarray]) -> dict:
    """Seconds of each start-up step, in the order a detector takes them."""
    t: dict[str, float] = {"import torch, torchvision": T_IMPORT}
    s = time.perf_counter()
    torch.cuda.init()
    torch.empty(1, device="cuda")
    t["CUDA context"] = time.perf_counter() - s
    s = time.perf_counter()
    model, _ = build_model(spec)
    t["build model on the CPU (random init)"] = time.perf_counter() - s
    s = time.perf_counter()
    model = model.to("cuda")
    torch.cuda.synchronize()
    t["model to the GPU"] = time.perf_counter() - s
    s = time.perf_counter()
    with torch.inference_mode():
        model([torch.from_numpy(a).cuda().permute(2, 0, 1).float() / 255 for a in batch])
    torch.cuda.synchronize()
    t[f"first batch of {len(batch)}"] = time.perf_counter() - s
    s = time.perf_counter()
    with torch.inference_mode():
        model([torch.from_numpy(a).cuda().permute(2, 0, 1).float() / 255 for a in batch])
    torch.cuda.synchronize()
    t[f"second batch of {len(batch)}"] = time.perf_counter() - s
    s = time.perf_counter()
    with torch.device("cuda"):
        build_model(spec)
    torch.cuda.synchronize()
    t["build model on the GPU (random init there)"] = time.perf_counter() - s
    return {k: round(v, 3) for k, v in t.items()}


def in_threads(work: Callable[[list[int]], None], batches: int, threads: int) -> None:
    """``work(batch indices)`` from ``threads`` threads, batch i on thread i % threads."""
    if threads == 1:
        work(list(range(batches)))
        return
    errors: list[BaseException] = []

    def run(k: int) -> None:
        try:
            work(list(range(k, batches, threads)))
        except BaseException as exc:  # noqa: BLE001 - re-raised below
            errors.append(exc)

    pool = [threading.Thread(target=run, args=(k,)) for k in range(threads)]
    for th in pool:
        th.start()
    for th in pool:
        th.join()
    if errors:
        raise errors[0]


_TV_POOL = ThreadPoolExecutor(8, thread_name_prefix="tv-decode")  # as many as inference.decode's


def load_torchvision(paths: list[str], locate=None) -> list[np.ndarray]:
    """The alternative decoder (:func:`decode_interference.torchvision_decode`: libjpeg-turbo from
    C++, the GIL released), on 8 threads; pixel-equal to Pillow on these JPEGs (checked on the CPU)."""
    return list(_TV_POOL.map(lambda p: torchvision_decode(Path(p).read_bytes()), paths))


def bare(model, arrays, bs: int, dtype, threads: int = 1, read_ahead: list[str] | None = None,
         loader: Callable = load_uris) -> None:
    """The bare loop (pre-decoded images); ``read_ahead``: the files of the next batch are read and
    decoded alongside by ``loader``, as a detector does (the result is not used)."""
    ahead = ThreadPoolExecutor(threads)

    def work(indices: list[int]) -> None:
        stream = torch.cuda.Stream() if threads > 1 else torch.cuda.current_stream()
        with torch.cuda.stream(stream), torch.inference_mode(), \
                torch.autocast("cuda", dtype=dtype, enabled=dtype is not None):
            for i in indices:
                pending = ahead.submit(loader, read_ahead[(i + 1) * bs:(i + 2) * bs], locate) \
                    if read_ahead else None
                model([torch.from_numpy(a).pin_memory().to("cuda", non_blocking=True).permute(2, 0, 1)
                       .float().div_(255) for a in arrays[i * bs:(i + 1) * bs]])
                if pending is not None:
                    pending.result()
        stream.synchronize()

    in_threads(work, (len(arrays) + bs - 1) // bs, threads)
    torch.cuda.synchronize()
    ahead.shutdown()


def detector_loop(detector: Detector, files: list[str], bs: int, threads: int = 1) -> None:
    """:class:`Detector` as the shard stage calls it: the next batch read and decoded ahead, rows out."""
    ahead = ThreadPoolExecutor(threads)

    def work(indices: list[int]) -> None:
        pending = ahead.submit(load_uris, files[indices[0] * bs:(indices[0] + 1) * bs], locate)
        for n in range(len(indices)):
            loaded = pending.result()
            if n + 1 < len(indices):
                j = indices[n + 1]
                pending = ahead.submit(load_uris, files[j * bs:(j + 1) * bs], locate)
            detector(loaded)

    in_threads(work, (len(files) + bs - 1) // bs, threads)
    torch.cuda.synchronize()
    ahead.shutdown()


def timed(label: str, fn: Callable[[], None], n: int) -> dict:
    """One row; a variant that fails is a row that says so (the others still run)."""
    with GpuSampler() as gpu:
        s = time.perf_counter()
        try:
            fn()
        except Exception as exc:  # noqa: BLE001 - reported in the row
            row = {"variant": label, "error": f"{type(exc).__name__}: {exc}"[:500]}
            print(json.dumps(row), flush=True)
            return row
        seconds = time.perf_counter() - s
    row = {"variant": label, "images": n, "seconds": round(seconds, 3), "rate": round(n / seconds, 1),
           **gpu.stats()}
    print(json.dumps(row), flush=True)
    return row


def precision_rows(spec: ModelConfig, precision: str, files: list[str], arrays: list[np.ndarray],
                   bs: int, k: int) -> list[dict]:
    dtype = AUTOCAST_DTYPES.get(precision)
    detector = Detector(spec, device="cuda", precision=precision)
    model, n = detector.model, len(arrays)
    bare(model, arrays[:2 * bs], bs, dtype)  # warm-up
    variants: list[tuple[str, Callable[[], None]]] = [
        ("bare loop", lambda: bare(model, arrays, bs, dtype)),
        (f"bare loop, {k} threads (streams)", lambda: bare(model, arrays, bs, dtype, k)),
        ("bare loop + next batch read and decoded alongside",
         lambda: bare(model, arrays, bs, dtype, read_ahead=files)),
        ("bare loop + next batch read and decoded by torchvision.io alongside",
         lambda: bare(model, arrays, bs, dtype, read_ahead=files, loader=load_torchvision)),
        ("Detector as the shard stage calls it", lambda: detector_loop(detector, files, bs)),
        (f"Detector, {k} threads (streams)", lambda: detector_loop(detector, files, bs, k)),
        ("bare loop, 3 threads (streams)", lambda: bare(model, arrays, bs, dtype, 3)),
    ]
    rows = [timed(f"{precision} {label}", fn, n) for label, fn in variants]
    model.to(memory_format=torch.channels_last)
    bare(model, arrays[:2 * bs], bs, dtype)
    rows.append(timed(f"{precision} bare loop, channels_last", lambda: bare(model, arrays, bs, dtype), n))
    rows.append(timed(f"{precision} bare loop, channels_last, {k} threads",
                      lambda: bare(model, arrays, bs, dtype, k), n))
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=512)
    p.add_argument("--model", default="fasterrcnn_resnet50_fpn_v2")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--precision", default="fp32,bf16")
    p.add_argument("--threads", type=int, default=2, help="threads (streams) of the concurrent rows")
    p.add_argument("--json")
    a = p.parse_args()
    files = sorted(str(f) for f in images_dir(a.n).glob("*.jpg"))
    arrays = [decode_image(Path(f).read_bytes()) for f in files]
    spec = ModelConfig(a.model, "none", score_threshold=0.5)
    try:
        steps = startup(spec, arrays[:a.batch_size])
    except Exception as exc:  # noqa: BLE001 - reported, the rows still run
        steps = {"error": f"{type(exc).__name__}: {exc}"[:500]}
    result = {"device": torch.cuda.get_device_name(0), "torch": torch.__version__, "n": a.n,
              "batch_size": a.batch_size, "startup": steps, "rows": []}
    print(json.dumps(result["startup"]), flush=True)
    for precision in a.precision.split(","):
        result["rows"] += precision_rows(spec, precision, files, arrays, a.batch_size, a.threads)
        torch.cuda.empty_cache()
        if a.json:
            Path(a.json).write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
