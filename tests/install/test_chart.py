"""The Helm chart, offline: `helm lint`, `helm template` with every values file, the schema.

No control plane needed (only the helm binary); the install into a real apiserver is
in test_chart_install.py.
"""

from __future__ import annotations

import pytest
import yaml
from install._support import (
    BAD_VALUES,
    CHART,
    CI_VALUES,
    KUBE_VERSION,
    NAMESPACE,
    RELEASE,
    REPO,
    by_kind,
    container,
    one,
    pod_spec,
    run,
)

VALUES_CASES = [None, *CI_VALUES]
VALUES_IDS = ["default", *(p.stem for p in CI_VALUES)]


def _values(case):
    return () if case is None else (case,)


def _rules(objs, kind):
    return [rule for role in by_kind(objs, kind) for rule in role["rules"]]


def _rule_set(rules):
    """{(apiGroup, resource): {verbs}} — the comparable shape of a list of PolicyRules."""
    out: dict[tuple[str, str], set[str]] = {}
    for r in rules:
        assert "resourceNames" not in r or r["resourceNames"], r
        for g in r.get("apiGroups", []):
            for res in r.get("resources", []):
                out.setdefault((g, res), set()).update(r["verbs"])
    return out


def test_chart_metadata():
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    assert chart["apiVersion"] == "v2"
    assert chart["name"] == "detectionjob-operator"
    assert chart["type"] == "application"
    assert chart["appVersion"] and chart["version"]
    for f in ("values.yaml", "values.schema.json", "templates/NOTES.txt",
              "templates/_helpers.tpl", "crds/detectionjob.dev_detectionjobs.yaml"):
        assert (CHART / f).is_file(), f


@pytest.mark.parametrize("values", VALUES_CASES, ids=VALUES_IDS)
def test_helm_lint(helm_bin, values):
    argv = [helm_bin, "lint", "--strict", "--kube-version", KUBE_VERSION, str(CHART)]
    if values is not None:
        argv += ["--values", str(values)]
    proc = run(argv)
    assert "0 chart(s) failed" in proc.stdout


@pytest.mark.parametrize("values", VALUES_CASES, ids=VALUES_IDS)
def test_template_renders_valid_objects(render, values):
    objs = render(*_values(values))
    assert objs
    for o in objs:
        assert o["apiVersion"] and o["kind"] and o["metadata"]["name"], o
        labels = o["metadata"].get("labels", {})
        assert labels.get("app.kubernetes.io/name") == "detectionjob-operator", o["kind"]
        assert labels.get("app.kubernetes.io/managed-by") == "Helm", o["kind"]
    names = [(o["kind"], o["metadata"].get("namespace"), o["metadata"]["name"]) for o in objs]
    assert len(names) == len(set(names)), "duplicate objects"


def test_defaults_cluster_wide(render):
    objs = render()
    kinds = sorted(o["kind"] for o in objs)
    assert kinds == sorted(
        ["ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Deployment", "Service"]
    )
    for o in objs:
        assert o["metadata"]["name"].startswith(RELEASE)
        if o["kind"] not in ("ClusterRole", "ClusterRoleBinding"):
            assert o["metadata"]["namespace"] == NAMESPACE

    deploy = one(objs, "Deployment")
    assert deploy["spec"]["replicas"] == 1
    assert deploy["spec"]["strategy"] == {"type": "Recreate"}
    c = container(objs)
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    assert c["image"] == f"ghcr.io/detectionjob/detectionjob-operator:{chart['appVersion']}"
    assert c["imagePullPolicy"] == "IfNotPresent"
    assert c["args"][0] == "operator"
    assert not [a for a in c["args"] if a.startswith(("--namespace", "--peering"))]
    assert "--log-format=json" in c["args"]
    assert "--metrics-port=9090" in c["args"]
    assert "--liveness=http://0.0.0.0:8080/healthz" in c["args"]
    assert c["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "healthz"}
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    assert ports == {"healthz": 8080, "metrics": 9090}
    assert c["resources"]["requests"] and c["resources"]["limits"]["memory"]

    binding = one(objs, "ClusterRoleBinding")
    assert binding["roleRef"]["name"] == one(objs, "ClusterRole")["metadata"]["name"]
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": RELEASE, "namespace": NAMESPACE}
    ]
    assert pod_spec(objs)["serviceAccountName"] == RELEASE

    svc = one(objs, "Service")
    assert svc["spec"]["ports"] == [
        {"name": "metrics", "port": 9090, "targetPort": "metrics", "protocol": "TCP"}
    ]
    assert svc["spec"]["selector"] == deploy["spec"]["selector"]["matchLabels"]
    pod_labels = deploy["spec"]["template"]["metadata"]["labels"]
    assert svc["spec"]["selector"].items() <= pod_labels.items()

    rules = _rule_set(_rules(objs, "ClusterRole"))
    assert rules[("detectionjob.dev", "detectionjobs")] >= {"list", "watch", "patch"}
    assert ("detectionjob.dev", "detectionjobs/status") in rules
    assert rules[("ray.io", "rayjobs")] >= {"create", "list", "watch"}
    assert rules[("", "events")] == {"create"}
    assert ("kopf.dev", "clusterkopfpeerings") not in rules  # standalone
    assert ("", "namespaces") not in rules  # cluster-wide kopf never lists namespaces


