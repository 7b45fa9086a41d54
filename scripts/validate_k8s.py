#!/usr/bin/env python3
"""Validates the Kubernetes manifests and the monitoring files, offline.

Run by `make k8s-validate` (scripts/validate-deploy.sh k8s), which installs the Python tools.

1. Renders every variant with `kubectl kustomize`: the overlays dev and prod, and prod with
   components/forwarder-hpa (KEDA's ScaledObject replaced by an HPA).
2. Checks every built-in object against the Kubernetes OpenAPI schemas bundled with
   kubernetes-validate (strict: unknown fields are errors), for K8S_VERSION (default 1.30).
   Custom resources (KEDA, RabbitMQ Cluster Operator, Prometheus Operator) have no bundled
   schema: the fields this project relies on are checked here instead.
3. Checks what a schema cannot see: references between objects (ConfigMaps, Secrets and their
   keys, Services to pods and ports, Ingress to Services, autoscalers and PDBs to workloads),
   the project's rules (non-root, read-only root filesystem, probes on /livez and /readyz,
   grace period >= preStop + SHUTDOWN_TIMEOUT + margin, MIGRATE_ON_START=false, the queue KEDA
   watches is AMQP_PREFIX.forward), that every variable given to a binary is one it reads
   (.env.example), and that k8s/base/rating-map.toml is config/rating-map.example.toml.
4. Monitoring: deploy/monitoring/alerts.yml and grafana-dashboard.json parse, have the fields
   Prometheus and Grafana need, name only metrics (and labels) the binaries export, and the
   PrometheusRule of components/monitoring holds the same rules as alerts.yml.

`--write-prometheusrule` regenerates k8s/components/monitoring/prometheusrule.yaml from
alerts.yml.
"""

import json
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parent.parent
K8S = REPO / "k8s"
MONITORING = REPO / "deploy" / "monitoring"
ALERTS = MONITORING / "alerts.yml"
DASHBOARD = MONITORING / "grafana-dashboard.json"
PROMETHEUS_RULE = K8S / "components" / "monitoring" / "prometheusrule.yaml"
SECRET_TEMPLATE = K8S / "base" / "secret.example.yaml"
K8S_VERSION = os.environ.get("K8S_VERSION", "1.30.0")

NAMESPACE = "interaction-logger"
SECRET = "interaction-logger-secrets"
OUR_IMAGES = ("interaction-logger/", "/interaction-logger/")
SERVING = {"ingest-api": "http", "forwarder": "admin"}  # our Deployments and their probe port
MARGIN_SECONDS = 5
CUSTOM_GROUPS = ("keda.sh/", "rabbitmq.com/", "monitoring.coreos.com/")

failures: list[str] = []
passed = 0


def fail(message: str) -> None:
    failures.append(message)


def ok() -> None:
    global passed
    passed += 1


def expect(condition: bool, message: str) -> bool:
    if condition:
        ok()
    else:
        fail(message)
    return condition


# --- rendering ------------------------------------------------------------------------------------


def kustomize(path: Path) -> list[dict]:
    result = subprocess.run(["kubectl", "kustomize", str(path)], capture_output=True, text=True)
    if result.returncode != 0:
        fail(f"kubectl kustomize {path.relative_to(REPO) if path.is_relative_to(REPO) else path}: "
             f"{result.stderr.strip()}")
        return []
    return [d for d in yaml.safe_load_all(result.stdout) if d]


def variants() -> dict[str, list[dict]]:
    rendered = {
        "overlays/dev": kustomize(K8S / "overlays" / "dev"),
        "overlays/prod": kustomize(K8S / "overlays" / "prod"),
    }
    # kustomize wants relative paths: a throwaway kustomization next to nothing, pointing back.
    with tempfile.TemporaryDirectory() as tmp:
        rel = lambda p: os.path.relpath(p, tmp)  # noqa: E731
        Path(tmp, "kustomization.yaml").write_text(
            f"resources: [{rel(K8S / 'overlays' / 'prod')}]\n"
            f"components: [{rel(K8S / 'components' / 'forwarder-hpa')}]\n"
        )
        rendered["overlays/prod + components/forwarder-hpa"] = kustomize(Path(tmp))
    return rendered


# --- schemas ----------------------------------------------------------------------------------------


