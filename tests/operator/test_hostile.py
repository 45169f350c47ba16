"""Hostile strings in every string field never reach a shell.

KubeRay v1.7.0 (K8sJobMode) runs ``bash -ce -- "<command>"`` in the submitter Pod, where
``<command>`` has ``--runtime-env-json`` followed by Go's ``strconv.Quote`` of the runtime env as
JSON, and the entrypoint verbatim (ray-operator/controllers/ray/common/job.go,
BuildJobSubmitCommand). A double-quoted bash string still expands ``$(...)``, ``$VAR`` and
backticks. These tests build that exact command line from our RayJob, run it through a real bash
with a fake ``ray``, and check that nothing ran and every value arrived intact.
"""

from __future__ import annotations

import json
import shlex
import subprocess
from pathlib import Path

import pytest
import yaml
from detectionjob_operator.crd_schema import SpecError
from detectionjob_operator.spec import parse
from detectionjob_operator.translate import ENTRYPOINT, to_rayjob
from djtest import assert_accepted_by_kuberay, make_dj

HOSTILE = [
    "$(touch CANARY)",
    "$(touch${IFS}CANARY)",
    "`touch CANARY`",
    "`touch${IFS}CANARY`",
    "${IFS}$(touch${IFS}CANARY)",
    "x;touch CANARY",
    "x;touch${IFS}CANARY;",
    "x' ; touch CANARY ; '",
    'x" ; touch CANARY ; "',
    'x\\"$(touch${IFS}CANARY)\\"',
    "x\ntouch CANARY",
    "x\r\ntouch${IFS}CANARY",
    "x|touch${IFS}CANARY",
    "x&&touch${IFS}CANARY",
    "x$((1+1))$HOME$PATH",
    "x<CANARY>CANARY",
    "\\",
    "\\\\$(touch${IFS}CANARY)",
    "ü€$(touch${IFS}CANARY)",
    "x\x00y\x1b[31m\t",
    "x\u2028$(touch${IFS}CANARY)",
    "!!",
    "%s%n{}",
]

# Every string field of the spec, and how a hostile value is placed in it.
STRING_FIELDS = {
    "spec.input.uri": lambda h: {"input": {"uri": "s3://bucket/" + h}},
    "spec.input.pvc.claimName": lambda h: {"input": {"uri": None, "pvc": {"claimName": h}}},
    "spec.input.pvc.path": lambda h: {"input": {"uri": None, "pvc": {"claimName": "c", "path": h}}},
    "spec.input.fileExtensions[0]": lambda h: {"input": {"fileExtensions": [h]}},
    "spec.input.secretRef.name": lambda h: {"input": {"secretRef": {"name": h}}},
    "spec.output.uri": lambda h: {"output": {"uri": "s3://bucket/" + h}},
    "spec.output.pvc.claimName": lambda h: {"output": {"uri": None, "pvc": {"claimName": h}}},
    "spec.output.pvc.path": lambda h: {"output": {"uri": None,
                                                  "pvc": {"claimName": "c", "path": h}}},
    "spec.output.secretRef.name": lambda h: {"output": {"secretRef": {"name": h}}},
    "spec.output.mode": lambda h: {"output": {"mode": h}},
    "spec.model.name": lambda h: {"model": {"name": h}},
    "spec.model.weights": lambda h: {"model": {"weights": h}},
    "spec.model.precision": lambda h: {"model": {"precision": h}},
    "spec.workers.cpusPerWorker": lambda h: {"workers": {"cpusPerWorker": h}},
    "spec.workers.memory": lambda h: {"workers": {"memory": h}},
    "spec.workers.gpuResource": lambda h: {"workers": {"gpuResource": h}},
    "spec.workers.nodeSelector": lambda h: {"workers": {"nodeSelector": {"k": h}}},
    "spec.workers.nodeSelector[key]": lambda h: {"workers": {"nodeSelector": {h: "v"}}},
    "spec.workers.tolerations[0].key": lambda h: {"workers": {"tolerations": [{"key": h}]}},
    "spec.workers.tolerations[0].value": lambda h: {"workers": {"tolerations": [
        {"key": "k", "operator": "Equal", "value": h}]}},
    "spec.workers.tolerations[0].operator": lambda h: {"workers": {"tolerations": [
        {"key": "k", "operator": h}]}},
    "spec.workers.tolerations[0].effect": lambda h: {"workers": {"tolerations": [{"effect": h}]}},
    "spec.head.cpus": lambda h: {"head": {"cpus": h}},
    "spec.head.memory": lambda h: {"head": {"memory": h}},
    "spec.image": lambda h: {"image": "registry.example/" + h},
    "spec.rayVersion": lambda h: {"rayVersion": h},
    "spec.queueName": lambda h: {"queueName": h},
}