def test_namespaced_mode_uses_roles(render):
    objs = render(CHART / "ci" / "namespaced-values.yaml")
    roles = by_kind(objs, "Role")
    bindings = by_kind(objs, "RoleBinding")
    assert sorted(r["metadata"]["namespace"] for r in roles) == ["team-a", "team-b"]
    assert sorted(b["metadata"]["namespace"] for b in bindings) == ["team-a", "team-b"]
    for b in bindings:
        assert b["roleRef"]["kind"] == "Role"
        assert b["subjects"][0]["namespace"] == NAMESPACE
    namespaced = _rule_set(_rules(objs, "Role"))
    assert ("detectionjob.dev", "detectionjobs") in namespaced
    assert ("ray.io", "rayjobs") in namespaced
    # No cluster-scoped RBAC at all: the operator turns kopf's cluster scanning off.
    assert not by_kind(objs, "ClusterRole") and not by_kind(objs, "ClusterRoleBinding")
    c = container(objs)
    assert [a for a in c["args"] if a.startswith("--namespace")] == [
        "--namespace=team-a", "--namespace=team-b"]
    assert "--log-format=text" in c["args"]


def test_replicas_turn_peering_on(render):
    objs = render(CHART / "ci" / "ha-values.yaml")
    deploy = one(objs, "Deployment")
    assert deploy["spec"]["replicas"] == 3
    assert "strategy" not in deploy["spec"]  # rolling update is safe with peering
    peering = one(objs, "ClusterKopfPeering")
    assert peering["apiVersion"] == "kopf.dev/v1"
    assert f"--peering={peering['metadata']['name']}" in container(objs)["args"]
    rules = _rule_set(_rules(objs, "ClusterRole"))
    assert rules[("kopf.dev", "clusterkopfpeerings")] == {"get", "list", "watch", "patch"}
    assert pod_spec(objs)["topologySpreadConstraints"][0]["maxSkew"] == 1

    sm = one(objs, "ServiceMonitor")
    assert sm["metadata"]["labels"]["release"] == "prometheus"
    assert sm["spec"]["endpoints"][0]["port"] == "metrics"
    assert sm["spec"]["selector"]["matchLabels"].items() <= (
        one(objs, "Service")["metadata"]["labels"].items())
    assert sm["spec"]["namespaceSelector"] == {"matchNames": [NAMESPACE]}


def test_peering_can_be_forced_with_one_replica(render):
    objs = render(set=["peering.enabled=true", "peering.name=dj-debug"])
    assert one(objs, "ClusterKopfPeering")["metadata"]["name"] == "dj-debug"
    assert "--peering=dj-debug" in container(objs)["args"]