def check_schema(obj: dict, where: str) -> None:
    import kubernetes_validate
    from kubernetes_validate.utils import SchemaNotFoundError

    try:
        kubernetes_validate.validate(obj, K8S_VERSION, strict=True)
        ok()
    except kubernetes_validate.ValidationError as e:
        path = ".".join(str(p) for p in e.path)
        fail(f"{where}: {obj['kind']}/{obj['metadata']['name']}: {path}: {e.message}")
    except SchemaNotFoundError as e:
        fail(f"{where}: {e.message}")


def check_custom(obj: dict, index: dict, where: str) -> None:
    kind, name, spec = obj["kind"], obj["metadata"]["name"], obj.get("spec", {})
    label = f"{where}: {kind}/{name}"
    if kind == "ScaledObject":
        target = spec.get("scaleTargetRef", {}).get("name")
        expect(("Deployment", target) in index, f"{label}: scales unknown Deployment {target}")
        expect(spec.get("minReplicaCount", 0) <= spec.get("maxReplicaCount", 100),
               f"{label}: minReplicaCount above maxReplicaCount")
        for trigger in spec.get("triggers", []):
            meta = trigger.get("metadata", {})
            if trigger.get("type") == "rabbitmq":
                prefix = config_value(index, "AMQP_PREFIX") or "interactions"
                expect(meta.get("queueName") == f"{prefix}.forward",
                       f"{label}: watches queue {meta.get('queueName')}, the forwarder consumes {prefix}.forward")
                expect(meta.get("mode") in ("QueueLength", "MessageRate"), f"{label}: unknown mode")
                expect(str(meta.get("value", "")).isdigit(), f"{label}: value must be a number in a string")
            auth = trigger.get("authenticationRef", {}).get("name")
            expect(("TriggerAuthentication", auth) in index, f"{label}: unknown TriggerAuthentication {auth}")
    elif kind == "TriggerAuthentication":
        for ref in spec.get("secretTargetRef", []):
            check_secret_key(index, ref.get("name"), ref.get("key"), label)
    elif kind == "RabbitmqCluster":
        expect(isinstance(spec.get("replicas"), int) and spec["replicas"] % 2 == 1,
               f"{label}: an odd number of replicas (quorum, pause_minority)")
        expect("persistence" in spec, f"{label}: no persistence")
    elif kind == "ServiceMonitor":
        selector = spec.get("selector", {}).get("matchLabels", {})
        services = [o for (k, _), o in index.items() if k == "Service"
                    and selector.items() <= o["metadata"].get("labels", {}).items()]
        if expect(services, f"{label}: selects no Service"):
            ports = {p.get("name") for s in services for p in s["spec"]["ports"]}
            for endpoint in spec.get("endpoints", []):
                expect(endpoint.get("port") in ports, f"{label}: no Service port {endpoint.get('port')}")
    elif kind == "PrometheusRule":
        expect(spec.get("groups") == alert_groups(), f"{label}: differs from deploy/monitoring/alerts.yml; "
               "regenerate: python3 scripts/validate_k8s.py --write-prometheusrule")
    else:
        fail(f"{label}: a custom resource this check does not know")


# --- cross-references and rules ---------------------------------------------------------------------


def documented_variables() -> set[str]:
    names = set()
    for line in (REPO / ".env.example").read_text().splitlines():
        m = re.match(r"^#?\s*([A-Z][A-Z0-9_]*)=", line)
        if m:
            names.add(m.group(1))
    return names


def template_secret_keys() -> set[str]:
    return set(yaml.safe_load(SECRET_TEMPLATE.read_text()).get("stringData", {}))


def config_value(index: dict, key: str):
    for (kind, name), obj in index.items():
        if kind == "ConfigMap" and name.startswith("interaction-logger-config"):
            return obj.get("data", {}).get(key)
    return None


def check_secret_key(index: dict, name: str, key: str, label: str) -> None:
    secret = index.get(("Secret", name))
    if secret is not None:
        keys = set(secret.get("data", {})) | set(secret.get("stringData", {}))
        expect(key in keys, f"{label}: Secret {name} has no key {key}")
    elif name == SECRET:  # made outside kustomize (prod): its keys are the template's
        expect(key in template_secret_keys(), f"{label}: {SECRET} (secret.example.yaml) has no key {key}")
    else:
        fail(f"{label}: unknown Secret {name}")


