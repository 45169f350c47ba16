"""(2) The reference pipeline, as Ray's object-detection batch-inference example documents it.

``read_images -> map(per-row ToTensor to float32) -> map_batches(actor pool, batch 4) ->
write_parquet``, with the original image carried into the output. Only the model name and the
weights (seeded random, as for the other two) are parameters.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import ray
import torch
from torchvision import transforms

from inference.models import ModelConfig, build_model


def preprocess_image(row: dict) -> dict:
    preprocessor = transforms.Compose([transforms.ToTensor()])
    return {"original_image": row["image"], "transformed_image": preprocessor(row["image"]).numpy()}


class ObjectDetectionModel:
    def __init__(self, model_name: str) -> None:
        self.model, _ = build_model(ModelConfig(model_name, "none", score_threshold=0.5))
        if torch.cuda.is_available():
            self.model = self.model.cuda()

    def __call__(self, input_batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        inputs = [torch.from_numpy(image) for image in input_batch["transformed_image"]]
        if torch.cuda.is_available():
            inputs = [i.cuda() for i in inputs]
        with torch.inference_mode():
            outputs = self.model(inputs)
        return {
            "image": input_batch["original_image"],
            "labels": [o["labels"].detach().cpu().numpy() for o in outputs],
            "boxes": [o["boxes"].detach().cpu().numpy() for o in outputs],
        }


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--images", required=True)
    p.add_argument("--output", required=True)
    p.add_argument("--model", required=True)
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--concurrency", type=int, default=1)
    a = p.parse_args()
    start = time.perf_counter()
    ray.init(include_dashboard=False)
    gpus = 1 if ray.cluster_resources().get("GPU", 0) else 0
    ds = ray.data.read_images(a.images, mode="RGB")
    ds = ds.map(preprocess_image)
    ds = ds.map_batches(ObjectDetectionModel, fn_constructor_args=(a.model,), concurrency=a.concurrency,
                        batch_size=a.batch_size, num_gpus=gpus)
    ds.write_parquet(a.output)
    print(json.dumps({"seconds": time.perf_counter() - start}))


if __name__ == "__main__":
    main()
