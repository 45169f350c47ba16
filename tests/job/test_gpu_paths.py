"""The detector's GPU code paths, run where CI runs (a CPU): the out-of-memory halving (the exception
injected) and ``--batch-size auto``. benchmarks/gpu_checks.py runs them on a GPU for real."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest
import torch
from jobtest import FAST_MODEL

from inference.cli import build_parser, run_config
from inference.detector import Detector, OutOfMemory, largest_fitting
from inference.models import ModelConfig
from inference.options import AUTO_BATCH_CPU


def _images(shapes: list[tuple[int, int]], seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for h, w in shapes]


class OutOfMemoryAbove:
    """The model, but a pass of more than ``most`` images, or of an image wider than ``widest``,
    raises CUDA's out-of-memory error."""

    def __init__(self, model: torch.nn.Module, most: int, widest: int = 10_000) -> None:
        self.model, self.most, self.widest, self.passes = model, most, widest, []

    def __call__(self, tensors: list[torch.Tensor]):
        self.passes.append(len(tensors))
        if len(tensors) > self.most or max(t.shape[-1] for t in tensors) > self.widest:
            raise OutOfMemory("CUDA out of memory. Tried to allocate 2.00 GiB (injected)")
        return self.model(tensors)


@pytest.fixture(scope="module")
def spec() -> ModelConfig:
    return ModelConfig(FAST_MODEL, "none", score_threshold=0.0)


def test_an_out_of_memory_batch_is_halved_and_later_batches_cut_to_the_size_that_fit(spec):
    images = _images([(75, 100)] * 5)
    expected = Detector(spec).detect(images)
    detector = Detector(spec)
    detector.model = OutOfMemoryAbove(detector.model, most=2)
    got = detector.detect(images)
    assert detector.model.passes == [5, 3, 2, 1, 2]  # 5 fails, 3 fails, then 2 + 1 and 2 fit
    assert detector.batch_limit == 2
    assert len(got) == len(expected)
    for a, b in zip(got, expected, strict=True):
        assert torch.equal(a["labels"], b["labels"]) and torch.allclose(a["boxes"], b["boxes"])
    detector.model.passes.clear()
    assert len(detector.detect(images[:4])) == 4
    assert detector.model.passes == [2, 2]  # no second out-of-memory


def test_a_limit_that_drops_within_a_call_still_detects_every_image(spec):
    images = _images([(75, 100)] * 8)
    detector = Detector(spec)
    detector.batch_limit = 4  # a limit from an earlier call; this call's first cut runs out again
    detector.model = OutOfMemoryAbove(detector.model, most=2)
    got = detector.detect(images)
    assert len(got) == 8 and all(out is not None for out in got)
    assert detector.model.passes == [4, 2, 2, 2, 2] and detector.batch_limit == 2


def test_an_image_that_does_not_fit_even_alone_is_an_error_row_and_the_rest_are_detected(spec):
    detector = Detector(spec)
    detector.model = OutOfMemoryAbove(detector.model, most=4, widest=200)
    images = _images([(75, 100), (75, 400), (1, 1), (75, 100)])
    column = np.empty(4, dtype=object)
    column[:] = images
    batch = {"path": np.asarray(["a", "huge", "broken", "d"], dtype=object), "image": column,
             "width": np.asarray([100, 400, 0, 100]), "height": np.asarray([75, 75, 0, 75]),
             "error": np.asarray([None, None, "DecodeError: broken", None], dtype=object)}
    table: pa.Table = detector(batch)
    assert table.column("path").to_pylist() == ["a", "huge", "broken", "d"]
    assert table.column("error").to_pylist() == [
        None, "OutOfMemory: the image does not fit the device even alone", "DecodeError: broken", None]
    boxes = table.column("boxes").to_pylist()
    assert boxes[1] is None and boxes[2] is None and len(boxes[0]) > 0 and len(boxes[3]) > 0
    assert detector.model.passes == [3, 2, 1, 1, 1]  # a, huge, d; then a + huge; a; huge; d
    assert detector.batch_limit is None  # one image too large is no reason to detect fewer at once


def test_batch_size_auto_is_the_cpu_default_on_a_cpu(spec):
    config = run_config(build_parser().parse_args(["run", "--batch-size", "auto"]))
    assert config.batch_size is None
    assert Detector(spec).largest_batch() == AUTO_BATCH_CPU


@pytest.mark.parametrize(("fits_up_to", "cap", "passes"), [
    (1000, 64, [64]), (20, 64, [64, 32, 16]), (0, 64, [64, 32, 16, 8, 4, 2]), (5, 48, [32, 16, 8, 4])])
def test_batch_size_auto_searches_from_the_top(fits_up_to, cap, passes):
    """``--batch-size auto`` on a GPU: the largest power of two <= cap whose pass fits; tried from
    the top, so a large GPU answers in one pass. Memory grows with the batch: n images take n units,
    more than ``fits_up_to`` run out of memory (None), and the bound is 0.8 of the device."""
    tried = []

    def peak(n: int) -> int | None:
        tried.append(n)
        return None if n > fits_up_to else n

    chosen = largest_fitting(peak, cap, bound=0.8 * fits_up_to)
    expected = max([n for n in (1, 2, 4, 8, 16, 32, 64) if n <= cap and n <= 0.8 * fits_up_to], default=1)
    assert chosen == expected and tried == passes
