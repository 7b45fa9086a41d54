#!/usr/bin/env python3
"""Validates the Kubernetes manifests and the monitoring files, offline.

Run by `make k8s-validate` (scripts/validate-deploy.sh k8s), which installs the Python tools.

1. Renders every variant with `kubectl kustomize`: the overlays dev and prod, and prod with
   components/forwarder-hpa (KEDA's ScaledObject replaced by an HPA).
2. Checks every built-in object against the Kubernetes OpenAPI schemas bundled with
   kubernetes-validate (strict: unknown fields are errors), for K8S_VERSION (default 1.30).
   Custom resources (KEDA, RabbitMQ Cluster Operator, Prometheus Operator, cert-manager) have
   no bundled schema: the fields this project relies on are checked here instead.
3. Checks what a schema cannot see: references between objects (ConfigMaps, Secrets and their
   keys, Services to pods and ports, Ingress to Services, autoscalers and PDBs to workloads),
   the project's rules (non-root, read-only root filesystem, probes on /livez and /readyz,
   grace period >= preStop + SHUTDOWN_TIMEOUT + margin, MIGRATE_ON_START=false, the queue KEDA
   watches is AMQP_PREFIX.forward), that every variable given to a binary is one it reads
   (.env.example), and that k8s/base/rating-map.toml is config/rating-map.example.toml.
   TLS wiring: every CA or key file a connection names (sslrootcert/sslcert/sslkey of
   DATABASE_URL, AMQP_CA_FILE, NCANTO_CA_FILE) is in a volume the container mounts; in prod
   every container with DATABASE_URL or AMQP_URL mounts the volume tls-ca; a TLS-only broker is
   reached over amqps on a name its Certificate holds; NetworkPolicies let each pod reach the
   ports of its URLs and the broker accept its AMQP port; KEDA gets the CA for amqps; the
   Secret template uses sslmode=verify-full and amqps.
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
from base64 import b64decode
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

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
# Our Deployments and their probe port: the admin listener of each, which also serves /metrics
# (ingest-api's public port never does).
SERVING = {"ingest-api": "admin", "forwarder": "admin"}
MARGIN_SECONDS = 5
CUSTOM_GROUPS = ("keda.sh/", "rabbitmq.com/", "monitoring.coreos.com/", "cert-manager.io/")
POSTGRES_CA_FILE = K8S / "overlays" / "prod" / "postgres-ca.pem"

# TLS: the volume of CA files every prod container that connects mounts (overlays/prod,
# tls-ca-volumes.yaml), and what cert-manager puts in a Certificate's Secret.
TLS_VOLUME = "tls-ca"
CERTIFICATE_SECRET_KEYS = {"tls.crt", "tls.key", "ca.crt"}
DEFAULT_PORTS = {"postgres": 5432, "postgresql": 5432, "amqp": 5672, "amqps": 5671}
# cert-manager.io/v1 Certificate fields (https://cert-manager.io/docs/reference/api-docs/): the
# API server would only drop a misspelt one, with a warning; this check fails on it offline.
CERTIFICATE_FIELDS = {
    "secretName", "dnsNames", "ipAddresses", "uris", "emailAddresses", "otherNames", "commonName",
    "literalSubject", "subject", "isCA", "duration", "renewBefore", "renewBeforePercentage",
    "issuerRef", "privateKey", "usages", "secretTemplate", "keystores", "revisionHistoryLimit",
    "additionalOutputFormats", "encodeUsagesInRequest", "nameConstraints",
}
PRIVATE_KEY_FIELDS = {"algorithm", "size", "encoding", "rotationPolicy"}
KEY_USAGES = {
    "signing", "digital signature", "content commitment", "key encipherment", "key agreement",
    "data encipherment", "cert sign", "crl sign", "encipher only", "decipher only", "any",
    "server auth", "client auth", "code signing", "email protection", "s/mime",
    "ipsec end system", "ipsec tunnel", "ipsec user", "timestamping", "ocsp signing",
    "microsoft sgc", "netscape sgc",
}
ISSUER_TYPES = {"selfSigned", "ca", "acme", "vault", "venafi"}
# RabbitmqCluster spec.tls (rabbitmq.com/v1beta1 TLSSpec).
RABBITMQ_TLS_FIELDS = {"secretName", "caSecretName", "disableNonTLSListeners"}

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
        params = {}
        for ref in spec.get("secretTargetRef", []):
            check_secret_key(index, ref.get("name"), ref.get("key"), label)
            params[ref.get("parameter")] = secret_value(index, ref.get("name"), ref.get("key"))
        host = params.get("host")
        if host and urlsplit(host).scheme == "amqps":
            # KEDA's rabbitmq scaler: amqps needs `tls: enable`, and `ca` for a private CA.
            expect(params.get("tls") == "enable", f"{label}: the host is amqps, but no parameter tls=enable")
            expect("ca" in params, f"{label}: the host is amqps, but no parameter ca (the broker's CA)")
    elif kind == "RabbitmqCluster":
        expect(isinstance(spec.get("replicas"), int) and spec["replicas"] % 2 == 1,
               f"{label}: an odd number of replicas (quorum, pause_minority)")
        expect("persistence" in spec, f"{label}: no persistence")
        tls = spec.get("tls")
        if tls is not None:
            unknown = sorted(set(tls) - RABBITMQ_TLS_FIELDS)
            expect(not unknown, f"{label}: spec.tls has unknown fields {unknown}")
            expect(isinstance(tls.get("disableNonTLSListeners", False), bool),
                   f"{label}: spec.tls.disableNonTLSListeners must be a boolean")
            secret = tls.get("secretName")
            if expect(isinstance(secret, str) and secret, f"{label}: spec.tls without secretName"):
                expect(secret in certificate_secrets(index),
                       f"{label}: spec.tls.secretName {secret} is issued by no Certificate")
    elif kind == "Certificate":
        unknown = sorted(set(spec) - CERTIFICATE_FIELDS)
        expect(not unknown, f"{label}: unknown fields {unknown}")
        expect(isinstance(spec.get("secretName"), str) and spec["secretName"], f"{label}: no spec.secretName")
        names = spec.get("dnsNames")
        if spec.get("isCA") is True:
            expect(spec.get("commonName") or names, f"{label}: a CA certificate needs a commonName")
        else:
            expect(isinstance(names, list) and names and all(isinstance(n, str) and n for n in names),
                   f"{label}: spec.dnsNames must list the names clients connect to")
        ref = spec.get("issuerRef", {})
        ref_kind, group = ref.get("kind", "Issuer"), ref.get("group", "cert-manager.io")
        if expect(bool(ref.get("name")), f"{label}: no spec.issuerRef.name") and group == "cert-manager.io":
            if expect(ref_kind in ("Issuer", "ClusterIssuer"), f"{label}: issuerRef.kind {ref_kind}"):
                # A ClusterIssuer lives outside the namespace (and this repository).
                expect(ref_kind == "ClusterIssuer" or ("Issuer", ref["name"]) in index,
                       f"{label}: unknown Issuer {ref['name']}")
        key = spec.get("privateKey", {})
        expect(set(key) <= PRIVATE_KEY_FIELDS,
               f"{label}: privateKey has unknown fields {sorted(set(key) - PRIVATE_KEY_FIELDS)}")
        expect(key.get("algorithm", "RSA") in ("RSA", "ECDSA", "Ed25519"), f"{label}: privateKey.algorithm")
        expect(set(spec.get("usages", [])) <= KEY_USAGES,
               f"{label}: unknown usages {sorted(set(spec.get('usages', [])) - KEY_USAGES)}")
        lifetimes = [go_duration(spec.get(k, "1h")) for k in ("duration", "renewBefore")]
        if expect(all(t > 0 for t in lifetimes), f"{label}: duration/renewBefore are not Go durations"):
            expect("renewBefore" not in spec or lifetimes[1] < lifetimes[0],
                   f"{label}: renewBefore must be shorter than duration")
    elif kind in ("Issuer", "ClusterIssuer"):
        types = set(spec) & ISSUER_TYPES
        expect(len(types) == 1 and set(spec) == types, f"{label}: needs exactly one of {sorted(ISSUER_TYPES)}")
        if "ca" in spec:
            secret = spec["ca"].get("secretName")
            ca = certificate_secrets(index).get(secret)
            expect(ca is not None and ca["spec"].get("isCA") is True,
                   f"{label}: spec.ca.secretName {secret} is not the Secret of a CA Certificate (isCA)")
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


def certificate_secrets(index: dict) -> dict:
    """The Secrets cert-manager makes: secretName -> its Certificate."""
    return {o["spec"].get("secretName"): o for (k, _), o in index.items() if k == "Certificate"}


def secret_keys(index: dict, name: str):
    """The keys of a Secret: rendered, issued by a Certificate, or the template's; None: unknown."""
    secret = index.get(("Secret", name))
    if secret is not None:
        return set(secret.get("data", {})) | set(secret.get("stringData", {}))
    if name in certificate_secrets(index):
        return CERTIFICATE_SECRET_KEYS
    if name == SECRET:  # made outside kustomize (prod): its keys are the template's
        return template_secret_keys()
    return None


