"""Helpers for the batch job's tests (imported as `jobtest`; conftest.py puts this folder on sys.path)."""

# The smallest torchvision detector: what the job's tests run unless they test a model itself.
FAST_MODEL = "fasterrcnn_mobilenet_v3_large_320_fpn"