def go_quote(text: str) -> str:
    """Go's strconv.Quote for ASCII text (our runtime env is ASCII; anything else fails here)."""
    assert text.isascii(), "the runtime env JSON must be ASCII"
    named = {"\a": "\\a", "\b": "\\b", "\f": "\\f", "\n": "\\n", "\r": "\\r", "\t": "\\t",
             "\v": "\\v", '"': '\\"', "\\": "\\\\"}
    out = []
    for ch in text:
        if ch in named:
            out.append(named[ch])
        elif " " <= ch <= "~":
            out.append(ch)
        else:
            out.append(f"\\x{ord(ch):02x}")
    return '"' + "".join(out) + '"'


def go_yaml_to_json(text: str) -> str:
    """sigs.k8s.io/yaml.YAMLToJSON: parse, then Go's json.Marshal (sorted, compact, HTML-safe)."""
    out = json.dumps(yaml.safe_load(text), separators=(",", ":"), sort_keys=True,
                     ensure_ascii=False)
    return (out.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")
            .replace("\u2028", "\\u2028").replace("\u2029", "\\u2029"))


def kuberay_submit_command(rayjob: dict) -> str:
    """The shell command KubeRay v1.7.0's submitter runs (K8sJobMode, after the health wait)."""
    address, job_id = "http://dj-head-svc.ns.svc.cluster.local:8265", "rayjob-x7k2p"
    cmd = ["if", "!", "ray", "job", "status", "--address", address, job_id, ">/dev/null", "2>&1",
           ";", "then", "ray", "job", "submit", "--address", address, "--no-wait"]
    env = rayjob["spec"].get("runtimeEnvYAML", "")
    if env:
        cmd += ["--runtime-env-json", go_quote(go_yaml_to_json(env))]
    cmd += ["--submission-id", job_id, "--", rayjob["spec"]["entrypoint"].strip(), ";", "fi", ";",
            "ray", "job", "logs", "--address", address, "--follow", job_id]
    return " ".join(cmd)


FAKE_RAY = """
ray() {
  if [ "$2" = status ]; then return 1; fi
  if [ "$2" = submit ]; then printf '%s\\0' "$@" > SUBMITTED; fi
}
"""


def run_like_kuberay(rayjob: dict, tmp_path: Path) -> list[str]:
    """Run the submitter's command in bash with a fake ``ray``; the argv ``ray job submit`` got."""
    script = FAKE_RAY + kuberay_submit_command(rayjob)
    subprocess.run(["bash", "-ce", "--", script], cwd=tmp_path, check=True, timeout=30,
                   env={"PATH": "/usr/bin:/bin", "HOME": "/nonexistent"})
    assert not (tmp_path / "CANARY").exists(), "a hostile string ran in the submitter's shell"
    return (tmp_path / "SUBMITTED").read_bytes().decode().split("\0")[:-1]


def delivered_args(argv: list[str]) -> dict:
    """What ``detectionjob run --args-json-env DETECTIONJOB_ARGS`` would read."""
    runtime_env = json.loads(argv[argv.index("--runtime-env-json") + 1])
    return json.loads(runtime_env["env_vars"]["DETECTIONJOB_ARGS"])


