{{/* Chart name, truncated to the 63 characters of a DNS label. */}}
{{- define "matih-ai-service.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Fully qualified app name: the release name, with the chart name unless the release name contains it. */}}
{{- define "matih-ai-service.fullname" -}}
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

{{- define "matih-ai-service.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* The standard labels, on every resource. */}}
{{- define "matih-ai-service.labels" -}}
helm.sh/chart: {{ include "matih-ai-service.chart" . }}
{{ include "matih-ai-service.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{- define "matih-ai-service.selectorLabels" -}}
app.kubernetes.io/name: {{ include "matih-ai-service.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/* Chart 1.1.0 and later: true. The one visible difference between the versions. */}}
{{- define "matih-ai-service.v110" -}}
{{- if semverCompare ">=1.1.0-0" .Chart.Version }}true{{ end }}
{{- end }}
