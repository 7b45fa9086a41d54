#!/usr/bin/env python3
"""Checks deploy/docker-compose.yml and deploy/Dockerfile without a Docker engine.

Run by `make compose-validate` (scripts/validate-deploy.sh compose), after the compose file has
passed the compose-spec JSON schema (check-jsonschema's vendored `vendor.compose-spec`). The
schema knows the format; this knows the project: what a schema cannot see, and what a typo
would break only at `docker compose up` time.

Compose: every depends_on names a service, with a known condition; a service others wait on
with service_completed_successfully is a one-shot that does not restart; build targets exist
in the Dockerfile; bind-mounted files exist; every variable given to the project's binaries is
one they read (listed in .env.example); the gateway gets every variable its template uses;
replicated services publish no fixed host port and have no container_name.

Dockerfile: the targets ingest-api, forwarder and ncanto-mock exist; each runtime stage is
built from the slim runtime base (no compiler, no cargo), runs as a numeric non-root user and
has a HEALTHCHECK and an exec-form ENTRYPOINT.
"""

import re
import sys
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parent.parent
COMPOSE = REPO / "deploy" / "docker-compose.yml"
DOCKERFILE = REPO / "deploy" / "Dockerfile"
GATEWAY_TEMPLATE = REPO / "deploy" / "nginx" / "gateway.conf.template"
ENV_EXAMPLE = REPO / ".env.example"

BINARY_TARGETS = ("ingest-api", "forwarder", "ncanto-mock")
CONDITIONS = {"service_started", "service_healthy", "service_completed_successfully"}

errors: list[str] = []


def error(message: str) -> None:
    errors.append(message)


def documented_variables() -> set[str]:
    """Variable names of .env.example (set or commented out)."""
    names = set()
    for line in ENV_EXAMPLE.read_text().splitlines():
        m = re.match(r"^#?\s*([A-Z][A-Z0-9_]*)=", line)
        if m:
            names.add(m.group(1))
    return names


