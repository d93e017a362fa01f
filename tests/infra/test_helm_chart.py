"""The Helm chart infra/helm/dspex: linted and rendered by Helm v4 (`make k8s-tools` builds it from the
Go module proxy), built-in kinds validated by kubernetes-validate against the API schemas of the
oldest and newest Kubernetes it supports, the KEDA and prometheus-operator resources against the
schemas their npm models publish, and what the manifests say checked against dspex itself: the
worker command line, the settings variables, the topics' partitions.

Rendered twice: with the chart's defaults, and with infra/helm/examples/existing-kafka-sasl-ssl.yaml
(SASL over TLS, API keys from Secrets, PodMonitor, egress rules) that docs/kubernetes.md shows.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import Any, get_args

import click
import kubernetes_validate
import pytest
import typer.main
import yaml

from dspex.cli import app as cli_app
from dspex.streams.config import KafkaSettings, SaslMechanism, SecurityProtocol
from dspex.streams.topics import DEFAULT_PARTITIONS

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "infra" / "helm" / "dspex"
EXAMPLE = ROOT / "infra" / "helm" / "examples" / "existing-kafka-sasl-ssl.yaml"
TOOLS = Path.home() / ".cache" / "dspex"
HELM = TOOLS / "bin" / "helm"
MODELS = TOOLS / "npm" / "k8s-models" / "node_modules"
VALIDATE_CRDS = Path(__file__).with_name("validate_crds.mjs")
# kubeVersion in Chart.yaml, and the newest schemas kubernetes-validate ships
KUBERNETES_VERSIONS = ("1.25.0", kubernetes_validate.latest_version())
WORKER_KINDS = ("predict", "score", "aggregate", "optimize")
INPUT_TOPICS = {"predict": "tasks", "score": "predictions"}
CUSTOM_KINDS = {"ScaledObject", "TriggerAuthentication", "PodMonitor"}

Manifest = dict[str, Any]


def _require_tools() -> None:
    missing = [str(path) for path in (HELM, MODELS / "@kubernetes-models" / "keda") if not path.exists()]
    if shutil.which("node") is None:
        missing.append("node")
    if not missing:
        return
    reason = f"missing {', '.join(missing)}: run `make k8s-tools`"
    if os.environ.get("CI", "").strip().lower() in {"1", "true", "yes"}:
        pytest.fail(f"CI=true and {reason}", pytrace=False)
    pytest.skip(reason)


def helm(*args: str) -> subprocess.CompletedProcess[str]:
    _require_tools()
    return subprocess.run([str(HELM), *args], capture_output=True, text=True, timeout=120, check=False)


@cache
def _render(values: Path | None) -> tuple[Manifest, ...]:
    args = ["template", "dspex", str(CHART), "--namespace", "ml"]
    if values is not None:
        args += ["--values", str(values)]
    done = helm(*args)
    assert done.returncode == 0, done.stderr
    return tuple(doc for doc in yaml.safe_load_all(done.stdout) if doc)


@pytest.fixture(params=[None, EXAMPLE], ids=["defaults", "sasl-ssl-example"])
def manifests(request: pytest.FixtureRequest) -> list[Manifest]:
    return list(_render(request.param))


def of_kind(docs: list[Manifest], kind: str) -> dict[str, Manifest]:
    return {doc["metadata"]["name"]: doc for doc in docs if doc["kind"] == kind}


def workers(docs: list[Manifest]) -> Iterator[tuple[str, Manifest]]:
    for name, deployment in of_kind(docs, "Deployment").items():
        kind = name.removeprefix("dspex-")
        if kind in WORKER_KINDS:
            yield kind, deployment


def container(deployment: Manifest) -> Manifest:
    (only,) = deployment["spec"]["template"]["spec"]["containers"]
    return dict(only)


# ---------------------------------------------------------------------------------- helm itself


@pytest.mark.parametrize("values", [None, EXAMPLE], ids=["defaults", "sasl-ssl-example"])
def test_helm_lint_is_clean(values: Path | None) -> None:
    args = ["lint", "--strict", str(CHART)] + (["--values", str(values)] if values else [])
    done = helm(*args)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "0 chart(s) failed" in done.stdout


def test_the_helm_in_use_is_the_pinned_build() -> None:
    _require_tools()
    built = subprocess.run(["go", "version", "-m", str(HELM)], capture_output=True, text=True, check=True)
    assert "helm.sh/helm/v4\tv4.3.2" in built.stdout


MUTUAL_TLS_WITHOUT_EXTRAS = (
    "kafka.securityProtocol=SSL",
    "kafka.tls.existingSecret=dspex-kafka-tls",
    "kafka.tls.certKey=tls.crt",
    "kafka.tls.keyKey=tls.key",
    "workers.predict.autoscaling.enabled=false",
    "workers.optimize.enabled=false",
    "dashboard.enabled=false",
    "networkPolicy.enabled=false",
    "podDisruptionBudget.enabled=false",
)


def test_mutual_tls_without_the_optional_parts_renders_valid_manifests() -> None:
    done = helm(
        "template",
        "dspex",
        str(CHART),
        *[arg for pair in MUTUAL_TLS_WITHOUT_EXTRAS for arg in ("--set", pair)],
    )
    assert done.returncode == 0, done.stderr
    docs = [doc for doc in yaml.safe_load_all(done.stdout) if doc]
    assert sorted(doc["kind"] for doc in docs) == [
        "Deployment", "Deployment", "Deployment", "ScaledObject", "ServiceAccount", "TriggerAuthentication",
    ]  # fmt: skip
    for doc in docs:
        if doc["kind"] not in CUSTOM_KINDS:
            kubernetes_validate.validate(doc, KUBERNETES_VERSIONS[-1], strict=True)
    assert [r for r in _validate_custom([d for d in docs if d["kind"] in CUSTOM_KINDS]) if not r["ok"]] == []
    predict = of_kind(docs, "Deployment")["dspex-predict"]
    assert predict["spec"]["replicas"] == 2  # not autoscaled: the chart sets the count
    env = {item["name"]: item.get("value") for item in container(predict)["env"]}
    settings = KafkaSettings.from_env({k: v for k, v in env.items() if k.startswith("DSPEX_KAFKA_") and v})
    assert (settings.ssl_cafile, settings.ssl_certfile, settings.ssl_keyfile) == (
        "/etc/dspex/kafka-tls/ca.crt",
        "/etc/dspex/kafka-tls/tls.crt",
        "/etc/dspex/kafka-tls/tls.key",
    )
    mounts = {m["name"]: m["mountPath"] for m in container(predict)["volumeMounts"]}
    assert mounts["kafka-tls"] == "/etc/dspex/kafka-tls"
    (auth,) = of_kind(docs, "TriggerAuthentication").values()
    assert sorted(ref["parameter"] for ref in auth["spec"]["secretTargetRef"]) == ["ca", "cert", "key"]


@pytest.mark.parametrize(
    ("setting", "complaint"),
    [
        ("workers.predict.autoscalling.enabled=false", "additional properties 'autoscalling' not allowed"),
        ("kafka.securityProtocol=SASL", "value must be one of"),
        ("lm.apiKeys[0].name=OPENAI-KEY", "/lm/apiKeys/0"),
    ],
)
def test_values_outside_the_chart_schema_are_refused(setting: str, complaint: str) -> None:
    done = helm("template", "dspex", str(CHART), "--set", setting)
    assert done.returncode != 0 and complaint in done.stderr, done.stderr


def test_the_values_schema_offers_what_kafka_settings_accept() -> None:
    schema = json.loads((CHART / "values.schema.json").read_text())
    kafka = schema["properties"]["kafka"]["properties"]
    assert kafka["securityProtocol"]["enum"] == list(get_args(SecurityProtocol))
    # the aggregator's faust client speaks only these (dspex.processors.aggregator._credentials)
    assert kafka["sasl"]["properties"]["mechanism"]["enum"] == ["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"]
    assert set(kafka["sasl"]["properties"]["mechanism"]["enum"]) <= set(get_args(SaslMechanism))


def test_sasl_without_a_secret_is_refused_at_render_time() -> None:
    done = helm("template", "dspex", str(CHART), "--set", "kafka.securityProtocol=SASL_SSL")
    assert done.returncode != 0
    assert "kafka.sasl.existingSecret must name a Secret" in done.stderr


# ---------------------------------------------------------------------------------- schemas


def test_built_in_kinds_are_valid_kubernetes(manifests: list[Manifest]) -> None:
    checked = 0
    for doc in manifests:
        if doc["kind"] in CUSTOM_KINDS:
            continue
        for version in KUBERNETES_VERSIONS:
            kubernetes_validate.validate(doc, version, strict=True)
        checked += 1
    assert checked >= 12  # 5 Deployments, 5 PodDisruptionBudgets, 2 NetworkPolicies, ...


def test_keda_and_prometheus_operator_resources_match_their_published_schemas(
    manifests: list[Manifest],
) -> None:
    custom = [doc for doc in manifests if doc["kind"] in CUSTOM_KINDS]
    results = _validate_custom(custom)
    assert [r for r in results if not r["ok"]] == []
    assert len(results) == len(custom) >= 2


def test_the_schema_check_rejects_a_broken_scaled_object() -> None:
    """The validator really validates: a ScaledObject with a string replica count and no target fails."""
    broken = {
        "apiVersion": "keda.sh/v1alpha1",
        "kind": "ScaledObject",
        "metadata": {"name": "broken"},
        "spec": {"scaleTargetRef": {}, "maxReplicaCount": "16", "triggers": []},
    }
    (result,) = _validate_custom([broken])
    assert not result["ok"]
    assert "maxReplicaCount must be integer" in result["error"]
    assert "scaleTargetRef must have required property name" in result["error"]


def _validate_custom(docs: list[Manifest]) -> list[dict[str, Any]]:
    _require_tools()
    done = subprocess.run(
        ["node", str(VALIDATE_CRDS), str(MODELS)],
        input=json.dumps(docs),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    results: list[dict[str, Any]] = json.loads(done.stdout)
    return results


# ---------------------------------------------------------------------------------- the workers


def test_every_worker_kind_runs_a_command_dspex_accepts(manifests: list[Manifest]) -> None:
    kinds = dict(workers(manifests))
    assert sorted(kinds) == sorted(WORKER_KINDS)
    worker_group = typer.main.get_command(cli_app).commands["worker"]  # type: ignore[attr-defined]
    for kind, deployment in kinds.items():
        args = [str(arg) for arg in container(deployment)["args"]]
        assert args[:2] == ["worker", kind]
        command: click.Command = worker_group.commands[kind]
        # parsing only: an option the CLI does not have, or a bad value, raises here
        with command.make_context(kind, args[2:]) as context:
            assert context.params["metrics_host"] == "0.0.0.0"
            assert context.params["metrics_port"] == 9400
            assert context.params["prefix"] in {"dspex.", "evals."}


def test_the_dashboard_runs_a_command_dspex_accepts(manifests: list[Manifest]) -> None:
    deployment = of_kind(manifests, "Deployment")["dspex-dashboard"]
    args = [str(arg) for arg in container(deployment)["args"]]
    assert args[0] == "dashboard"
    command: click.Command = typer.main.get_command(cli_app).commands["dashboard"]  # type: ignore[attr-defined]
    with command.make_context("dashboard", args[1:]) as context:
        assert context.params["host"] == "0.0.0.0" and context.params["port"] == 8765
        assert not context.params["insecure_no_token"]
    # on 0.0.0.0 the dashboard needs its token: from the Secret, never in the manifest
    (token,) = [e for e in container(deployment)["env"] if e["name"] == "DSPEX_DASHBOARD_TOKEN"]
    assert token["valueFrom"]["secretKeyRef"] == {"name": "dspex-dashboard", "key": "token"}
    service = of_kind(manifests, "Service")["dspex-dashboard"]
    assert service["spec"]["ports"][0]["targetPort"] == "http"


def test_probes_use_healthz_and_readyz_on_the_metrics_port(manifests: list[Manifest]) -> None:
    for kind, deployment in workers(manifests):
        spec = container(deployment)
        assert spec["ports"] == [{"name": "metrics", "containerPort": 9400, "protocol": "TCP"}], kind
        probes = {name: spec[name]["httpGet"] for name in ("startupProbe", "livenessProbe", "readinessProbe")}
        assert probes == {
            "startupProbe": {"path": "/healthz", "port": "metrics"},
            "livenessProbe": {"path": "/healthz", "port": "metrics"},
            "readinessProbe": {"path": "/readyz", "port": "metrics"},
        }, kind
        annotations = deployment["spec"]["template"]["metadata"]["annotations"]
        assert annotations["prometheus.io/scrape"] == "true" and annotations["prometheus.io/port"] == "9400"


def test_the_environment_is_what_kafka_settings_read(manifests: list[Manifest]) -> None:
    for kind, deployment in workers(manifests):
        env = container(deployment)["env"]
        kafka = {item["name"]: item for item in env if item["name"].startswith("DSPEX_KAFKA_")}
        # values a Secret supplies at run time stand in as placeholders
        given = {name: item.get("value", "from-a-secret") for name, item in kafka.items()}
        settings = KafkaSettings.from_env(given)
        assert settings.bootstrap_servers == given["DSPEX_KAFKA_BOOTSTRAP"], kind
        if settings.security_protocol.startswith("SASL"):
            for name in ("DSPEX_KAFKA_SASL_USERNAME", "DSPEX_KAFKA_SASL_PASSWORD"):
                assert "value" not in kafka[name] and kafka[name]["valueFrom"]["secretKeyRef"], name


def test_secrets_are_referenced_by_name_never_carried(manifests: list[Manifest]) -> None:
    assert of_kind(manifests, "Secret") == {}
    for _, deployment in workers(manifests):
        for item in container(deployment)["env"]:
            secret_like = any(word in item["name"] for word in ("PASSWORD", "API_KEY", "USERNAME"))
            if secret_like:
                assert set(item) == {"name", "valueFrom"}, item


def test_api_keys_and_allow_lists_reach_the_kinds_that_call_lms() -> None:
    docs = list(_render(EXAMPLE))
    for kind, deployment in workers(docs):
        spec = container(deployment)
        env = {item["name"]: item for item in spec["env"]}
        args = spec["args"]
        if kind in {"predict", "optimize"}:
            assert env["OPENAI_API_KEY"]["valueFrom"]["secretKeyRef"] == {
                "name": "dspex-lm",
                "key": "openai-api-key",
            }
            assert args[args.index("--allow-key-env") + 1] == "OPENAI_API_KEY"
            assert args[args.index("--allow-api-base") + 1] == "https://api.openai.com/v1"
        else:
            assert "OPENAI_API_KEY" not in env and "--allow-key-env" not in args, kind


# ---------------------------------------------------------------------------------- scaling


def test_keda_scales_predictors_and_scorers_on_their_groups_lag_up_to_the_partitions() -> None:
    scaled = of_kind(list(_render(None)), "ScaledObject")
    assert sorted(scaled) == ["dspex-predict", "dspex-score"]
    for kind, topic in INPUT_TOPICS.items():
        spec = scaled[f"dspex-{kind}"]["spec"]
        (trigger,) = spec["triggers"]
        assert trigger["type"] == "kafka"
        assert trigger["metadata"]["bootstrapServers"] == "kafka:9092"
        assert trigger["metadata"]["consumerGroup"] == f"dspex.{kind}"
        assert trigger["metadata"]["topic"] == f"dspex.{topic}"
        assert int(trigger["metadata"]["lagThreshold"]) > 0
        assert spec["scaleTargetRef"]["name"] == f"dspex-{kind}"
        # what dspex creates by default: a member more than partitions would have nothing to do
        assert spec["maxReplicaCount"] == DEFAULT_PARTITIONS[topic]  # type: ignore[index]


def test_autoscaled_deployments_leave_replicas_to_keda(manifests: list[Manifest]) -> None:
    for kind, deployment in workers(manifests):
        assert ("replicas" in deployment["spec"]) == (kind not in INPUT_TOPICS), kind


def test_scaler_credentials_come_from_the_workers_secrets() -> None:
    docs = list(_render(EXAMPLE))
    (auth,) = of_kind(docs, "TriggerAuthentication").values()
    refs = {ref["parameter"]: (ref["name"], ref["key"]) for ref in auth["spec"]["secretTargetRef"]}
    assert refs == {
        "username": ("dspex-kafka-sasl", "username"),
        "password": ("dspex-kafka-sasl", "password"),
        "ca": ("dspex-kafka-tls", "ca.crt"),
    }
    for scaled in of_kind(docs, "ScaledObject").values():
        (trigger,) = scaled["spec"]["triggers"]
        assert trigger["metadata"]["sasl"] == "scram_sha512" and trigger["metadata"]["tls"] == "enable"
        assert trigger["authenticationRef"]["name"] == auth["metadata"]["name"]
    predict = of_kind(docs, "ScaledObject")["dspex-predict"]["spec"]
    assert predict["maxReplicaCount"] == 32  # the example's kafka.partitions.tasks


# ---------------------------------------------------------------------------------- around the pods


def test_every_component_has_a_disruption_budget(manifests: list[Manifest]) -> None:
    budgets = of_kind(manifests, "PodDisruptionBudget")
    deployments = of_kind(manifests, "Deployment")
    assert sorted(budgets) == sorted(deployments)
    for name, budget in budgets.items():
        pod_labels = deployments[name]["spec"]["template"]["metadata"]["labels"]
        assert budget["spec"]["selector"]["matchLabels"].items() <= pod_labels.items(), name


def test_network_policies_admit_only_the_metrics_and_dashboard_ports(manifests: list[Manifest]) -> None:
    policies = of_kind(manifests, "NetworkPolicy")
    assert sorted(policies) == ["dspex-dashboard", "dspex-workers"]
    selected = policies["dspex-workers"]["spec"]["podSelector"]["matchLabels"]
    for kind, deployment in workers(manifests):
        assert selected.items() <= deployment["spec"]["template"]["metadata"]["labels"].items(), kind
    (rule,) = policies["dspex-workers"]["spec"]["ingress"]
    assert rule["ports"] == [{"port": "metrics", "protocol": "TCP"}]
    (rule,) = policies["dspex-dashboard"]["spec"]["ingress"]
    assert rule["ports"] == [{"port": "http", "protocol": "TCP"}]


def test_the_pod_monitor_selects_every_worker_and_no_dashboard() -> None:
    docs = list(_render(EXAMPLE))
    (monitor,) = of_kind(docs, "PodMonitor").values()
    selector = monitor["spec"]["selector"]["matchLabels"]
    for name, deployment in of_kind(docs, "Deployment").items():
        labels = deployment["spec"]["template"]["metadata"]["labels"]
        assert (selector.items() <= labels.items()) == (name != "dspex-dashboard"), name
    assert monitor["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    assert of_kind(list(_render(None)), "PodMonitor") == {}
