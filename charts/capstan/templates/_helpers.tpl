{{/* Full name of the release's objects. */}}
{{- define "capstan.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{/* Labels on every object. */}}
{{- define "capstan.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{ include "capstan.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}

{{/* Labels that select the operator pods. */}}
{{- define "capstan.selectorLabels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: operator
{{- end -}}

{{/* The ServiceAccount the operator runs as. */}}
{{- define "capstan.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "capstan.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/* Rules the operator needs in every namespace it watches (Role or ClusterRole). */}}
{{- define "capstan.namespacedRules" -}}
# The four kinds: watched by kopf, read by reconcilers (references, checkpoint owners); the
# operator writes only their status.
- apiGroups: ["capstan.dev"]
  resources: ["datasets", "trainingruns", "evaluations", "deployments"]
  verbs: ["get", "list", "watch"]
- apiGroups: ["capstan.dev"]
  resources: ["datasets/status", "trainingruns/status", "evaluations/status", "deployments/status"]
  verbs: ["patch"]
# Children carry owner references with blockOwnerDeletion, which clusters that enforce it
# (OwnerReferencesPermissionEnforcement) allow only with update on the owner's finalizers.
- apiGroups: ["capstan.dev"]
  resources: ["datasets/finalizers", "trainingruns/finalizers", "evaluations/finalizers", "deployments/finalizers"]
  verbs: ["update"]
# Children, applied server-side: a PATCH, which the API server authorizes as create too when
# the object does not exist yet. ConfigMaps and Services are read before a rollout, never
# listed (owner references clean them up); a Dataset's ConfigMap of an old revision is deleted.
- apiGroups: [""]
  resources: ["configmaps"]
  verbs: ["get", "create", "patch", "delete"]
- apiGroups: [""]
  resources: ["services"]
  verbs: ["get", "create", "patch"]
# The workload ServiceAccount of each namespace, when workload.createServiceAccount is on.
- apiGroups: [""]
  resources: ["serviceaccounts"]
  verbs: ["create", "patch"]
# Jobs and Deployments are watched (kopf) and torn down by the reconcilers.
- apiGroups: ["batch"]
  resources: ["jobs"]
  verbs: ["get", "list", "watch", "create", "patch", "delete"]
- apiGroups: ["apps"]
  resources: ["deployments"]
  verbs: ["list", "watch", "create", "patch", "delete"]
- apiGroups: ["autoscaling"]
  resources: ["horizontalpodautoscalers"]
  verbs: ["create", "patch", "delete"]
# Volcano PodGroups for TrainingRuns with scheduling.scheduler: volcano.
- apiGroups: ["scheduling.volcano.sh"]
  resources: ["podgroups"]
  verbs: ["create", "patch"]
# Kueue's Workloads, read for why it holds a TrainingRun's Job suspended (queued, preempted).
- apiGroups: ["kueue.x-k8s.io"]
  resources: ["workloads"]
  verbs: ["list"]
# Trainer and serving pods: listed when a Job's counters say a gang is not whole, and for the
# serving pods' metrics; never watched (their Jobs and Deployments are) and never deleted.
- apiGroups: [""]
  resources: ["pods"]
  verbs: ["list"]
- apiGroups: [""]
  resources: ["pods/log"]
  verbs: ["get"]
# Events for every transition; listed to find a Job's FailedCreate (a pod admission refused).
- apiGroups: ["", "events.k8s.io"]
  resources: ["events"]
  verbs: ["create", "patch", "list"]
{{- end -}}

{{/* An image reference from {repository, tag, digest} (or a "repo:tag" string) and a default
tag: repository[:tag][@digest]. */}}
{{- define "capstan.image" -}}
{{- $img := .image -}}
{{- if kindIs "string" $img -}}
{{- $img -}}
{{- else -}}
{{- $tag := $img.tag | default .defaultTag -}}
{{- $img.repository -}}{{- with $tag }}:{{ . }}{{ end -}}{{- with $img.digest }}@{{ . }}{{ end -}}
{{- end -}}
{{- end -}}