def no_shell_fields(rayjob: dict) -> None:
    """No Pod gets a command/args/env we set; KubeRay builds ``ray start`` from constants only."""
    cluster = rayjob["spec"]["rayClusterSpec"]
    groups = [cluster["headGroupSpec"], *cluster["workerGroupSpecs"]]
    assert cluster["headGroupSpec"]["rayStartParams"] == {
        "dashboard-host": "0.0.0.0", "num-cpus": "0", "num-gpus": "0"}
    for group in groups:
        for container in group["template"]["spec"]["containers"]:
            assert not {"command", "args", "env", "lifecycle"} & set(container)
    for group in cluster["workerGroupSpecs"]:
        assert group["rayStartParams"] == {}
    assert rayjob["spec"]["entrypoint"] == ENTRYPOINT
    # The submitter Pod is ours only for its securityContext: KubeRay fills in the command.
    for container in rayjob["spec"]["submitterPodTemplate"]["spec"]["containers"]:
        assert not {"command", "args", "env", "lifecycle"} & set(container)


@pytest.mark.parametrize("field", sorted(STRING_FIELDS))
def test_hostile_strings_in_every_string_field(field, tmp_path, kuberay_rayjob_schema):
    accepted = 0
    for i, hostile in enumerate(HOSTILE):
        doc = make_dj(STRING_FIELDS[field](hostile), uid="uid-1")
        try:
            dj = parse(doc)
        except SpecError as err:
            # Rejected: the message names the field (or the object holding it).
            stem = field.split("[")[0]
            assert err.path.startswith(stem.rsplit(".", 1)[0]), (field, hostile, str(err))
            continue
        accepted += 1
        rayjob = to_rayjob(dj)
        no_shell_fields(rayjob)
        assert_accepted_by_kuberay(rayjob, kuberay_rayjob_schema)
        case = tmp_path / str(i)
        case.mkdir()
        argv = run_like_kuberay(rayjob, case)
        assert argv[argv.index("--") + 1:] == shlex.split(ENTRYPOINT)
        args = delivered_args(argv)
        if field == "spec.input.uri":
            assert args["input"] == "s3://bucket/" + hostile
        elif field == "spec.output.uri":
            assert args["output"] == "s3://bucket/" + hostile
        elif field == "spec.model.weights":
            assert args["weights"] == hostile
        elif field == "spec.image":
            head = rayjob["spec"]["rayClusterSpec"]["headGroupSpec"]["template"]["spec"]
            assert head["containers"][0]["image"] == "registry.example/" + hostile
    # Free-form fields: every hostile string reaches the job (URIs are single-line).
    if field in ("spec.input.uri", "spec.output.uri"):
        assert accepted == len([h for h in HOSTILE if "\n" not in h])
    if field == "spec.model.weights":
        assert accepted == len(HOSTILE)


def test_all_hostile_values_at_once(tmp_path):
    hostile = "$(touch${IFS}CANARY)`touch${IFS}CANARY`;'\"\\"
    doc = make_dj({"input": {"uri": "s3://b/" + hostile}, "output": {"uri": "s3://c/" + hostile},
                   "model": {"weights": hostile + "\n"}}, name="x", namespace="y")
    rayjob = to_rayjob(parse(doc))
    runtime_env = rayjob["spec"]["runtimeEnvYAML"]
    assert "$" not in runtime_env and "`" not in runtime_env and runtime_env.isascii()
    args = delivered_args(run_like_kuberay(rayjob, tmp_path))
    assert args["input"] == "s3://b/" + hostile and args["weights"] == hostile + "\n"


def test_go_quote_matches_known_outputs():
    # Values from Go: fmt.Println(strconv.Quote(...)).
    assert go_quote('{"a":"b"}') == '"{\\"a\\":\\"b\\"}"'
    assert go_quote("a\\b\n\x00") == '"a\\\\b\\n\\x00"'