def secret_value(index: dict, name: str, key: str):
    """A Secret's value when this repository holds it (dev literals, the prod template)."""
    secret = index.get(("Secret", name))
    if secret is not None:
        if key in secret.get("stringData", {}):
            return secret["stringData"][key]
        if key in secret.get("data", {}):
            return b64decode(secret["data"][key]).decode()
        return None
    if name == SECRET:
        return yaml.safe_load(SECRET_TEMPLATE.read_text()).get("stringData", {}).get(key)
    return None


def check_secret_key(index: dict, name: str, key: str, label: str) -> None:
    keys = secret_keys(index, name)
    if keys is None:
        fail(f"{label}: unknown Secret {name}")
    else:
        where = " (secret.example.yaml)" if name == SECRET and ("Secret", name) not in index else ""
        expect(key in keys, f"{label}: Secret {name}{where} has no key {key}")


def go_duration(text) -> float:
    """Seconds of a Go duration (cert-manager's duration, renewBefore); -1 when malformed."""
    parts = re.findall(r"(\d+(?:\.\d+)?)(h|ms|m|s)", str(text))
    if not parts or "".join(n + u for n, u in parts) != str(text):
        return -1
    return sum(float(n) * {"h": 3600, "m": 60, "s": 1, "ms": 0.001}[u] for n, u in parts)


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


