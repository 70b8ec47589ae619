#!/usr/bin/env bash
# `make demo`: bring up the local control plane and show it working. Later work extends this
# to the whole Dataset -> TrainingRun -> Evaluation -> Deployment pipeline.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python
$PY -m hack.localcluster up
export KUBECONFIG=$PWD/.capstan/kubeconfig
echo
echo "\$ kubectl get nodes -o wide"
kubectl get nodes -o wide
echo
echo "\$ kubectl run hello --image=capstan/workload:dev --restart=Never --command -- python -c 'print(\"hello from a pod\")'"
kubectl delete pod hello --ignore-not-found --wait=true >/dev/null
kubectl run hello --image=capstan/workload:dev --restart=Never --command -- python -c 'print("hello from a pod")'
kubectl wait --for=jsonpath='{.status.phase}'=Succeeded pod/hello --timeout=60s
kubectl logs hello
echo
echo "The cluster keeps running: export KUBECONFIG=$KUBECONFIG; stop it with 'make cluster-down'."
