"""Batch object detection as a streaming Ray Data job.

``read images -> decode on CPU (uint8) -> detector actor pool (GPU when present) -> Parquet``.
The command line lives in :mod:`inference.cli`; the pipeline in :mod:`inference.pipeline`.
"""