def test_peering_namespaced(render):
    objs = render(CHART / "ci" / "ha-namespaced-values.yaml")
    peering = one(objs, "KopfPeering")
    assert peering["metadata"] == {**peering["metadata"], "name": "dj-peering",
                                   "namespace": "team-a"}
    assert not by_kind(objs, "ClusterKopfPeering")
    rules = _rule_set(_rules(objs, "Role"))
    assert rules[("kopf.dev", "kopfpeerings")] == {"get", "list", "watch", "patch"}
    assert not by_kind(objs, "ClusterRole")


def test_scheduling_env_image_values(render):
    objs = render(CHART / "ci" / "scheduling-values.yaml")
    spec = pod_spec(objs)
    c = container(objs)
    assert c["image"] == "registry.example.com/mirror/detectionjob-operator:0.1.0-rc1"
    assert c["imagePullPolicy"] == "Always"
    assert spec["imagePullSecrets"] == [{"name": "regcred"}]
    assert spec["nodeSelector"] == {"node-role.kubernetes.io/control-plane": ""}
    assert spec["tolerations"][0]["key"] == "node-role.kubernetes.io/control-plane"
    assert "nodeAffinity" in spec["affinity"]
    assert spec["priorityClassName"] == "system-cluster-critical"
    env = {e["name"]: e for e in c["env"]}
    assert env["HTTPS_PROXY"]["value"] == "http://proxy.internal:3128"
    assert env["NODE_NAME"]["valueFrom"]["fieldRef"]["fieldPath"] == "spec.nodeName"
    assert {"POD_NAME", "POD_NAMESPACE"} <= set(env)
    assert c["resources"]["limits"] == {"cpu": "1", "memory": "256Mi"}
    d = one(objs, "Deployment")
    assert d["spec"]["template"]["metadata"]["annotations"] == {"example.com/team": "platform"}
    assert one(objs, "ServiceAccount")["metadata"]["annotations"] == {
        "iam.example.com/role": "detectionjob-operator"}


def test_image_digest_wins_over_tag(render):
    digest = "sha256:" + "a" * 64
    objs = render(set=[f"image.digest={digest}", "image.tag=ignored"])
    assert container(objs)["image"] == f"ghcr.io/detectionjob/detectionjob-operator@{digest}"


def test_minimal_values(render):
    objs = render(CHART / "ci" / "minimal-values.yaml")
    assert sorted(o["kind"] for o in objs) == ["Deployment"]
    c = container(objs)
    assert "livenessProbe" not in c
    assert "--metrics-port=0" in c["args"]  # 0 = off (the operator's default is 9090)
    assert [p["name"] for p in c["ports"]] == ["healthz"]
    assert pod_spec(objs)["serviceAccountName"] == "my-operator-sa"


def test_serviceaccount_name_required_without_create(render):
    proc = render(set=["serviceAccount.create=false"], check=False)
    assert proc.returncode != 0
    assert "serviceAccount.name is required" in proc.stderr


def test_extra_args_are_appended(render):
    c = container(render(set=["extraArgs={--verbose}"]))
    assert c["args"][-1] == "--verbose"


@pytest.mark.parametrize("values", VALUES_CASES, ids=VALUES_IDS)
def test_rbac_has_no_wildcards_and_nothing_sensitive(render, values):
    objs = render(*_values(values))
    rules = _rules(objs, "ClusterRole") + _rules(objs, "Role")
    for r in rules:
        for key in ("apiGroups", "resources", "verbs", "resourceNames"):
            assert "*" not in r.get(key, []), r
        assert "nonResourceURLs" not in r, r
        assert not {"escalate", "impersonate", "bind", "deletecollection", "update",
                    "delete"} & set(r["verbs"]), r
    for (_group, resource), verbs in _rule_set(rules).items():
        assert resource not in {"secrets", "pods/exec", "pods/log", "pods/attach", "configmaps",
                                "clusterroles", "clusterrolebindings", "serviceaccounts/token"}, resource
        if resource == "pods":  # read only: why a job's Pod cannot start (status.pod_problem)
            assert verbs == {"get", "list", "watch"}, (resource, verbs)
        if resource in {"serviceaccounts", "roles", "rolebindings"}:  # per-job reporter
            assert verbs == {"create"}, (resource, verbs)


