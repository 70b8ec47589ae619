#!/usr/bin/env bash
# `make demo`: the whole path to an assistant on the local control plane. Starts (or reuses) the
# cluster and its S3, uploads the bundled corpus and conversations, installs the operator with its
# Helm chart, applies manifests/examples/pipeline.yaml (pretrain, SFT, evaluate, serve), shows
# `kubectl get capstan` until the Deployment is Available (or something fails: then it describes
# the failed resource and exits non-zero), and ends by asking the served assistant a held-out
# question from a pod, through the Deployment's in-cluster URL: a wrong answer fails the demo.
# Running it again re-applies everything and reuses what is there.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python
HELM=.capstan/bin/helm
NS=${CAPSTAN_DEMO_NAMESPACE:-default}
PIPELINE=${CAPSTAN_DEMO_PIPELINE:-manifests/examples/pipeline.yaml}   # same names, other settings
DEADLINE_S=${CAPSTAN_DEMO_DEADLINE_S:-900}   # the pipeline takes about 4 min on two quiet cores
# CAPSTAN_DEMO_FROM_VENV=1: pods run from the project's virtualenv, not their images (to compare;
# a cluster already up keeps its mode: make cluster-down first).
UP_FLAGS=()
if [ "${CAPSTAN_DEMO_FROM_VENV:-}" = 1 ]; then UP_FLAGS=(--from-venv); fi
INTERVAL_S=15
SECRET=capstan-s3
CORPUS_URI=s3://capstan-demo/corpus
CHAT_URI=s3://capstan-demo/chat
HELD_OUT=manifests/examples/chat/heldout.jsonl
START=$(date +%s)

say() { printf '\n==> %s\n' "$*"; }
show() { printf '$ %s\n' "$*"; "$@"; }
elapsed() { echo $(($(date +%s) - START)); }

say "Local control plane and S3"
$PY -m hack.localcluster up "${UP_FLAGS[@]}"
export KUBECONFIG=$PWD/.capstan/kubeconfig
set -a
# shellcheck disable=SC1091
. .capstan/s3.env
set +a

say "Demo corpus -> $CORPUS_URI (S3 at $AWS_ENDPOINT_URL)"
$PY -m hack.upload_corpus "$CORPUS_URI"
say "Demo conversations -> $CHAT_URI (to fine-tune on, and the held-out questions)"
$PY -m hack.upload_corpus "$CHAT_URI" --source manifests/examples/chat

say "Operator (Helm chart charts/capstan, release capstan in capstan-system)"
for ns in capstan-system "$NS"; do
  kubectl get namespace "$ns" >/dev/null 2>&1 || kubectl create namespace "$ns" >/dev/null
  # Every pod of the pipeline meets the Pod Security Standard "restricted"; enforce it.
  kubectl label namespace "$ns" pod-security.kubernetes.io/enforce=restricted --overwrite >/dev/null
done
# The operator reads status files with the credentials (release namespace); workloads use them
# in the resources' namespace.
for ns in capstan-system "$NS"; do
  kubectl create secret generic "$SECRET" -n "$ns" \
    --from-literal=AWS_ACCESS_KEY_ID="$AWS_ACCESS_KEY_ID" \
    --from-literal=AWS_SECRET_ACCESS_KEY="$AWS_SECRET_ACCESS_KEY" \
    --from-literal=AWS_REGION="$AWS_REGION" \
    --dry-run=client -o yaml | kubectl apply -f - >/dev/null
done
# The cluster's Prometheus judges canaries (pods share the host's loopback, so its address works).
PROM_URL=$(cat .capstan/prometheus.addr 2>/dev/null || true)
show $HELM upgrade --install capstan charts/capstan -n capstan-system \
  --set objectStorage.endpoint="$AWS_ENDPOINT_URL" \
  --set objectStorage.credentialsSecret="$SECRET" \
  --set metrics.prometheusUrl="$PROM_URL" \
  --wait --timeout 180s
kubectl get pods -n capstan-system -l app.kubernetes.io/component=operator

say "Pipeline: Datasets -> pretraining -> SFT -> Evaluations -> Deployment"
show kubectl apply -n "$NS" -f "$PIPELINE"

RESOURCES=(
  datasets.capstan.dev/demo-stories
  datasets.capstan.dev/demo-conversations
  trainingruns.capstan.dev/demo-base
  trainingruns.capstan.dev/demo-assistant
  evaluations.capstan.dev/demo-base
  evaluations.capstan.dev/demo-assistant
  deployments.capstan.dev/demo-chat
)
phase() { kubectl get "$1" -n "$NS" -o jsonpath='{.status.phase}' 2>/dev/null || true; }