# --- TLS wiring ----------------------------------------------------------------------------------


def env_values(container: dict, index: dict) -> dict:
    """The container's variables; the value, or None where this repository does not hold it."""
    values = {}
    for source in container.get("envFrom", []):
        if "configMapRef" in source:
            values.update(index.get(("ConfigMap", source["configMapRef"]["name"]), {}).get("data", {}))
    for var in container.get("env", []):
        ref = var.get("valueFrom", {})
        if "secretKeyRef" in ref:
            values[var["name"]] = secret_value(index, ref["secretKeyRef"]["name"], ref["secretKeyRef"]["key"])
        elif "configMapKeyRef" in ref:
            cm = index.get(("ConfigMap", ref["configMapKeyRef"]["name"]), {})
            values[var["name"]] = cm.get("data", {}).get(ref["configMapKeyRef"]["key"])
        else:
            values[var["name"]] = var.get("value")
    return values


def source_files(source: dict, kind: str, index: dict):
    """Files a configMap or secret volume (or projected source) holds; None: unknown object."""
    if kind == "configMap":
        cm = index.get(("ConfigMap", source.get("name")))
        keys = set(cm.get("data", {})) | set(cm.get("binaryData", {})) if cm else None
    else:
        keys = secret_keys(index, source.get("secretName", source.get("name")))
    if keys is None:
        return None
    items = source.get("items")
    if items is None:
        return keys
    return {i["path"] for i in items if i["key"] in keys}


def volume_files(volume: dict, index: dict) -> set:
    if "configMap" in volume:
        return source_files(volume["configMap"], "configMap", index) or set()
    if "secret" in volume:
        return source_files(volume["secret"], "secret", index) or set()
    if "projected" in volume:
        files = set()
        for source in volume["projected"].get("sources", []):
            for kind in ("configMap", "secret"):
                if kind in source:
                    files |= source_files(source[kind], kind, index) or set()
        return files
    return set()  # emptyDir and the like start empty


def mounted_file(path: str, container: dict, volumes: dict, index: dict) -> bool:
    """Whether a volume the container mounts puts a file at `path`."""
    for mount in container.get("volumeMounts", []):
        volume = volumes.get(mount["name"])
        if volume is None:
            continue
        root = mount["mountPath"].rstrip("/")
        if mount.get("subPath"):
            if path == root and mount["subPath"] in volume_files(volume, index):
                return True
        elif path.startswith(root + "/") and path[len(root) + 1:] in volume_files(volume, index):
            return True
    return False


