"""The detector's GPU paths for real (tests/job/test_gpu_paths.py runs them on a CPU):

1. host-to-device: one ``pin_memory()`` per image (what the detector does) against packing the batch
   into one reusable pinned buffer (same tensors; ms per batch);
2. ``--batch-size auto``: what it chooses, and how long finding it takes;
3. a real CUDA out-of-memory: the process limited to little more than a small batch needs, a large
   batch is halved until it fits; its outputs against the unlimited run's, boxes matched as
   benchmarks/precision.py matches them (seeded random weights score their top 100 boxes nearly
   alike, so another batch size may rank them otherwise);
4. layout and streams: the detector's channels_last weights against contiguous ones, and two
   threads on their own streams against one, outputs compared (yardstick: half the batch).

    python benchmarks/gpu_checks.py --model fasterrcnn_resnet50_fpn_v2 --json out.json
    python benchmarks/gpu_checks.py --checks layout
"""

from __future__ import annotations

import argparse
import json
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch
from precision import compare

from inference.detector import Detector
from inference.models import ModelConfig


def voc_images(n: int, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, (375, 500, 3), dtype=np.uint8) for _ in range(n)]


def per_image_pinned(images: list[np.ndarray], device: torch.device) -> list[torch.Tensor]:
    """What the detector does: pin a copy of each image (torch caches pinned blocks), copy it."""
    return [torch.from_numpy(im).pin_memory().to(device, non_blocking=True).permute(2, 0, 1).float().div_(255)
            for im in images]


class Staging:
    """The alternative: the batch packed into one reusable pinned buffer, one copy, cut on the GPU."""

    def __init__(self, device: torch.device) -> None:
        self.device, self.buffer, self.copied = device, None, None

    def __call__(self, images: list[np.ndarray]) -> list[torch.Tensor]:
        sizes = [im.size for im in images]
        total = sum(sizes)
        if self.copied is not None:
            self.copied.synchronize()  # the last copy out of the buffer has ended
        if self.buffer is None or self.buffer.numel() < total:
            self.buffer = torch.empty(total, dtype=torch.uint8, pin_memory=True)
        flat, ends = self.buffer[:total].numpy(), np.cumsum(sizes)
        for im, end, n in zip(images, ends, sizes, strict=True):
            flat[end - n:end] = im.reshape(-1)
        on_device = self.buffer[:total].to(self.device, non_blocking=True)
        self.copied = torch.cuda.Event()
        self.copied.record()
        return [on_device[end - n:end].view(im.shape).permute(2, 0, 1).float().div_(255)
                for im, end, n in zip(images, ends, sizes, strict=True)]


def staging(batch: int, rounds: int) -> dict:
    device = torch.device("cuda")
    images = voc_images(batch)
    stage = Staging(device)
    pairs = zip(stage(images), per_image_pinned(images, device), strict=True)
    same = all(torch.equal(a, b) for a, b in pairs)
    out = {"batch": batch, "identical": same}
    for name, fn in (("per_image_pin_ms", lambda: per_image_pinned(images, device)),
                     ("staging_ms", lambda: stage(images))):
        fn()
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        for _ in range(rounds):
            fn()
        torch.cuda.synchronize()
        out[name] = (time.perf_counter() - t0) / rounds * 1000
    return out


def auto_batch(spec: ModelConfig, precision: str) -> dict:
    detector = Detector(spec, device="cuda", precision=precision)
    t0 = time.perf_counter()
    chosen = detector.largest_batch()
    seconds = time.perf_counter() - t0
    result = {"precision": precision, "chosen": chosen, "seconds": seconds}
    del detector
    torch.cuda.empty_cache()
    return result


