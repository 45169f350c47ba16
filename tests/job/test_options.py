"""The job's options have one definition (inference.options.RunConfig): the CLI, the operator's
JSON, the checks and the README's table all come from it."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import asdict, fields
from pathlib import Path

import pytest

from inference.cli import build_parser, run_config
from inference.options import NAMES, RunConfig, from_json, to_json

ROOT = Path(__file__).resolve().parents[2]


def test_cli_defaults_are_the_definitions():
    parsed = run_config(build_parser().parse_args(["run"]))
    assert asdict(parsed) == asdict(RunConfig())


def test_every_option_but_internal_ones_is_a_flag():
    parser = build_parser()
    run = next(a for a in parser._subparsers._group_actions[0].choices.items() if a[0] == "run")[1]
    dests = {a.dest for a in run._actions}
    assert {f.name for f in fields(RunConfig) if f.metadata["option"].cli} <= dests
    assert "progress_interval" not in dests


def test_json_round_trip_and_unknown_names():
    values = {"input": "s3://b/in/", "output": "s3://b/out/", "workers": "1:3", "samples": 3,
              "extensions": ["jpg"], "score_threshold": 0.7, "resume": True, "limit": None}
    config = from_json(to_json(values), "test")
    assert {k: getattr(config, k) for k in values if values[k] is not None} == {
        k: v for k, v in values.items() if v is not None}
    assert config.limit is None
    with pytest.raises(TypeError, match="bogus"):
        to_json({"input": "a", "bogus": 1})
    assert set(json.loads(to_json({"input": "$(x)`y`"}))) <= NAMES
    assert "$" not in to_json({"input": "$(x)"}) and "`" not in to_json({"input": "`x`"})


@pytest.mark.parametrize(("change", "message"), [
    ({"batch_size": 0}, "--batch-size: must be >= 1, got 0"),
    ({"shard_size": 0}, "--shard-size: must be >= 1, got 0"),
    ({"score_threshold": 1.5}, "--score-threshold: must be within [0, 1], got 1.5"),
    ({"max_failed_fraction": -0.1}, "--max-failed-fraction: must be within [0, 1], got -0.1"),
    ({"num_gpus": -1.0}, "--num-gpus: must be >= 0, got -1.0"),
    ({"limit": -1}, "--limit: must be >= 0, got -1"),
    ({"samples": -2}, "--samples: must be >= 0, got -2"),
    ({"precision": "fp8"}, "--precision: one of fp32, fp16, bf16, got 'fp8'"),
    ({"model": "yolo"}, "--model: 'yolo' is not a torchvision detection model"),
    ({"workers": "3:1"}, "--workers: need 1 <= MIN <= MAX"),
    ({"retry_errors": True}, "--retry-errors: only with --resume"),
])
def test_each_check_names_its_flag(change, message, tmp_path):
    config = RunConfig(input=str(tmp_path), output=str(tmp_path / "out"), **change)
    with pytest.raises(ValueError) as err:
        config.validate()
    assert str(err.value).startswith(message)


def test_readme_flag_table_is_generated_from_the_definition():
    proc = subprocess.run([sys.executable, str(ROOT / "hack" / "sync-docs.py"), "--check"],
                          capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr
    readme = (ROOT / "README.md").read_text()
    for f in fields(RunConfig):
        flag = "--" + f.name.replace("_", "-")
        assert (f"`{flag}" in readme) == f.metadata["option"].cli, flag


def test_run_without_the_job_extra_says_what_to_install(tmp_path):
    """Installed without the "job" extra (as the operator image is), `run` says what is missing."""
    code = ("import sys; sys.modules['torch'] = sys.modules['ray'] = None\n"
            "from inference.cli import main\n"
            f"sys.exit(main(['run', '--input', {str(tmp_path)!r}, '--output', {str(tmp_path / 'o')!r}]))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert proc.returncode == 2, proc.stderr
    assert "pip install 'detectionjob[job]'" in proc.stderr
    assert not (tmp_path / "o").exists()