def named_files(env: dict) -> list[tuple[str, str]]:
    """(what, path) of every file a connection setting names, for the binaries that use it."""
    files = []
    url = env.get("DATABASE_URL")
    if url:
        query = parse_qs(urlsplit(url).query)
        for parameter in ("sslrootcert", "sslcert", "sslkey"):
            for value in query.get(parameter, []):
                if value != "system":
                    files.append((f"DATABASE_URL's {parameter}", value))
    if "AMQP_URL" in env and env.get("AMQP_CA_FILE"):
        files.append(("AMQP_CA_FILE", env["AMQP_CA_FILE"]))
    if "NCANTO_API_KEY" in env and env.get("NCANTO_CA_FILE"):
        files.append(("NCANTO_CA_FILE", env["NCANTO_CA_FILE"]))
    return files


def check_tls_files(container: dict, spec: dict, index: dict, clabel: str, where: str) -> None:
    env = env_values(container, index)
    volumes = {v["name"]: v for v in spec.get("volumes", [])}
    for what, path in named_files(env):
        expect(mounted_file(path, container, volumes, index),
               f"{clabel}: {what} {path} is in no volume it mounts")
    if where.startswith("overlays/prod") and {"DATABASE_URL", "AMQP_URL"} & set(env):
        mount = next((m for m in container.get("volumeMounts", []) if m["name"] == TLS_VOLUME), None)
        expect(mount is not None and mount.get("readOnly") is True and TLS_VOLUME in volumes,
               f"{clabel}: connects to PostgreSQL or RabbitMQ but does not mount the volume "
               f"{TLS_VOLUME} read-only (overlays/prod/tls-ca-volumes.yaml)")


def url_port(url: str):
    parts = urlsplit(url)
    try:
        return parts.port or DEFAULT_PORTS.get(parts.scheme)
    except ValueError:
        return None


def selector_matches(selector: dict, labels: dict) -> bool:
    """A Kubernetes label selector; the empty one selects everything."""
    if not selector.get("matchLabels", {}).items() <= labels.items():
        return False
    for e in selector.get("matchExpressions", []):
        present, value = e["key"] in labels, labels.get(e["key"])
        ok_ = {"In": present and value in e.get("values", []),
               "NotIn": not present or value not in e.get("values", []),
               "Exists": present, "DoesNotExist": not present}[e["operator"]]
        if not ok_:
            return False
    return True


def admits(rule: dict, pod_labels: dict) -> bool:
    """Whether an ingress rule's `from` lets in a pod of this namespace with these labels."""
    if "from" not in rule:
        return True
    namespace = {"kubernetes.io/metadata.name": NAMESPACE}
    for peer in rule["from"]:
        if "ipBlock" in peer:
            continue
        if selector_matches(peer.get("namespaceSelector", {}), namespace) and (
                selector_matches(peer.get("podSelector", {}), pod_labels)):
            return True
    return False


def port_allowed(rules: list, port: int) -> bool:
    for rule in rules:
        if "ports" not in rule:
            return True  # every port
        for p in rule["ports"]:
            number = p.get("port")
            if number is None or number == port or (
                    isinstance(number, int) and number <= port <= p.get("endPort", 0)):
                return True
    return False


def check_tls(index: dict, where: str) -> None:
    """The broker's TLS and what reaches it, and NetworkPolicies against the connection URLs."""
    policies = [o for (k, _), o in index.items() if k == "NetworkPolicy"]
    urls = {}  # (workload label, variable) -> (URL, pod labels)
    for (kind, name), obj in index.items():
        template = pod_spec(obj)
        if template is None:
            continue
        labels = template["metadata"].get("labels", {})
        mine = [p for p in policies if "Egress" in p["spec"].get("policyTypes", [])
                and selector_matches(p["spec"]["podSelector"], labels)]
        for container in template["spec"]["containers"]:
            env = env_values(container, index)
            for variable in ("DATABASE_URL", "AMQP_URL"):
                url = env.get(variable)
                if not url:
                    continue
                urls[(f"{kind}/{name}", variable)] = (url, labels)
                port = url_port(url)
                if expect(port is not None, f"{where}: {kind}/{name}: {variable} has no port"):
                    expect(not mine or port_allowed([r for p in mine for r in p["spec"].get("egress", [])], port),
                           f"{where}: {kind}/{name}: no NetworkPolicy lets it reach port {port} ({variable})")
    for (kind, name), broker in index.items():
        if kind != "RabbitmqCluster":
            continue
        label = f"{where}: RabbitmqCluster/{name}"
        tls = broker["spec"].get("tls", {})
        certificate = certificate_secrets(index).get(tls.get("secretName"))
        pods = {"app.kubernetes.io/name": name}
        ingress = [r for p in policies if "Ingress" in p["spec"].get("policyTypes", [])
                   and selector_matches(p["spec"]["podSelector"], pods) for r in p["spec"].get("ingress", [])]
        for (workload, variable), (url, client) in urls.items():
            if variable != "AMQP_URL":
                continue
            parts = urlsplit(url)
            if tls.get("disableNonTLSListeners"):
                expect(parts.scheme == "amqps" and url_port(url) == 5671,
                       f"{label}: TLS only, but {workload} connects with {parts.scheme}:// on port {url_port(url)}")
            if parts.scheme == "amqps" and parts.hostname and parts.hostname.split(".")[0] == name:
                names = certificate["spec"].get("dnsNames", []) if certificate else []
                expect(any(dns_name_covers(n, parts.hostname) for n in names),
                       f"{label}: {workload} connects to {parts.hostname}, a name its certificate does not hold")
            expect(port_allowed([r for r in ingress if admits(r, client)], url_port(url) or 0),
                   f"{label}: no NetworkPolicy lets its pods accept {workload} on port {url_port(url)}")