def real_oom(spec: ModelConfig, precision: str, small: int, large: int) -> dict:
    images = voc_images(large, seed=1)
    detector = Detector(spec, device="cuda", precision=precision)
    expected = detector.detect(images)  # unlimited: one pass of `large`
    torch.cuda.synchronize()
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats()
    detector.detect(images[:small])
    peak_small = torch.cuda.max_memory_allocated()
    total = torch.cuda.get_device_properties(0).total_memory
    fraction = min(1.0, 1.5 * peak_small / total)
    torch.cuda.empty_cache()
    torch.cuda.set_per_process_memory_fraction(fraction)
    try:
        got = detector.detect(images)
    finally:
        torch.cuda.set_per_process_memory_fraction(1.0)
    detected = [(e, o) for e, o in zip(expected, got, strict=True) if o is not None]
    match = summarize([e for e, _ in detected], [o for _, o in detected])
    return {"precision": precision, "images": large, "limit_gib": fraction * total / 2**30,
            "peak_small_gib": peak_small / 2**30, "small": small, "batch_limit_after": detector.batch_limit,
            "outputs": len(detected), "boxes_unlimited": match["boxes"], "boxes_halved": match["other_boxes"],
            "matched": match["matched"], "iou_mean": match["iou_mean"]}


def summarize(expected: list[dict], got: list[dict]) -> dict:
    per = [compare(e, o) for e, o in zip(expected, got, strict=True)]
    ious = [i for p in per for i in p["ious"]]
    diffs = [abs(d) for p in per for d in p["score_diffs"]]
    return {"boxes": sum(p["ref"] for p in per), "other_boxes": sum(p["other"] for p in per),
            "matched": sum(p["matched"] for p in per), "iou_mean": sum(ious) / max(len(ious), 1),
            "abs_score_diff_max": max(diffs, default=0.0),
            "identical": all(torch.equal(e[k], o[k]) for e, o in zip(expected, got, strict=True)
                             for k in ("boxes", "scores", "labels"))}


def layout(spec: ModelConfig, n: int = 64, batch: int = 16) -> dict:
    """The detector's channels_last weights and its two streams against one stream and the default
    (contiguous) layout, same images, same weights; and, as the yardstick of what merely other
    kernels change, the contiguous model at half the batch."""
    images = voc_images(n, seed=2)
    detector = Detector(spec, device="cuda")

    def detect_all(step: int, threads: int = 1) -> list[dict]:
        chunks = [images[i:i + step] for i in range(0, n, step)]
        with ThreadPoolExecutor(threads) as pool:  # each thread on its own stream (Detector.stream)
            outputs = [o for out in pool.map(lambda c: detector.detect(c), chunks) for o in out]
        torch.cuda.synchronize()
        return [{k: v.cpu() for k, v in o.items()} for o in outputs]

    nhwc = detect_all(batch)
    nhwc_streams = detect_all(batch, threads=2)
    detector.model.to(memory_format=torch.contiguous_format)
    nchw = detect_all(batch)
    nchw_half = detect_all(batch // 2)
    return {"images": n, "batch": batch,
            "channels_last_vs_contiguous": summarize(nchw, nhwc),
            "contiguous_half_batch_vs_contiguous": summarize(nchw, nchw_half),
            "two_streams_vs_one": summarize(nhwc, nhwc_streams)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="fasterrcnn_resnet50_fpn_v2")
    p.add_argument("--checks", default="staging,auto,oom,layout")
    p.add_argument("--json")
    a = p.parse_args()
    assert torch.cuda.is_available(), "needs a CUDA GPU"
    spec = ModelConfig(a.model, "none", score_threshold=0.0)
    checks = {"staging": lambda: [staging(b, 50) for b in (4, 16, 64)],
              "auto": lambda: [auto_batch(spec, p) for p in ("fp32", "bf16")],
              "oom": lambda: real_oom(spec, "fp32", small=2, large=32),
              "layout": lambda: layout(spec)}
    results = {"device": torch.cuda.get_device_name(0)}
    for name in a.checks.split(","):
        results[name] = checks[name]()
        print(json.dumps({name: results[name]}), flush=True)
    if a.json:
        Path(a.json).write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