@pytest.mark.parametrize("values", VALUES_CASES, ids=VALUES_IDS)
def test_security_context_is_restricted(render, values):
    """Static check of the Pod Security `restricted` rules (the real admission test is
    test_pod_security.py)."""
    spec = pod_spec(render(*_values(values)))
    psc = spec["securityContext"]
    assert psc["runAsNonRoot"] is True
    assert psc["runAsUser"] != 0
    assert psc["seccompProfile"] == {"type": "RuntimeDefault"}
    for c in spec["containers"]:
        sc = c["securityContext"]
        assert sc["allowPrivilegeEscalation"] is False
        assert sc["readOnlyRootFilesystem"] is True
        assert sc["capabilities"] == {"drop": ["ALL"]}
        assert not sc.get("privileged")
        assert {"name": "tmp", "mountPath": "/tmp"} in c["volumeMounts"]
    assert {"name": "tmp", "emptyDir": {"sizeLimit": "64Mi"}} in spec["volumes"]
    assert not spec.get("hostNetwork") and not spec.get("hostPID")


@pytest.mark.parametrize("bad", BAD_VALUES, ids=[p.stem for p in BAD_VALUES])
def test_schema_rejects_bad_values(render, bad):
    proc = render(bad, check=False)
    assert proc.returncode != 0, f"{bad.name} was accepted"
    assert "values don't meet the specifications of the schema" in proc.stderr, proc.stderr


def test_every_value_is_documented_in_schema():
    """values.yaml and values.schema.json describe the same top-level keys."""
    import json

    values = yaml.safe_load((CHART / "values.yaml").read_text())
    schema = json.loads((CHART / "values.schema.json").read_text())
    assert set(values) == set(schema["properties"]) - {"global"}


@pytest.mark.parametrize("values", VALUES_CASES, ids=VALUES_IDS)
def test_args_are_understood_by_the_operator_cli(render, values):
    """The Deployment's args parse with the real `detectionjob operator` parser and mean
    what the values say."""
    import argparse

    cli = pytest.importorskip("detectionjob_operator.cli")
    parser = argparse.ArgumentParser(prog="detectionjob", exit_on_error=False)
    cli.register(parser.add_subparsers(dest="command", required=True))
    objs = render(*_values(values))
    args = parser.parse_args(container(objs)["args"])
    vals = yaml.safe_load((CHART / "values.yaml").read_text())
    if values is not None:
        vals = _merge(vals, yaml.safe_load(values.read_text()))
    assert args.command == "operator"
    assert args.namespaces == vals["watchNamespaces"]
    assert args.log_format == vals["logFormat"]
    assert args.metrics_port == (vals["metrics"]["port"] if vals["metrics"]["enabled"] else 0)
    assert args.liveness == f"http://0.0.0.0:{vals['livenessProbe']['port']}/healthz"
    peering = by_kind(objs, "ClusterKopfPeering") + by_kind(objs, "KopfPeering")
    if vals["replicaCount"] > 1 or vals["peering"]["enabled"]:
        assert args.peering == peering[0]["metadata"]["name"]
    else:
        assert args.peering is None and not peering


def _merge(base, override):
    out = dict(base)
    for k, v in override.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


#: Granted only in cluster-wide mode: kopf notices the CRDs appearing (its cluster scanning).
CLUSTER_ONLY = {("apiextensions.k8s.io", "customresourcedefinitions")}
#: Granted only with progressReporting: the per-job reporter ServiceAccount, Role, RoleBinding.
REPORTER = {("", "serviceaccounts"), ("rbac.authorization.k8s.io", "roles"),
            ("rbac.authorization.k8s.io", "rolebindings")}
PEERING_VERBS = {"get", "list", "watch", "patch"}

RBAC_CASES = {
    # values, peering resource expected, cluster-wide
    "default": ([], None, True),
    "namespaced": (["watchNamespaces={team-a,team-b}"], None, False),
    "peering": (["replicaCount=2"], "clusterkopfpeerings", True),
    "peering-namespaced": (["replicaCount=2", "watchNamespaces={team-a}"], "kopfpeerings",
                           False),
    "no-progress": (["progressReporting=false"], None, True),
}


