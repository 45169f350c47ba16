"""The operator's RayJob and the job agree: options travel as JSON data, hostile strings intact."""

from __future__ import annotations

import json
import shlex

import pytest
import yaml
from detectionjob_operator.spec import parse
from detectionjob_operator.translate import to_rayjob

from inference.cli import build_parser, run_config

HOSTILE = "$(touch /tmp/pwned)`id`;'\"|&x"


@pytest.fixture
def rayjob_env(monkeypatch):
    def render(spec: dict) -> dict:
        obj = {"apiVersion": "detectionjob.dev/v1alpha1", "kind": "DetectionJob",
               "metadata": {"name": "contract", "namespace": "team-a", "uid": "1234"}, "spec": spec}
        rayjob = to_rayjob(parse(obj))
        env = yaml.safe_load(rayjob["spec"]["runtimeEnvYAML"])["env_vars"]
        for key, value in env.items():
            monkeypatch.setenv(key, value)
        return rayjob

    return render


def test_entrypoint_is_fixed_and_options_round_trip(rayjob_env):
    spec = {
        "input": {"uri": f"s3://in-bucket/imgs/{HOSTILE}/", "fileExtensions": ["jpg", "png"]},
        "output": {"uri": f"s3://out-bucket/res/{HOSTILE}/", "mode": "resume", "samples": 3},
        "model": {"name": "fasterrcnn_resnet50_fpn_v2", "weights": f"s3://w/{HOSTILE}.pth",
                  "scoreThreshold": 0.7},
        "batchSize": 8,
        "workers": {"minReplicas": 1, "maxReplicas": 3, "gpusPerWorker": 1},
        "image": "example.com/worker:1",
    }
    rayjob = rayjob_env(spec)
    entrypoint = rayjob["spec"]["entrypoint"]
    assert shlex.split(entrypoint) == ["python", "-m", "inference", "run", "--args-json-env",
                                       "DETECTIONJOB_ARGS"]
    assert HOSTILE not in json.dumps(rayjob["spec"]["rayClusterSpec"])

    args = build_parser().parse_args(shlex.split(entrypoint)[3:])
    config = run_config(args)
    assert config.input == spec["input"]["uri"] and config.output == spec["output"]["uri"]
    assert config.weights == spec["model"]["weights"]
    assert sorted(config.extensions) == ["jpg", "png"]
    assert (config.model, config.score_threshold, config.batch_size) == (
        "fasterrcnn_resnet50_fpn_v2", 0.7, 8)
    assert config.resume is True and config.samples == 3
    assert config.num_gpus == 1.0 and config.workers == "1:3"


def test_unknown_json_option_is_a_clear_error(monkeypatch):
    monkeypatch.setenv("DJ_ARGS", json.dumps({"input": "a", "output": "b", "bogus": 1}))
    with pytest.raises(ValueError, match="bogus"):
        run_config(build_parser().parse_args(["run", "--args-json-env", "DJ_ARGS"]))