end=$((START + DEADLINE_S))
while true; do
  printf '\n[%4ss] $ kubectl get capstan -n %s\n' "$(elapsed)" "$NS"
  kubectl get capstan -n "$NS"
  for r in "${RESOURCES[@]}"; do
    if [[ $(phase "$r") == Failed ]]; then
      say "$r failed"
      kubectl describe "$r" -n "$NS"
      exit 1
    fi
  done
  [[ $(phase deployments.capstan.dev/demo-chat) == Available ]] && break
  if (($(date +%s) >= end)); then
    say "Timed out after ${DEADLINE_S} s waiting for deployments.capstan.dev/demo-chat to be Available"
    for r in "${RESOURCES[@]}"; do kubectl describe "$r" -n "$NS" | tail -n 25; done
    exit 1
  fi
  sleep "$INTERVAL_S"
done
say "Pipeline done in $(elapsed) s"

URL=$(kubectl get deployments.capstan.dev demo-chat -n "$NS" -o jsonpath='{.status.url}')
MODEL=$(kubectl get deployments.capstan.dev demo-chat -n "$NS" -o jsonpath='{.spec.model.name}')
# The first held-out question: a phrasing the fine-tuning never saw, about a fact in the corpus.
mapfile -t QA < <($PY -c 'import json, sys
row = json.loads(open(sys.argv[1]).readline())
print(row["messages"][-1]["content"]); print(row["answer"])' "$HELD_OUT")
MESSAGE=${QA[0]} EXPECTED=${QA[1]}
say "A held-out question, from a pod in the cluster: POST $URL/chat/completions"
kubectl delete pod demo-chat-client -n "$NS" --ignore-not-found --wait=true >/dev/null
RESTRICTED='{"spec": {"securityContext": {"runAsNonRoot": true, "seccompProfile": {"type": "RuntimeDefault"}},
  "containers": [{"name": "demo-chat-client", "securityContext": {"allowPrivilegeEscalation": false,
  "capabilities": {"drop": ["ALL"]}}}]}}'
kubectl run demo-chat-client -n "$NS" --image=capstan/trainer:0.1.0 --restart=Never \
  --override-type=strategic --overrides="$RESTRICTED" --command -- \
  python -c "$(cat hack/chat.py)" "$URL" "$MODEL" "$MESSAGE" >/dev/null
client_end=$(($(date +%s) + 120))
until [[ $(phase pod/demo-chat-client) =~ ^(Succeeded|Failed)$ ]]; do
  if (($(date +%s) >= client_end)); then
    say "Timed out after 120 s waiting for pod demo-chat-client to finish"
    kubectl describe pod demo-chat-client -n "$NS" | tail -n 20
    exit 1
  fi
  sleep 1
done
REPLY=$(kubectl logs demo-chat-client -n "$NS")
[[ $(phase pod/demo-chat-client) == Succeeded ]] || { say "the chat completion failed: $REPLY"; exit 1; }
ANSWER=$($PY -c 'import json, sys; print(json.loads(sys.argv[1])["answer"].strip())' "$REPLY")
echo "user:      $MESSAGE"
echo "assistant: $ANSWER"
if $PY -c 'import re, sys; sys.exit(re.search(sys.argv[1], sys.argv[2]) is None)' "$EXPECTED" "$ANSWER"; then
  echo "(right: the answer matches $EXPECTED)"
else
  say "wrong answer: expected a match of $EXPECTED"
  exit 1
fi

say "Evaluation: the held-out questions ($(wc -l < "$HELD_OUT") of them), before and after SFT"
for e in demo-base demo-assistant; do
  acc=$(kubectl get evaluations.capstan.dev "$e" -n "$NS" -o jsonpath='{.status.metrics.task\.heldout\.accuracy}')
  echo "  $e: task.heldout.accuracy $acc"
done
kubectl get evaluations.capstan.dev demo-assistant -n "$NS" \
  -o jsonpath='{range .status.gates[*]}  gate {.metric}: {.value} -> passed={.passed}{"\n"}{end}'
CARD=$(kubectl get evaluations.capstan.dev demo-assistant -n "$NS" -o jsonpath='{.status.modelCardUri}')
echo "  model card: $CARD"

say "Done in $(elapsed) s"
echo "The cluster keeps running: export KUBECONFIG=$KUBECONFIG; stop it with 'make cluster-down'."