def _operator_rbac(objs, cluster_wide):
    """The operator's rules in one rendering as {(group, resource): {verbs}}: the ClusterRole's,
    or the Roles' (one per watched namespace, all the same) with no cluster-scoped RBAC."""
    kind = "ClusterRole" if cluster_wide else "Role"
    roles = by_kind(objs, kind)
    assert roles
    if not cluster_wide:
        assert not by_kind(objs, "ClusterRole")
    sets = [_rule_set(role["rules"]) for role in roles]
    for role, rules in zip(roles, sets, strict=True):
        assert rules == sets[0], role["metadata"]
    return sets[0]


@pytest.mark.parametrize("case", RBAC_CASES)
def test_rbac_per_configuration(render, case):
    """The chart's rules (their one definition) are the default ones, changed by a value only
    where that value says: namespaced drops the cluster-scoped rules, --no-progress the
    reporter's, peering adds its kopf peering object (cluster-wide or per namespace)."""
    sets, peering, cluster_wide = RBAC_CASES[case]
    default = _operator_rbac(render(), cluster_wide=True)
    assert default.keys() >= CLUSTER_ONLY | REPORTER
    assert not [key for key in default if key[0] == "kopf.dev"]  # standalone
    expected = dict(default)
    if not cluster_wide:
        for key in CLUSTER_ONLY:
            expected.pop(key)
    if case == "no-progress":
        for key in REPORTER:
            expected.pop(key)
    if peering:
        expected[("kopf.dev", peering)] = PEERING_VERBS
    objs = render(set=sets)
    assert _operator_rbac(objs, cluster_wide) == expected
    assert ("--no-progress" in container(objs)["args"]) == (case == "no-progress")


def _md_row(group, resource, verbs):
    """The first three cells of operator/RBAC.md's table row for a rule."""
    group_cell = '`""` (core)' if group == "" else f"`{group}`"
    return f"| {group_cell} | `{resource}` | {', '.join(f'`{v}`' for v in verbs)} |"


def _md_rows(rules):
    return {_md_row(g, res, r["verbs"]) for r in rules for g in r["apiGroups"] for res in r["resources"]}


#: kopf lists namespaces only to resolve --namespace globs (`team-*`), which the chart never
#: passes (watchNamespaces takes exact names): the one rule RBAC.md documents beyond the chart.
GLOB_ONLY_ROW = _md_row("", "namespaces", ["list", "watch"])


def test_rbac_md_documents_the_chart(render):
    """operator/RBAC.md (documentation for people) has one row per rule of the chart, in the
    table for the configurations that grant it, with the chart's verbs, and no other row.
    The rules come from the chart; the Markdown is only checked against them."""
    text = (REPO / "operator" / "RBAC.md").read_text().split("## The job's ServiceAccount")[0]
    always, rest = text.split("Only with `--peering")
    peering, cluster = rest.split("Only when watching the whole cluster")

    def rows(section):
        return {"|".join(line.split("|")[:4]) + "|" for line in section.splitlines()
                if line.startswith("| `")}

    def rules(*sets, cluster_wide=True):
        kind = "ClusterRole" if cluster_wide else "Role"
        return [rule for role in by_kind(render(set=sets), kind) for rule in role["rules"]]

    namespaced = rules("watchNamespaces={team-a}", cluster_wide=False)
    cluster_wide = rules()
    peering_rules = [r for r in rules("replicaCount=2") + rules(
        "replicaCount=2", "watchNamespaces={team-a}", cluster_wide=False)
        if r["apiGroups"] == ["kopf.dev"]]
    assert len(peering_rules) == 2
    assert rows(always) == _md_rows(namespaced)
    assert rows(peering) == _md_rows(peering_rules)
    assert rows(cluster) == (_md_rows(cluster_wide) - _md_rows(namespaced)) | {GLOB_ONLY_ROW}
