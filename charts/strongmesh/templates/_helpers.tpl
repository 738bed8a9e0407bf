{{/* Chart name, overridable. */}}
{{- define "strongmesh.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Prefix of every object name: "<release>-strongmesh" unless the release already says it. */}}
{{- define "strongmesh.fullname" -}}
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

{{/* Labels of every object. */}}
{{- define "strongmesh.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
app.kubernetes.io/name: {{ include "strongmesh.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: strongmesh
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/* Selector labels of one component; call with (dict "ctx" . "component" "agent"). */}}
{{- define "strongmesh.selectorLabels" -}}
app.kubernetes.io/name: {{ include "strongmesh.name" .ctx }}
app.kubernetes.io/instance: {{ .ctx.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{/* Labels of one component's objects. */}}
{{- define "strongmesh.componentLabels" -}}
{{ include "strongmesh.labels" .ctx }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{- define "strongmesh.operator.fullname" -}}
{{- printf "%s-operator" (include "strongmesh.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "strongmesh.agent.fullname" -}}
{{- printf "%s-agent" (include "strongmesh.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "strongmesh.operator.serviceAccountName" -}}
{{- if .Values.operator.serviceAccount.create }}
{{- default (include "strongmesh.operator.fullname" .) .Values.operator.serviceAccount.name }}
{{- else }}
{{- required "operator.serviceAccount.name is required when operator.serviceAccount.create is false" .Values.operator.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "strongmesh.agent.serviceAccountName" -}}
{{- if .Values.agent.serviceAccount.create }}
{{- default (include "strongmesh.agent.fullname" .) .Values.agent.serviceAccount.name }}
{{- else }}
{{- required "agent.serviceAccount.name is required when agent.serviceAccount.create is false" .Values.agent.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* Namespace of the credential Secrets. */}}
{{- define "strongmesh.credentialsNamespace" -}}
{{- default .Release.Namespace .Values.credentials.namespace }}
{{- end }}

{{/* The image reference: digest wins over tag; tag defaults to appVersion. */}}
{{- define "strongmesh.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{/* Where charon's VICI socket lives, shared by the charon and agent containers. */}}
{{- define "strongmesh.runDir" -}}/var/run/strongmesh{{- end }}
{{- define "strongmesh.viciUri" -}}unix://{{ include "strongmesh.runDir" . }}/charon.vici{{- end }}

{{/* Metrics port argument: 0 disables the server. */}}
{{- define "strongmesh.metricsPortArg" -}}
{{- if .ctx.Values.metrics.enabled }}{{ .port }}{{ else }}0{{ end }}
{{- end }}
