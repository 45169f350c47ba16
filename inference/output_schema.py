"""The Parquet output schema: one row per input file, no pixels."""

from __future__ import annotations

import pyarrow as pa

OUTPUT_SCHEMA = pa.schema(
    [
        pa.field("path", pa.string(), nullable=False),
        # Size and boxes are of the image as viewers show it: its EXIF orientation applied.
        pa.field("width", pa.int32()),
        pa.field("height", pa.int32()),
        pa.field("boxes", pa.list_(pa.list_(pa.float32()))),  # [x1, y1, x2, y2] in upright pixels
        pa.field("scores", pa.list_(pa.float32())),
        pa.field("labels", pa.list_(pa.int32())),
        pa.field("label_names", pa.list_(pa.string())),
        pa.field("model", pa.string()),
        pa.field("error", pa.string()),  # null when the image was detected
    ]
)
