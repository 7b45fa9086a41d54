#!/usr/bin/env bash
# `make k8s-apply OVERLAY=dev|prod`: applies an overlay to the current kubectl context, in the
# order a release needs:
#   1. the namespace, configuration, Secrets, Services, policies and (dev) the database and
#      broker — everything but the two Deployments, their autoscalers and the Jobs;
#   2. waits for the database and the broker when the overlay runs them (dev StatefulSets,
#      prod: the broker's cert-manager certificates, then the RabbitmqCluster);
#   3. runs the migration Job (the previous run deleted first: a Job cannot be changed) and
#      waits for it to complete; stops here, with its log, when it fails;
#   4. applies everything (the Deployments roll out with MIGRATE_ON_START=false) and waits for
#      the rollouts.
# Needs the cluster add-ons the overlay uses: KEDA (ScaledObject), and for prod the RabbitMQ
# Cluster Operator, cert-manager and the Prometheus Operator; prod needs the Secret made first
# (k8s/base/secret.example.yaml).
set -euo pipefail
cd "$(dirname "$0")/.."

overlay=${1:-${OVERLAY:-dev}}
dir=k8s/overlays/$overlay
ns=interaction-logger
wait_seconds=${K8S_APPLY_TIMEOUT:-300}  # per wait, in seconds
log() { printf '[k8s-apply] %s\n' "$*" >&2; }

[ -d "$dir" ] || { log "no overlay $dir (overlays: $(ls k8s/overlays | tr '\n' ' '))"; exit 2; }
command -v kubectl >/dev/null || { log "kubectl is not installed"; exit 1; }

rendered=$(mktemp)
trap 'rm -f "$rendered"' EXIT
kubectl kustomize "$dir" >"$rendered"
log "overlay $overlay -> context $(kubectl config current-context), namespace $ns"

if [ "$overlay" = prod ] && ! kubectl -n "$ns" get secret interaction-logger-secrets >/dev/null 2>&1; then
  log "the Secret interaction-logger-secrets is missing: kubectl create namespace $ns, then apply your copy of k8s/base/secret.example.yaml"
  exit 1
fi

log "1/4 configuration, Services, policies, backing services"
kubectl apply -f "$rendered" -l 'app.kubernetes.io/component notin (api,forwarder,migrate,purge)'

log "2/4 waiting for the database and the broker"
for sts in $(kubectl -n "$ns" get statefulset -o name -l 'app.kubernetes.io/component in (database,broker)'); do
  kubectl -n "$ns" rollout status "$sts" --timeout="${wait_seconds}s"
done
if grep -q '^kind: Certificate' "$rendered"; then
  kubectl -n "$ns" wait --for=condition=Ready certificate -l app.kubernetes.io/component=tls --timeout="${wait_seconds}s"
fi
if grep -q '^kind: RabbitmqCluster' "$rendered"; then
  kubectl -n "$ns" wait --for=condition=AllReplicasReady rabbitmqcluster/rabbitmq --timeout="${wait_seconds}s"
fi

log "3/4 migrations (Job migrate)"
kubectl -n "$ns" delete job migrate --ignore-not-found --wait=true
kubectl apply -f "$rendered" -l app.kubernetes.io/component=migrate
deadline=$((SECONDS + wait_seconds))
until [ "$(kubectl -n "$ns" get job migrate -o jsonpath='{.status.succeeded}')" = 1 ]; do
  failed=$(kubectl -n "$ns" get job migrate -o jsonpath='{.status.conditions[?(@.type=="Failed")].status}')
  if [ "$failed" = True ] || ((SECONDS >= deadline)); then
    log "the migration Job did not complete; its log:"
    kubectl -n "$ns" logs job/migrate --tail=50 >&2 || true
    exit 1
  fi
  sleep 3
done

log "4/4 workloads"
kubectl apply -f "$rendered"
for deployment in $(kubectl -n "$ns" get deployment -o name -l app.kubernetes.io/part-of=interaction-logger); do
  kubectl -n "$ns" rollout status "$deployment" --timeout="${wait_seconds}s"
done
log "done: kubectl -n $ns get pods"
