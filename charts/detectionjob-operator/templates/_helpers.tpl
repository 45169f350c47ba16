{{/*
Chart name, truncated to the 63 characters a DNS-1123 label allows.
*/}}
{{- define "detectionjob-operator.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Fully qualified name of the release's objects. A release named like the chart
("helm install detectionjob-operator ...") gives plain "detectionjob-operator".
*/}}
{{- define "detectionjob-operator.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "detectionjob-operator.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Labels on every object of the release.
*/}}
{{- define "detectionjob-operator.labels" -}}
helm.sh/chart: {{ include "detectionjob-operator.chart" . }}
{{ include "detectionjob-operator.selectorLabels" . }}
app.kubernetes.io/version: {{ .Values.image.tag | default .Chart.AppVersion | quote }}
app.kubernetes.io/component: operator
app.kubernetes.io/part-of: detectionjob
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{/*
Selector labels: immutable once the Deployment exists, so keep them minimal.
*/}}
{{- define "detectionjob-operator.selectorLabels" -}}
app.kubernetes.io/name: {{ include "detectionjob-operator.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "detectionjob-operator.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "detectionjob-operator.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- required "serviceAccount.name is required when serviceAccount.create=false" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "detectionjob-operator.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (.Values.image.tag | default .Chart.AppVersion) }}
{{- end }}
{{- end }}

{{/*
"true" when kopf peering is on: forced by peering.enabled, or implied by more
than one replica (without peering, two replicas would handle every object twice).
*/}}
{{- define "detectionjob-operator.peering" -}}
{{- if or .Values.peering.enabled (gt (int .Values.replicaCount) 1) -}}
true
{{- end -}}
{{- end }}

{{/*
Name of the kopf peering object shared by the replicas.
*/}}
{{- define "detectionjob-operator.peeringName" -}}
{{- default (include "detectionjob-operator.fullname" .) .Values.peering.name }}
{{- end }}

{{/*
"true" when the operator serves the whole cluster (watchNamespaces empty).
*/}}
{{- define "detectionjob-operator.clusterWide" -}}
{{- if not .Values.watchNamespaces -}}
true
{{- end -}}
{{- end }}

{{/*
RBAC rules for the objects the operator handles inside a served namespace: the one
definition of them (operator/RBAC.md explains each row; tests/install/test_chart.py checks it
lists exactly these). In cluster-wide
mode they go into the ClusterRole; with watchNamespaces into one Role per namespace.
*/}}
{{- define "detectionjob-operator.namespacedRules" -}}
# DetectionJobs: watched by kopf, read before a status update, patched for kopf's
# handler state (annotations) and finalizer. Never the spec.
- apiGroups: ["detectionjob.dev"]
  resources: ["detectionjobs"]
  verbs: ["get", "list", "watch", "patch"]
# DetectionJob status: phase, conditions, RayJob fields.
- apiGroups: ["detectionjob.dev"]
  resources: ["detectionjobs/status"]
  verbs: ["patch"]
# RayJobs: one per DetectionJob, owned by it (deleted by the garbage collector with it);
# followed for status; patched for spec.suspend.
- apiGroups: ["ray.io"]
  resources: ["rayjobs"]
  verbs: ["get", "list", "watch", "create", "patch"]
# Pods of the jobs (labelled app.kubernetes.io/managed-by=detectionjob-operator): watched so a
# Pending DetectionJob says why a Pod cannot start (image pull, missing Secret, unschedulable).
- apiGroups: [""]
  resources: ["pods"]
  verbs: ["get", "list", "watch"]
{{- if .Values.progressReporting }}
# Progress reporting: per job, a "<job>-reporter" ServiceAccount, a Role that may only
# patch that DetectionJob's status, and their RoleBinding (all owned by the DetectionJob).
- apiGroups: [""]
  resources: ["serviceaccounts"]
  verbs: ["create"]
- apiGroups: ["rbac.authorization.k8s.io"]
  resources: ["roles", "rolebindings"]
  verbs: ["create"]
{{- end }}
# Kubernetes Events about the handlers' progress and errors (kopf posts core/v1 Events).
- apiGroups: [""]
  resources: ["events"]
  verbs: ["create"]
{{- if and (include "detectionjob-operator.peering" .) (not (include "detectionjob-operator.clusterWide" .)) }}
# kopf peering (HA): the replicas' heartbeats in the namespace's KopfPeering.
- apiGroups: ["kopf.dev"]
  resources: ["kopfpeerings"]
  verbs: ["get", "list", "watch", "patch"]
{{- end }}
{{- end }}

{{/*
Cluster-scoped rules, only in cluster-wide mode. With an explicit list of namespaces
the operator turns kopf's cluster scanning off and needs no cluster-scoped access.
*/}}
{{- define "detectionjob-operator.clusterRules" -}}
{{- if include "detectionjob-operator.clusterWide" . }}
# kopf: notices the DetectionJob/RayJob CRDs appearing later.
- apiGroups: ["apiextensions.k8s.io"]
  resources: ["customresourcedefinitions"]
  verbs: ["list", "watch"]
{{- if include "detectionjob-operator.peering" . }}
# kopf peering (HA): the replicas' heartbeats in the ClusterKopfPeering.
- apiGroups: ["kopf.dev"]
  resources: ["clusterkopfpeerings"]
  verbs: ["get", "list", "watch", "patch"]
{{- end }}
{{- end }}
{{- end }}
