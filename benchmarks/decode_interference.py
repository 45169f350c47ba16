"""How much decoding images on other threads slows a thread that calls many small torch ops (what a
GPU detector's launching thread does), Pillow (the job's decoder) against
``torchvision.io.decode_jpeg``; and whether the two decode to the same pixels.

    python benchmarks/decode_interference.py --n 64 --threads 1,2
"""

from __future__ import annotations

import argparse
import json
import threading
import time
from collections.abc import Callable

import numpy as np
import torch
from throughput import images_dir
from torchvision.io import ImageReadMode, decode_jpeg

from inference.decode import decode_image


def torchvision_decode(data: bytes) -> np.ndarray:
    return decode_jpeg(torch.frombuffer(bytearray(data), dtype=torch.uint8),
                       mode=ImageReadMode.RGB).permute(1, 2, 0).numpy()


def small_ops(seconds: float) -> float:
    """Small in-place torch ops per second on this thread (each releases and retakes the GIL)."""
    x, n, t0 = torch.zeros(16), 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        for _ in range(200):
            x.add_(1)
        n += 200
    return n / seconds


def beside(decode: Callable[[bytes], np.ndarray], files: list[bytes], threads: int, seconds: float) -> dict:
    stop, decoded = threading.Event(), [0] * threads

    def work(k: int) -> None:
        while not stop.is_set():
            for data in files:
                if stop.is_set():
                    return
                decode(data)
                decoded[k] += 1

    pool = [threading.Thread(target=work, args=(k,)) for k in range(threads)]
    for th in pool:
        th.start()
    rate = small_ops(seconds)
    stop.set()
    for th in pool:
        th.join()
    return {"ops_per_s": rate, "images_per_s": sum(decoded) / seconds}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=64)
    p.add_argument("--threads", default="1,2")
    p.add_argument("--seconds", type=float, default=3.0)
    a = p.parse_args()
    torch.set_num_threads(1)
    files = [f.read_bytes() for f in sorted(images_dir(a.n).glob("*.jpg"))]
    same = sum(np.array_equal(decode_image(d), torchvision_decode(d)) for d in files)
    alone = small_ops(a.seconds)
    rows = []
    for threads in (int(t) for t in a.threads.split(",")):
        for name, decode in (("Pillow", decode_image), ("torchvision.io", torchvision_decode)):
            r = beside(decode, files, threads, a.seconds)
            slowdown = 1 - r["ops_per_s"] / alone
            rows.append({"decoder": name, "decode threads": threads, "ops vs alone": r["ops_per_s"] / alone,
                         "images/s": r["images_per_s"],
                         "ops lost per 1000 images": slowdown * alone / r["images_per_s"] * 1000})
            print(json.dumps(rows[-1]), flush=True)
    print(json.dumps({"pixel_equal": f"{same}/{len(files)}", "ops_alone_per_s": alone}))


if __name__ == "__main__":
    main()
