"""(1) The floor: a bare PyTorch loop over pre-decoded images, timing the model only."""

from __future__ import annotations

import argparse
import glob
import json
import os
import time
from pathlib import Path

import torch

from inference.allocator import keep_freed_memory
from inference.decode import decode_image
from inference.detector import AUTOCAST_DTYPES
from inference.models import ModelConfig, build_model
from inference.options import PRECISIONS


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--images", required=True)
    p.add_argument("--model", required=True)
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--threads", type=int, default=os.cpu_count())
    p.add_argument("--precision", default="fp32", choices=PRECISIONS,
                   help="autocast dtype, as `detectionjob run --precision` uses it")
    p.add_argument("--keep-freed-memory", action="store_true",
                   help="the malloc thresholds our detector sets (inference.allocator)")
    a = p.parse_args()
    if a.keep_freed_memory:
        assert keep_freed_memory()
    torch.set_num_threads(a.threads)
    model, _ = build_model(ModelConfig(a.model, "none", score_threshold=0.5))
    model = model.to(a.device)
    images = [torch.from_numpy(decode_image(Path(f).read_bytes()).copy()).permute(2, 0, 1)
              for f in sorted(glob.glob(os.path.join(a.images, "*.jpg")))]
    dtype = AUTOCAST_DTYPES.get(a.precision)
    with torch.inference_mode(), torch.autocast(a.device, dtype=dtype, enabled=dtype is not None):
        model([im.to(a.device).float() / 255 for im in images[:a.batch_size]])  # warm-up, not timed
        if a.device == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        start = time.perf_counter()
        for i in range(0, len(images), a.batch_size):
            batch = [im.to(a.device).float() / 255 for im in images[i:i + a.batch_size]]
            model(batch)
        if a.device == "cuda":
            torch.cuda.synchronize()
        seconds = time.perf_counter() - start
    peak = torch.cuda.max_memory_allocated() if a.device == "cuda" else None
    print(json.dumps({"images": len(images), "seconds": seconds, "gpu_peak_bytes": peak}))


if __name__ == "__main__":
    main()