def pod_spec(obj: dict):
    kind = obj["kind"]
    if kind in ("Deployment", "StatefulSet", "Job"):
        return obj["spec"]["template"]
    if kind == "CronJob":
        return obj["spec"]["jobTemplate"]["spec"]["template"]
    return None


def seconds(duration: str) -> int:
    m = re.fullmatch(r"(\d+)(ms|s|m|h)", duration or "")
    if not m:
        return -1
    n, unit = int(m.group(1)), m.group(2)
    return {"ms": n // 1000, "s": n, "m": n * 60, "h": n * 3600}[unit]


def check_workload(obj: dict, index: dict, where: str, documented: set[str]) -> None:
    template = pod_spec(obj)
    spec = template["spec"]
    label = f"{where}: {obj['kind']}/{obj['metadata']['name']}"
    for volume in spec.get("volumes", []):
        if "configMap" in volume:
            cm = volume["configMap"]["name"]
            expect(("ConfigMap", cm) in index, f"{label}: mounts unknown ConfigMap {cm}")
    for container in spec.get("containers", []):
        clabel = f"{label}/{container['name']}"
        ours = container["image"].startswith(OUR_IMAGES) or any(i in container["image"] for i in OUR_IMAGES)
        env_names = set()
        for source in container.get("envFrom", []):
            if "configMapRef" in source:
                cm = source["configMapRef"]["name"]
                if expect(("ConfigMap", cm) in index, f"{clabel}: unknown ConfigMap {cm}"):
                    env_names |= set(index[("ConfigMap", cm)].get("data", {}))
            if "secretRef" in source:
                fail(f"{clabel}: envFrom a whole Secret; give each container only its keys (secretKeyRef)")
        for var in container.get("env", []):
            env_names.add(var["name"])
            ref = var.get("valueFrom", {}).get("secretKeyRef")
            if ref:
                check_secret_key(index, ref["name"], ref["key"], clabel)
            ref = var.get("valueFrom", {}).get("configMapKeyRef")
            if ref:
                cm = index.get(("ConfigMap", ref["name"]))
                expect(cm is not None and ref["key"] in cm.get("data", {}),
                       f"{clabel}: unknown ConfigMap key {ref['name']}/{ref['key']}")
        if not ours:
            continue
        unknown = sorted(env_names - documented)
        expect(not unknown, f"{clabel}: sets {unknown}, which no binary reads (not in .env.example)")
        sc = container.get("securityContext", {})
        pod_sc = spec.get("securityContext", {})
        expect(pod_sc.get("runAsNonRoot") is True or sc.get("runAsNonRoot") is True, f"{clabel}: not runAsNonRoot")
        expect(sc.get("readOnlyRootFilesystem") is True, f"{clabel}: root filesystem not read-only")
        expect(sc.get("allowPrivilegeEscalation") is False, f"{clabel}: allowPrivilegeEscalation not false")
        expect(sc.get("capabilities", {}).get("drop") == ["ALL"], f"{clabel}: capabilities not dropped")
        resources = container.get("resources", {})
        expect("cpu" in resources.get("requests", {}) and "memory" in resources.get("limits", {}),
               f"{clabel}: needs a CPU request and a memory limit")

        app = obj["metadata"]["name"]
        if obj["kind"] == "Deployment" and app in SERVING:
            port = SERVING[app]
            expect(any(p.get("name") == port for p in container.get("ports", [])), f"{clabel}: no port {port}")
            live = container.get("livenessProbe", {}).get("httpGet", {})
            ready = container.get("readinessProbe", {}).get("httpGet", {})
            expect(live.get("path") == "/livez" and live.get("port") == port, f"{clabel}: liveness must be /livez")
            expect(ready.get("path") == "/readyz" and ready.get("port") == port, f"{clabel}: readiness must be /readyz")
            command = container.get("lifecycle", {}).get("preStop", {}).get("exec", {}).get("command", [])
            pre_stop = int(command[1]) if len(command) == 2 and command[0] == "sleep" else -1
            expect(pre_stop > 0, f"{clabel}: needs a preStop [sleep, N]")
            shutdown = seconds(config_value(index, "SHUTDOWN_TIMEOUT") or "20s")
            grace = spec.get("terminationGracePeriodSeconds", 30)
            expect(grace >= pre_stop + shutdown + MARGIN_SECONDS,
                   f"{clabel}: terminationGracePeriodSeconds {grace} < preStop {pre_stop} + "
                   f"SHUTDOWN_TIMEOUT {shutdown} + {MARGIN_SECONDS}")
            expect(str(config_value(index, "MIGRATE_ON_START")).lower() == "false",
                   f"{clabel}: MIGRATE_ON_START must be false (the migration Job runs them)")
            expect("podAntiAffinity" in spec.get("affinity", {}), f"{clabel}: no pod anti-affinity")
            expect(spec.get("automountServiceAccountToken") is False, f"{clabel}: mounts a service account token")


def matches(selector: dict, labels: dict) -> bool:
    return bool(selector) and selector.items() <= labels.items()


def check_references(objects: list[dict], index: dict, where: str) -> None:
    pods = [(o, pod_spec(o)) for o in objects if pod_spec(o) is not None]
    for obj in objects:
        kind, name = obj["kind"], obj["metadata"]["name"]
        label = f"{where}: {kind}/{name}"
        if obj.get("metadata", {}).get("namespace") not in (None, NAMESPACE) or (
            kind != "Namespace" and obj["metadata"].get("namespace") != NAMESPACE
        ):
            fail(f"{label}: not in namespace {NAMESPACE}")
        if kind == "Service":
            selected = [t for _, t in pods if matches(obj["spec"].get("selector", {}), t["metadata"].get("labels", {}))]
            if expect(selected, f"{label}: selects no pod"):
                ports = {p.get("name") for t in selected for c in t["spec"]["containers"] for p in c.get("ports", [])}
                for port in obj["spec"]["ports"]:
                    target = port.get("targetPort")
                    expect(not isinstance(target, str) or target in ports, f"{label}: no container port {target}")
        elif kind == "Ingress":
            for rule in obj["spec"].get("rules", []):
                for path in rule["http"]["paths"]:
                    backend = path["backend"]["service"]
                    service = index.get(("Service", backend["name"]))
                    if expect(service is not None, f"{label}: unknown Service {backend['name']}"):
                        names = {p.get("name") for p in service["spec"]["ports"]}
                        expect(backend["port"].get("name") in names, f"{label}: Service has no port {backend['port']}")
                    expect(path["path"] not in ("/metrics", "/"), f"{label}: routes {path['path']} to the internet")
        elif kind == "HorizontalPodAutoscaler":
            target = obj["spec"]["scaleTargetRef"]
            expect((target["kind"], target["name"]) in index, f"{label}: scales unknown {target['kind']}/{target['name']}")
            deployment = index.get((target["kind"], target["name"]))
            if deployment:
                requests = deployment["spec"]["template"]["spec"]["containers"][0].get("resources", {}).get("requests", {})
                expect("cpu" in requests, f"{label}: scales on CPU but the target has no CPU request")
        elif kind == "PodDisruptionBudget":
            selector = obj["spec"]["selector"]["matchLabels"]
            expect(any(matches(selector, t["metadata"].get("labels", {})) for _, t in pods), f"{label}: selects no pod")
        elif kind == "Job" and name == "migrate":
            args = obj["spec"]["template"]["spec"]["containers"][0].get("args")
            expect(args == ["migrate"], f"{label}: must run `ingest-api migrate`")
        elif kind == "CronJob" and name == "purge":
            args = obj["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0].get("args", [])
            expect(args[:2] == ["purge", "--older-than"], f"{label}: must run `forwarder purge --older-than`")
    expect(("NetworkPolicy", "default-deny") in index, f"{where}: no default-deny NetworkPolicy")
    kinds = {k for k, _ in index}
    expect(("ScaledObject" in kinds) != (("HorizontalPodAutoscaler", "forwarder") in index),
           f"{where}: the forwarder needs exactly one autoscaler (KEDA or the HPA component)")


def check_replay_job(objects: list[dict], index: dict, where: str, documented: set[str]) -> None:
    """The Job scripts/k8s-replay-job.py makes from this variant's forwarder Deployment."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("replay_job", REPO / "scripts" / "k8s-replay-job.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    job = module.job_from(index[("Deployment", "forwarder")],
                          ["--tenant", "acme", "--since", "2026-11-20T00:00:00Z"], "replay-acme-20261121000000")
    label = f"{where}: replay Job"
    check_schema(job, label)
    check_workload(job, index, label, documented)
    labels = job["spec"]["template"]["metadata"]["labels"]
    for (kind, name), obj in index.items():
        if kind in ("Service", "PodDisruptionBudget"):
            selector = obj["spec"].get("selector", {})
            selector = selector.get("matchLabels", selector)
            expect(not matches(selector, labels), f"{label}: {kind}/{name} would select the replay pod")
    policies = [o for (k, _), o in index.items() if k == "NetworkPolicy"
                and matches(o["spec"]["podSelector"].get("matchLabels", {}), labels)]
    ports = {p["port"] for o in policies for rule in o["spec"].get("egress", []) for p in rule.get("ports", [])}
    expect({5432, 443} <= ports, f"{label}: no NetworkPolicy lets it reach PostgreSQL and Ncanto")


def check_variant(where: str, objects: list[dict]) -> int:
    if not objects:
        return 0
    index = {}
    for obj in objects:
        key = (obj["kind"], obj["metadata"]["name"])
        expect(key not in index, f"{where}: {key} twice")
        index[key] = obj
    documented = documented_variables()
    for obj in objects:
        if obj["apiVersion"].startswith(CUSTOM_GROUPS):
            check_custom(obj, index, where)
        else:
            check_schema(obj, where)
        if pod_spec(obj) is not None:
            check_workload(obj, index, where, documented)
    check_references(objects, index, where)
    check_replay_job(objects, index, where, documented)
    return len(objects)


# --- monitoring -----------------------------------------------------------------------------------------


def alert_groups():
    return yaml.safe_load(ALERTS.read_text())["groups"]


def exported_metrics() -> tuple[set[str], set[str]]:
    """Metric names the binaries register, and the label names they use."""
    names, labels = set(), {"quantile"}
    for path in (REPO / "crates").glob("*/src/**/*.rs"):
        text = path.read_text()
        for kind, name in re.findall(r"metrics::(counter|gauge|histogram)!\(\s*\"([a-z_]+)\"", text):
            names.add(name)
            if kind == "histogram":  # rendered as a summary
                names |= {f"{name}_sum", f"{name}_count"}
        calls = r"metrics::(?:counter|gauge|histogram)!\((.*?)\)\s*\.\s*(?:increment|set|record|absolute)"
        for call in re.findall(calls, text, re.S):
            labels |= set(re.findall(r"\"([a-z_]+)\"\s*=>", call))
    return names, labels


PROMQL_WORDS = {
    "sum", "max", "min", "avg", "count", "rate", "increase", "delta", "deriv", "irate", "by",
    "without", "and", "or", "unless", "on", "ignoring", "group_left", "group_right",
    "histogram_quantile", "absent", "topk", "bottomk", "clamp_min", "clamp_max", "abs", "time",
    "bool", "offset", "vector", "scalar", "label_replace", "predict_linear", "avg_over_time",
    "max_over_time", "min_over_time", "humanize",
}


def check_promql(expr: str, where: str, metrics: set[str], labels: set[str]) -> None:
    stripped = re.sub(r'"[^"]*"', '""', expr)
    pairs = {"(": ")", "[": "]", "{": "}"}
    stack = []
    for ch in stripped:
        if ch in pairs:
            stack.append(pairs[ch])
        elif ch in pairs.values():
            if not stack or stack.pop() != ch:
                fail(f"{where}: unbalanced {ch} in {expr!r}")
                return
    if not expect(not stack, f"{where}: unclosed brackets in {expr!r}"):
        return
    for selector in re.findall(r"\{([^}]*)\}", stripped):
        for name in re.findall(r"([a-zA-Z_]+)\s*(?:=~|!~|!=|=)", selector):
            expect(name in labels, f"{where}: label {name} is not one the binaries export")
    without_selectors = re.sub(r"\{[^}]*\}|\[[^\]]*\]", "", stripped)
    without_groupings = re.sub(r"\b(?:by|without|on|ignoring)\s*\([^)]*\)", "", without_selectors)
    for word in re.findall(r"[a-zA-Z_][a-zA-Z0-9_]*", without_groupings):
        if word in PROMQL_WORDS or word.startswith("__"):
            continue
        expect(word in metrics, f"{where}: metric {word} is not exported by ingest-api or forwarder")


def check_monitoring() -> None:
    metrics, labels = exported_metrics()
    expect(len(metrics) > 20, "monitoring: found no metrics in crates/ (did the macros change?)")
    groups = alert_groups()
    names = set()
    for group in groups:
        for rule in group["rules"]:
            where = f"alerts.yml: {rule.get('alert', '?')}"
            expect(rule.get("alert") and rule["alert"] not in names, f"{where}: missing or repeated name")
            names.add(rule.get("alert"))
            expect(isinstance(rule.get("expr"), str), f"{where}: no expr")
            expect(rule.get("labels", {}).get("severity") in ("warning", "critical"), f"{where}: severity")
            expect("summary" in rule.get("annotations", {}), f"{where}: no summary")
            expect(re.fullmatch(r"\d+[smh]", str(rule.get("for", "0s"))) is not None, f"{where}: bad `for`")
            check_promql(rule.get("expr", ""), where, metrics, labels)

    dashboard = json.loads(DASHBOARD.read_text())
    ids = [p["id"] for p in dashboard["panels"]]
    expect(len(ids) == len(set(ids)), "grafana-dashboard.json: panel ids repeat")
    expect(any(v["name"] == "datasource" for v in dashboard["templating"]["list"]),
           "grafana-dashboard.json: no datasource variable")
    for panel in dashboard["panels"]:
        where = f"grafana-dashboard.json: {panel['title']}"
        grid = panel["gridPos"]
        expect(0 <= grid["x"] and grid["x"] + grid["w"] <= 24, f"{where}: off the 24-column grid")
        if panel["type"] == "row":
            continue
        expect(panel["targets"], f"{where}: no query")
        for target in panel["targets"]:
            expr = target["expr"].replace("$__rate_interval", "5m")
            check_promql(expr, where, metrics, labels)


def write_prometheus_rule() -> None:
    class Dumper(yaml.SafeDumper):
        pass

    def text(dumper, data):
        style = "|" if "\n" in data else None
        return dumper.represent_scalar("tag:yaml.org,2002:str", data, style=style)

    Dumper.add_representer(str, text)
    doc = {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "PrometheusRule",
        "metadata": {"name": "interaction-logger",
                     "labels": {"app.kubernetes.io/name": "interaction-logger", "role": "alert-rules"}},
        "spec": {"groups": alert_groups()},
    }
    head = ("# The rules of deploy/monitoring/alerts.yml for the Prometheus Operator. Generated from that\n"
            "# file — edit it, then regenerate this one: `make k8s-validate` fails while they differ (and\n"
            "# prints the command).\n")
    PROMETHEUS_RULE.write_text(head + yaml.dump(doc, Dumper=Dumper, sort_keys=False, width=100))
    print(f"wrote {PROMETHEUS_RULE.relative_to(REPO)}")


def main() -> int:
    if "--write-prometheusrule" in sys.argv:
        write_prometheus_rule()
        return 0
    expect((K8S / "base" / "rating-map.toml").read_bytes()
           == (REPO / "config" / "rating-map.example.toml").read_bytes(),
           "k8s/base/rating-map.toml differs from config/rating-map.example.toml: "
           "cp config/rating-map.example.toml k8s/base/rating-map.toml")
    template = yaml.safe_load(SECRET_TEMPLATE.read_text())
    check_schema(template, "base/secret.example.yaml")
    expect(all("CHANGE-ME" in v for v in template["stringData"].values()),
           "base/secret.example.yaml: every value must be a CHANGE-ME placeholder")

    total = 0
    for where, objects in variants().items():
        count = check_variant(where, objects)
        total += count
        print(f"  {where}: {count} objects")
    check_monitoring()

    for message in failures:
        print(f"  FAIL  {message}")
    print(f"k8s: {total} objects rendered and validated (Kubernetes {K8S_VERSION} schemas, strict); "
          f"alerts and dashboard checked")
    print(f"k8s-validate: {passed} passed, {len(failures)} failed")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
