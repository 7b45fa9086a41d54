#!/usr/bin/env python3
"""Runs `forwarder replay` as a Kubernetes Job, with the running forwarder's image and settings.

    scripts/k8s-replay-job.py --tenant acme --since 2026-11-20T00:00:00Z [--until ...] [--rate 2000]

The Job's pod is the forwarder Deployment's pod (image, ConfigMap, Secret keys, security
context) running `forwarder replay ...` once, under its own labels (`app.kubernetes.io/name:
replay`, so no Service or PDB of the forwarder selects it; the NetworkPolicy `replay-jobs` lets
it reach PostgreSQL and Ncanto). It is never retried (backoffLimit 0): a replay that stops
prints the `--since` to resume from, in its log. Prints the command to follow that log.

--dry-run passes --dry-run to the replay (it counts, sends nothing); --print prints the Job
instead of creating it; --deployment-file reads the Deployment from a file (`kubectl kustomize`
output) instead of the cluster, as `make k8s-validate` does to check the Job this makes.
"""

import argparse
import copy
import datetime
import json
import re
import subprocess
import sys

import yaml

NAMESPACE = "interaction-logger"


def job_from(deployment: dict, replay_args: list[str], name: str) -> dict:
    template = copy.deepcopy(deployment["spec"]["template"])
    spec = template["spec"]
    for key in ("affinity", "topologySpreadConstraints"):
        spec.pop(key, None)
    spec["restartPolicy"] = "Never"
    container = next(c for c in spec["containers"] if c["name"] == "forwarder")
    for key in ("ports", "startupProbe", "livenessProbe", "readinessProbe", "lifecycle", "command"):
        container.pop(key, None)
    container["name"] = "replay"
    container["args"] = ["replay", *replay_args]
    spec["containers"] = [container]
    labels = {
        "app.kubernetes.io/name": "replay",
        "app.kubernetes.io/component": "replay",
        "app.kubernetes.io/part-of": "interaction-logger",
    }
    template["metadata"] = {"labels": dict(labels)}
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": name, "namespace": deployment["metadata"].get("namespace", NAMESPACE),
                     "labels": labels},
        "spec": {"backoffLimit": 0, "ttlSecondsAfterFinished": 7 * 86400, "template": template},
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tenant", required=True)
    parser.add_argument("--since", required=True, help="RFC 3339, e.g. 2026-11-20T00:00:00Z")
    parser.add_argument("--until", help="RFC 3339; now when omitted")
    parser.add_argument("--rate", type=int, help="most events per second")
    parser.add_argument("--after-id", type=int, help="resume after this event row id (as an interrupted replay says)")
    parser.add_argument("--dry-run", action="store_true", help="count what would be sent, send nothing")
    parser.add_argument("--namespace", default=NAMESPACE)
    parser.add_argument("--print", action="store_true", help="print the Job, create nothing")
    parser.add_argument("--deployment-file", help="read the forwarder Deployment from this file")
    args = parser.parse_args()

    replay = ["--tenant", args.tenant, "--since", args.since]
    if args.until:
        replay += ["--until", args.until]
    if args.rate is not None:
        replay += ["--rate", str(args.rate)]
    if args.after_id is not None:
        replay += ["--after-id", str(args.after_id)]
    if args.dry_run:
        replay.append("--dry-run")

    if args.deployment_file:
        with open(args.deployment_file) as f:
            docs = [d for d in yaml.safe_load_all(f) if d]
        deployment = next(d for d in docs if d["kind"] == "Deployment" and d["metadata"]["name"] == "forwarder")
    else:
        out = subprocess.run(["kubectl", "-n", args.namespace, "get", "deployment", "forwarder", "-o", "json"],
                             check=True, capture_output=True, text=True).stdout
        deployment = json.loads(out)

    tenant = re.sub(r"[^a-z0-9-]", "-", args.tenant.lower()).strip("-")[:30] or "tenant"
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%d%H%M%S")
    name = f"replay-{tenant}-{stamp}"
    job = job_from(deployment, replay, name)

    if args.print:
        yaml.safe_dump(job, sys.stdout, sort_keys=False)
        return 0
    subprocess.run(["kubectl", "-n", args.namespace, "create", "-f", "-"], input=json.dumps(job),
                   check=True, text=True)
    print(f"follow it:  kubectl -n {args.namespace} logs -f job/{name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
