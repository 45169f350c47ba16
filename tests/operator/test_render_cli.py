"""``detectionjob render``: the RayJob as YAML without a cluster; exit 2 naming the field."""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys

import pytest
import yaml
from detectionjob_operator import cli
from djtest import EXAMPLE, ROOT, make_dj


def run_cli(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "detectionjob_operator", *args], input=stdin,
                          capture_output=True, text=True, cwd=ROOT, timeout=60)


def test_render_example():
    proc = run_cli("render", "-f", str(EXAMPLE))
    assert proc.returncode == 0, proc.stderr
    (rayjob,) = list(yaml.safe_load_all(proc.stdout))
    assert rayjob["kind"] == "RayJob" and rayjob["metadata"]["name"] == "voc-fasterrcnn"
    assert "&id" not in proc.stdout and "*id" not in proc.stdout  # no YAML anchors


def test_render_stdin_and_namespace():
    proc = run_cli("render", "-f", "-", "-n", "ml", stdin=EXAMPLE.read_text())
    assert proc.returncode == 0, proc.stderr
    assert yaml.safe_load(proc.stdout)["metadata"]["namespace"] == "ml"


def test_render_several_documents():
    docs = [make_dj(name="a"), make_dj(name="b")]
    proc = run_cli("render", "-f", "-", stdin=yaml.safe_dump_all(docs))
    assert proc.returncode == 0, proc.stderr
    assert [d["metadata"]["name"] for d in yaml.safe_load_all(proc.stdout)] == ["a", "b"]


@pytest.mark.parametrize(("doc", "field"), [
    (make_dj({"workers": {"minReplicas": 4, "maxReplicas": 2}}), "spec.workers.minReplicas"),
    (make_dj({"output": {"mode": "append"}}), "spec.output.mode"),
    (make_dj({"model": {"name": "yolo"}}), "spec.model.name"),
    (make_dj({"input": {"uri": "ftp://x"}}), "spec.input.uri"),
    (make_dj({"image": None}), "spec.image"),
    (make_dj({"workerz": {}}), "spec.workerz"),
])
def test_render_invalid_names_the_field(doc, field):
    proc = run_cli("render", "-f", "-", stdin=yaml.safe_dump(doc))
    assert proc.returncode == 2
    assert proc.stdout == ""
    assert f"{field}: " in proc.stderr and "invalid DetectionJob" in proc.stderr


@pytest.mark.parametrize(("text", "message"), [
    ("a: [unclosed", "not valid YAML"),
    ("", "no DetectionJob"),
    ("- 1\n- 2\n", "<document>"),
])
def test_render_bad_input(text, message):
    proc = run_cli("render", "-f", "-", stdin=text)
    assert proc.returncode == 2 and message in proc.stderr


def test_render_missing_file(tmp_path):
    proc = run_cli("render", "-f", str(tmp_path / "nope.yaml"))
    assert proc.returncode == 2 and "nope.yaml" in proc.stderr


def test_register_adds_subcommands(capsys):
    parser = argparse.ArgumentParser(prog="detectionjob")
    cli.register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["render", "-f", str(EXAMPLE)])
    assert args.func(args) == 0
    assert yaml.safe_load(capsys.readouterr().out)["kind"] == "RayJob"
    args = parser.parse_args(["operator", "-n", "a", "-n", "b", "--metrics-port", "0",
                              "--peering", "detectionjob", "--log-format", "json"])
    assert args.namespaces == ["a", "b"] and args.peering == "detectionjob"
    assert args.func is cli.cmd_operator


@pytest.mark.skipif(shutil.which("detectionjob") is None, reason="console script not installed")
def test_main_cli_has_render():
    proc = subprocess.run(["detectionjob", "render", "-f", str(EXAMPLE)], capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert yaml.safe_load(proc.stdout)["kind"] == "RayJob"