def dockerfile_stages() -> dict[str, list[tuple[str, str]]]:
    """Stage name -> its instructions (keyword, arguments), continuation lines joined."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    stages: dict[str, list[tuple[str, str]]] = {}
    current = None
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        keyword, _, args = line.partition(" ")
        keyword = keyword.upper()
        if keyword == "FROM":
            m = re.match(r"(\S+)(?:\s+AS\s+(\S+))?", args.strip(), re.IGNORECASE)
            if not m:
                error(f"Dockerfile: unreadable FROM {args!r}")
                continue
            current = m.group(2) or f"stage{len(stages)}"
            stages[current] = [("FROM", m.group(1))]
        elif current is not None:
            stages[current].append((keyword, args.strip()))
    return stages


def check_dockerfile() -> set[str]:
    stages = dockerfile_stages()
    for target in BINARY_TARGETS:
        if target not in stages:
            error(f"Dockerfile: no stage `{target}`")
            continue
        instructions = stages[target]
        base = instructions[0][1]
        if base != "runtime":
            error(f"Dockerfile: `{target}` must be built FROM runtime, not {base}")
        if not any(k == "HEALTHCHECK" for k, _ in instructions):
            error(f"Dockerfile: `{target}` has no HEALTHCHECK")
        entry = [a for k, a in instructions if k == "ENTRYPOINT"]
        if not entry or not entry[-1].startswith("["):
            error(f"Dockerfile: `{target}` needs an exec-form ENTRYPOINT (signals reach the binary)")
        copies = [a for k, a in instructions if k == "COPY"]
        if not any(f"/{target}" in a and "--from=builder" in a for a in copies):
            error(f"Dockerfile: `{target}` does not copy its binary from the builder")
    runtime = stages.get("runtime")
    if runtime is None:
        error("Dockerfile: no `runtime` stage")
    else:
        base = runtime[0][1]
        if "rust" in base or "chef" in base:
            error(f"Dockerfile: the runtime stage is built on {base}, which has build tools")
        users = [a for k, a in runtime if k == "USER"]
        if not users or not re.fullmatch(r"[1-9][0-9]*(:[0-9]+)?", users[-1]):
            error("Dockerfile: the runtime stage needs a numeric non-root USER")
        runs = " ".join(a for k, a in runtime if k == "RUN")
        for tool in ("build-essential", "gcc", "cargo", "rustc", "pkg-config"):
            if re.search(rf"\b{tool}\b", runs):
                error(f"Dockerfile: the runtime stage installs {tool}")
    return set(stages)


def check_compose(stages: set[str]) -> None:
    compose = yaml.safe_load(COMPOSE.read_text())
    services = compose.get("services", {})
    documented = documented_variables()
    base = COMPOSE.parent

    for name, service in services.items():
        depends = service.get("depends_on", {})
        if isinstance(depends, list):
            depends = {d: {"condition": "service_started"} for d in depends}
        for dep, spec in depends.items():
            if dep not in services:
                error(f"compose: {name} depends on unknown service {dep}")
                continue
            condition = (spec or {}).get("condition", "service_started")
            if condition not in CONDITIONS:
                error(f"compose: {name} -> {dep}: unknown condition {condition}")
            if condition == "service_healthy" and "healthcheck" not in services[dep]:
                built = services[dep].get("build", {}).get("target")
                if built not in BINARY_TARGETS:  # the images of ours have a HEALTHCHECK
                    error(f"compose: {name} waits for {dep} to be healthy, which has no healthcheck")
            if condition == "service_completed_successfully":
                if services[dep].get("restart", "no") != "no":
                    error(f"compose: {dep} is waited for to complete but restarts")

        build = service.get("build")
        if build:
            context = (base / build.get("context", ".")).resolve()
            dockerfile = context / build.get("dockerfile", "Dockerfile")
            if dockerfile.resolve() != DOCKERFILE:
                error(f"compose: {name} builds from {dockerfile}, expected {DOCKERFILE}")
            if build.get("target") not in stages:
                error(f"compose: {name} builds target {build.get('target')!r}, not in the Dockerfile")

        for volume in service.get("volumes", []):
            source = volume.split(":")[0] if isinstance(volume, str) else volume.get("source", "")
            if source.startswith((".", "/")) and not (base / source).exists():
                error(f"compose: {name} mounts {source}, which does not exist")

        image = service.get("image", "")
        if image.startswith("interaction-logger/"):
            env = service.get("environment", {})
            for var in env:
                if var not in documented:
                    error(f"compose: {name} sets {var}, which no binary reads (not in .env.example)")

        replicas = service.get("deploy", {}).get("replicas", 1)
        if replicas > 1:
            if "container_name" in service:
                error(f"compose: {name} has {replicas} replicas and a container_name")
            for port in service.get("ports", []):
                if ":" in str(port):
                    error(f"compose: {name} has {replicas} replicas and publishes host port {port}")

    gateway = services.get("gateway")
    if gateway is None:
        error("compose: no gateway service")
    else:
        wanted = set(re.findall(r"\$\{(GATEWAY_[A-Z_]+)\}", GATEWAY_TEMPLATE.read_text()))
        missing = wanted - set(gateway.get("environment", {}))
        if missing:
            error(f"compose: the gateway template needs {sorted(missing)}")

    migrate = services.get("migrate", {})
    if migrate.get("command") != ["migrate"]:
        error("compose: the migrate service must run `ingest-api migrate`")
    for name in ("ingest-api", "forwarder"):
        env = services.get(name, {}).get("environment", {})
        if str(env.get("MIGRATE_ON_START")).lower() != "false":
            error(f"compose: {name} must not migrate at start (the migrate service does)")
        cond = services.get(name, {}).get("depends_on", {}).get("migrate", {}).get("condition")
        if cond != "service_completed_successfully":
            error(f"compose: {name} must wait for migrate with service_completed_successfully")


def main() -> int:
    stages = check_dockerfile()
    check_compose(stages)
    for message in errors:
        print(f"  FAIL  {message}")
    if errors:
        print(f"compose: {len(errors)} problems in deploy/docker-compose.yml and deploy/Dockerfile")
        return 1
    print("compose: deploy/docker-compose.yml and deploy/Dockerfile pass the cross-checks")
    return 0


if __name__ == "__main__":
    sys.exit(main())