def dns_name_covers(pattern: str, host: str) -> bool:
    if pattern.startswith("*."):
        return "." in host and host.split(".", 1)[1] == pattern[2:]
    return pattern == host


def check_workload(obj: dict, index: dict, where: str, documented: set[str]) -> None:
    template = pod_spec(obj)
    spec = template["spec"]
    label = f"{where}: {obj['kind']}/{obj['metadata']['name']}"
    for volume in spec.get("volumes", []):
        sources = volume.get("projected", {}).get("sources", [volume])
        for source in sources:
            if "configMap" in source:
                cm = source["configMap"]["name"]
                if expect(("ConfigMap", cm) in index, f"{label}: mounts unknown ConfigMap {cm}"):
                    keys = set(index[("ConfigMap", cm)].get("data", {}))
                    for item in source["configMap"].get("items", []):
                        expect(item["key"] in keys, f"{label}: ConfigMap {cm} has no key {item['key']}")
            if "secret" in source:
                name = source["secret"].get("secretName", source["secret"].get("name"))
                for item in source["secret"].get("items", []):
                    check_secret_key(index, name, item["key"], label)
                if not source["secret"].get("items"):
                    expect(secret_keys(index, name) is not None, f"{label}: mounts unknown Secret {name}")
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
        check_tls_files(container, spec, index, clabel, where)
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
            annotations = obj["spec"]["template"]["metadata"].get("annotations", {})
            if "prometheus.io/port" in annotations:
                admin = [p.get("containerPort") for p in container.get("ports", []) if p.get("name") == port]
                expect([int(annotations["prometheus.io/port"])] == admin,
                       f"{clabel}: prometheus.io/port must be the {port} port {admin}")
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
    check_tls(index, where)
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
    # TLS in prod: the server's certificate and host name checked on both links.
    database = parse_qs(urlsplit(template["stringData"].get("DATABASE_URL", "")).query)
    expect(database.get("sslmode") == ["verify-full"] and database.get("sslrootcert"),
           "base/secret.example.yaml: DATABASE_URL needs sslmode=verify-full&sslrootcert=...")
    expect(urlsplit(template["stringData"].get("AMQP_URL", "")).scheme == "amqps",
           "base/secret.example.yaml: AMQP_URL must be amqps://")
    ca_bundle = POSTGRES_CA_FILE.read_text()
    expect("-----BEGIN CERTIFICATE-----" in ca_bundle or ca_bundle.startswith("PLACEHOLDER"),
           f"{POSTGRES_CA_FILE.relative_to(REPO)}: neither a PEM certificate bundle nor the placeholder")

    total = 0
    for where, objects in variants().items():
        count = check_variant(where, objects)
        total += count
        print(f"  {where}: {count} objects")
    check_monitoring()

    for message in failures:
        print(f"  FAIL  {message}")
    if "-----BEGIN CERTIFICATE-----" not in POSTGRES_CA_FILE.read_text():
        print(f"  NOTE  {POSTGRES_CA_FILE.relative_to(REPO)} is still the placeholder: put the PostgreSQL "
              "provider's CA bundle there before deploying prod")
    print(f"k8s: {total} objects rendered and validated (Kubernetes {K8S_VERSION} schemas, strict); "
          f"alerts and dashboard checked")
    print(f"k8s-validate: {passed} passed, {len(failures)} failed")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
