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
RBAC rules for the objects the operator handles inside a served namespace.
Kept equal to operator/RBAC.md: exactly the verbs the operator (and kopf) use.
In cluster-wide mode they go into the ClusterRole; with watchNamespaces they go
into one Role per namespace.
*/}}
{{- define "detectionjob-operator.namespacedRules" -}}
# DetectionJobs: watched by kopf; patched for kopf's finalizer and annotations.
- apiGroups: ["detectionjob.dev"]
  resources: ["detectionjobs"]
  verbs: ["get", "list", "watch", "patch"]
# DetectionJob status: phase, counters, conditions.
- apiGroups: ["detectionjob.dev"]
  resources: ["detectionjobs/status"]
  verbs: ["get", "patch"]
# RayJobs: one per DetectionJob, owned by it; status is read back into the DetectionJob.
- apiGroups: ["ray.io"]
  resources: ["rayjobs"]
  verbs: ["get", "list", "watch", "create", "patch", "delete"]
# Kubernetes Events about the handlers' progress and errors (kopf posts core/v1 Events).
- apiGroups: [""]
  resources: ["events"]
  verbs: ["create"]
{{- if and (include "detectionjob-operator.peering" .) (not (include "detectionjob-operator.clusterWide" .)) }}
# kopf peering (HA): each replica keeps its heartbeat in the namespace's KopfPeering.
- apiGroups: ["kopf.dev"]
  resources: ["kopfpeerings"]
  verbs: ["get", "list", "watch", "patch"]
{{- end }}
{{- end }}

{{/*
Cluster-scoped reads kopf needs in every mode.
*/}}
{{- define "detectionjob-operator.clusterRules" -}}
# kopf: notices CRDs being added or removed (DetectionJob, RayJob, peering).
- apiGroups: ["apiextensions.k8s.io"]
  resources: ["customresourcedefinitions"]
  verbs: ["list", "watch"]
{{- if not (include "detectionjob-operator.clusterWide" .) }}
# kopf: in namespaced mode it lists namespaces to notice served ones coming and going.
- apiGroups: [""]
  resources: ["namespaces"]
  verbs: ["list", "watch"]
{{- end }}
{{- if and (include "detectionjob-operator.peering" .) (include "detectionjob-operator.clusterWide" .) }}
# kopf peering (HA): each replica keeps its heartbeat in the ClusterKopfPeering.
- apiGroups: ["kopf.dev"]
  resources: ["clusterkopfpeerings"]
  verbs: ["get", "list", "watch", "patch"]
{{- end }}
{{- end }}
