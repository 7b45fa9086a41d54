#!/usr/bin/env bash
# `make k8s-validate` / `make compose-validate`: offline checks of the deployment files.
#   scripts/validate-deploy.sh k8s       Kubernetes manifests (every overlay) + alert rules + dashboard
#   scripts/validate-deploy.sh compose   deploy/docker-compose.yml + deploy/Dockerfile
# Installs the Python tools it needs with pip when they are missing (kubernetes-validate bundles
# the Kubernetes schemas; check-jsonschema bundles the compose-spec schema). No network beyond
# that, no cluster, no Docker engine.
set -euo pipefail
cd "$(dirname "$0")/.."

need_python() { # module pip-requirement
  python3 -c "import $1" 2>/dev/null && return
  echo "[validate] installing $2" >&2
  python3 -m pip install --quiet --disable-pip-version-check --root-user-action=ignore "$2" >&2
}

case "${1:-}" in
  k8s)
    if ! command -v kubectl >/dev/null; then
      echo "[validate] kubectl is not installed (it renders the kustomizations: kubectl kustomize)" >&2
      exit 1
    fi
    need_python yaml 'PyYAML>=6'
    need_python kubernetes_validate 'kubernetes-validate>=1.30'
    exec python3 scripts/validate_k8s.py
    ;;
  compose)
    need_python yaml 'PyYAML>=6'
    need_python check_jsonschema 'check-jsonschema>=0.28'
    echo "compose: deploy/docker-compose.yml against the compose-spec schema (check-jsonschema vendor.compose-spec)"
    python3 -m check_jsonschema --builtin-schema vendor.compose-spec deploy/docker-compose.yml
    exec python3 scripts/validate_compose.py
    ;;
  *)
    echo "usage: $0 k8s|compose" >&2
    exit 2
    ;;
esac
