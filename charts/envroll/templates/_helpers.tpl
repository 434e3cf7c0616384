{{/* Chart name, for the app.kubernetes.io/name label. */}}
{{- define "envroll.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Name of every object: the release name, with the chart name appended unless it
already contains it (release "envroll" gives "envroll", as in manifests/).
*/}}
{{- define "envroll.fullname" -}}
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

{{- define "envroll.selectorLabels" -}}
app.kubernetes.io/name: {{ include "envroll.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "envroll.labels" -}}
{{ include "envroll.selectorLabels" . }}
app.kubernetes.io/version: {{ .Values.image.tag | default .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{- end }}

{{/* "true" when envroll watches every namespace with a ClusterRole, "" otherwise. */}}
{{- define "envroll.clusterWide" -}}
{{- if and .Values.watchGlobally (empty .Values.namespaces) }}true{{ end }}
{{- end }}

{{/*
The namespaces watched when not cluster-wide, one per line: the listed ones
(without duplicates), or the release namespace.
*/}}
{{- define "envroll.watchedNamespaces" -}}
{{- if .Values.namespaces }}
{{- range $ns := uniq .Values.namespaces }}
{{ $ns }}
{{- end }}
{{- else }}
{{ .Release.Namespace }}
{{- end }}
{{- end }}

{{/* The permissions envroll needs wherever it watches (the same as manifests/). */}}
{{- define "envroll.watchRules" -}}
- apiGroups: ["apps"]
  resources: ["deployments", "statefulsets", "daemonsets"]
  verbs: ["get", "list", "watch", "patch"]
- apiGroups: [""]
  resources: ["configmaps", "secrets"]
  verbs: ["get", "list", "watch"]
- apiGroups: [""]
  resources: ["pods"]
  verbs: ["list"]
- apiGroups: ["events.k8s.io"]
  resources: ["events"]
  verbs: ["create", "patch"]
{{- end }}
