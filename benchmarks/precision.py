"""Reduced precision against fp32, measured: the same weights, the same images, per image.

For each of fp16 and bf16 (autocast, as ``detectionjob run --precision`` does) against fp32: the
boxes matched to fp32's (same label, IoU >= 0.5, best pairs first), their IoU and score differences,
and the detections gained or lost at the score threshold. Weights: seeded random init (``--weights
none``, scores near 1/91: compared at threshold 0, the model's top 100 per image), and with
``--train-seconds S`` also a model trained here for S seconds on synthetic scenes with known boxes
(no download needed), whose scores spread over [0, 1], so the threshold matters as it does in use.

    python benchmarks/precision.py --n 256 --train-seconds 90 --json out.json
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from torchvision.ops import box_iou

from inference.detector import AUTOCAST_DTYPES, Detector
from inference.models import ModelConfig
from inference.samples import draw_scene


def scenes(n: int, seed: int) -> tuple[list[np.ndarray], list[np.ndarray]]:
    rng = np.random.default_rng(seed)
    pairs = [draw_scene(rng) for _ in range(n)]
    return [np.asarray(img) for img, _ in pairs], [boxes for _, boxes in pairs]


def train(model_name: str, seconds: float, device: str, seed: int, batch: int = 8) -> tuple[str, int]:
    """A ``model_name`` with 2 classes (background, shape) trained for ``seconds`` on synthetic
    scenes; returns the saved state_dict's path and the steps taken."""
    from torchvision.models import get_model

    torch.manual_seed(seed)
    model = get_model(model_name, weights=None, weights_backbone=None, num_classes=2).to(device).train()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.02, momentum=0.9, weight_decay=1e-4)
    rng = np.random.default_rng(seed + 1)
    steps, start = 0, time.monotonic()
    while time.monotonic() - start < seconds:
        pairs = [draw_scene(rng) for _ in range(batch)]
        images = [torch.from_numpy(np.asarray(img)).permute(2, 0, 1).float().div(255).to(device)
                  for img, _ in pairs]
        targets = [{"boxes": torch.from_numpy(b).to(device), "labels": torch.ones(len(b), dtype=torch.int64,
                                                                                  device=device)}
                   for _, b in pairs]
        lr = 0.02 * min(1.0, (steps + 1) / 100)  # warm-up: from scratch, a full step diverges
        for group in optimizer.param_groups:
            group["lr"] = lr
        with torch.autocast(device.split(":")[0], dtype=torch.bfloat16, enabled=device.startswith("cuda")):
            losses = model(images, targets)
        loss = sum(losses.values())
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 10.0)
        optimizer.step()
        steps += 1
    path = str(Path(tempfile.mkdtemp()) / "trained.pth")
    torch.save(model.state_dict(), path)
    return path, steps


def compare(ref: dict, other: dict, iou_min: float = 0.5) -> dict:
    """Greedy one-to-one matching of ``other``'s boxes to ``ref``'s (same label, IoU >= iou_min)."""
    a, b = ref["boxes"].float().cpu(), other["boxes"].float().cpu()
    if len(a) == 0 or len(b) == 0:
        return {"ref": len(a), "other": len(b), "matched": 0, "ious": [], "score_diffs": []}
    iou = box_iou(a, b)
    iou[ref["labels"].cpu()[:, None] != other["labels"].cpu()[None, :]] = 0
    pairs = []
    flat = iou.flatten()
    order = torch.argsort(flat, descending=True)
    used_a, used_b = set(), set()
    for k in order.tolist():
        if flat[k] < iou_min:
            break
        i, j = divmod(k, iou.shape[1])
        if i in used_a or j in used_b:
            continue
        used_a.add(i)
        used_b.add(j)
        pairs.append((i, j, float(flat[k])))
    sa, sb = ref["scores"].float().cpu(), other["scores"].float().cpu()
    return {"ref": len(a), "other": len(b), "matched": len(pairs), "ious": [p[2] for p in pairs],
            "score_diffs": [float(sb[j] - sa[i]) for i, j, _ in pairs]}


def run(spec: ModelConfig, images: list[np.ndarray], device: str, precision: str, batch: int) -> list[dict]:
    detector = Detector(spec, device=device, precision=precision)
    outputs = []
    for i in range(0, len(images), batch):
        outputs += [{k: v.float().cpu() if k != "labels" else v.cpu() for k, v in out.items()}
                    for out in detector.detect(images[i:i + batch])]
    return outputs


def table(name: str, spec: ModelConfig, images: list[np.ndarray], device: str, batch: int,
          thresholds: list[float]) -> list[dict]:
    base = run(spec, images, device, "fp32", batch)
    rows = []
    for precision in AUTOCAST_DTYPES:
        other = run(spec, images, device, precision, batch)
        for t in thresholds:
            cut = [[{k: v[o["scores"] >= t] for k, v in o.items()} for o in outs] for outs in (base, other)]
            per = [compare(r, o) for r, o in zip(*cut, strict=True)]
            ious = np.concatenate([p["ious"] for p in per]) if per else np.zeros(0)
            diffs = np.abs(np.concatenate([p["score_diffs"] for p in per])) if per else np.zeros(0)
            ref, got, matched = (sum(p[k] for p in per) for k in ("ref", "other", "matched"))
            rows.append({
                "weights": name, "precision": precision, "threshold": t, "images": len(images),
                "fp32_detections": ref, "detections": got, "matched": matched,
                "lost": ref - matched, "gained": got - matched,
                "images_identical": sum(p["matched"] == p["ref"] == p["other"] for p in per),
                "iou_mean": float(ious.mean()) if len(ious) else None,
                "iou_p01": float(np.quantile(ious, 0.01)) if len(ious) else None,
                "score_diff_mean": float(diffs.mean()) if len(diffs) else None,
                "score_diff_max": float(diffs.max()) if len(diffs) else None,
            })
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=256)
    p.add_argument("--model", default="fasterrcnn_resnet50_fpn_v2")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--train-seconds", type=float, default=0.0)
    p.add_argument("--json")
    a = p.parse_args()
    images, _ = scenes(a.n, seed=12345)  # not the training scenes
    rows = table("seeded random init (--weights none)", ModelConfig(a.model, "none", score_threshold=0.0),
                 images, a.device, a.batch_size, [0.0])
    trained = {}
    if a.train_seconds > 0:
        path, steps = train(a.model, a.train_seconds, a.device, seed=7)
        spec = ModelConfig(a.model, path, score_threshold=0.05)
        trained = {"steps": steps, "seconds": a.train_seconds}
        rows += table(f"trained here {steps} steps", spec, images, a.device, a.batch_size, [0.05, 0.5])
    print("| weights | precision | score ≥ | fp32 detections | matched | lost | gained | images identical "
          "| IoU mean | IoU 1st pct | abs score diff mean | max |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        def f(v, fmt):
            return "—" if v is None else format(v, fmt)
        print(f"| {r['weights']} | {r['precision']} | {r['threshold']:g} | {r['fp32_detections']} | "
              f"{r['matched']} | {r['lost']} | {r['gained']} | {r['images_identical']}/{r['images']} | "
              f"{f(r['iou_mean'], '.4f')} | {f(r['iou_p01'], '.4f')} | {f(r['score_diff_mean'], '.2e')} | "
              f"{f(r['score_diff_max'], '.2e')} |")
    if a.json:
        Path(a.json).write_text(json.dumps({"rows": rows, "trained": trained, "model": a.model,
                                            "device": torch.cuda.get_device_name(0) if a.device == "cuda"
                                            else "cpu"}, indent=1))


if __name__ == "__main__":
    main()
