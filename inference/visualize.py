"""Draw detected boxes and label names on the original images, as PNGs to eyeball a job."""

from __future__ import annotations

import io

import numpy as np
import pyarrow.parquet as pq
import torch
from PIL import Image
from torchvision.utils import draw_bounding_boxes

from inference.decode import decode_image, read_bytes
from inference.sampling import FIELDS, candidates, merge
from inference.uris import Location, resolve
from inference.writer import existing_parts

_PALETTE = ["#e6194b", "#3cb44b", "#ffe119", "#4363d8", "#f58231", "#911eb4", "#46f0f0",
            "#f032e6", "#bcf60c", "#fabebe", "#008080", "#e6beff", "#9a6324", "#800000"]


def pick_rows(results: Location, n: int) -> list[dict]:
    """``n`` detected images of an output folder (or one Parquet file), read one part at a time:
    the bottom-``n`` sample the job itself draws (:mod:`inference.sampling`)."""
    parts = existing_parts(results) if not results.path.endswith(".parquet") else [results.path]
    if not parts:
        raise FileNotFoundError(f"--results: no part-*.parquet files under {results.uri(results.path)!r}")
    rows: list[dict] = []
    for part in parts:
        table = pq.read_table(part, filesystem=results.fs, columns=[*FIELDS, "error"])
        rows = merge(rows, candidates(table, n), n)
    return rows


def annotate(row: dict, min_score: float) -> np.ndarray:
    """The original image of ``row`` with its boxes (score >= ``min_score``) drawn; uint8 HWC."""
    loc = resolve(row["path"], option="path")
    image = torch.from_numpy(decode_image(read_bytes(loc.fs, loc.path)).copy()).permute(2, 0, 1)
    keep = [i for i, s in enumerate(row["scores"] or []) if s >= min_score]
    if not keep:
        return image.permute(1, 2, 0).numpy()
    boxes = torch.tensor([row["boxes"][i] for i in keep], dtype=torch.float32)
    labels = [f"{row['label_names'][i]} {row['scores'][i]:.2f}" for i in keep]
    colors = [_PALETTE[row["labels"][i] % len(_PALETTE)] for i in keep]
    drawn = draw_bounding_boxes(image, boxes, labels=labels, colors=colors, width=2)
    return drawn.permute(1, 2, 0).numpy()


def write_samples(results: Location, out: Location, n: int, min_score: float = 0.0) -> list[str]:
    """Write up to ``n`` annotated PNGs of a job's results into ``out``; returns their URIs."""
    return draw_rows(pick_rows(results, n), out, min_score)


def draw_rows(rows: list[dict], out: Location, min_score: float = 0.0) -> list[str]:
    """One annotated PNG per result row in ``out``; returns their URIs."""
    out.fs.create_dir(out.path, recursive=True)
    written = []
    for index, row in enumerate(rows):
        stem = row["path"].rstrip("/").rsplit("/", 1)[-1].rsplit(".", 1)[0]
        buffer = io.BytesIO()
        Image.fromarray(annotate(row, min_score)).save(buffer, format="PNG")
        path = out.join(f"{index:03d}-{stem}.png")
        with out.fs.open_output_stream(path) as sink:
            sink.write(buffer.getvalue())
        written.append(out.uri(path))
    return written
