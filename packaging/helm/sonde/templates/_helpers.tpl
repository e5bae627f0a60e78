{{/* The chart's name, or nameOverride. */}}
{{- define "sonde.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Object names: fullnameOverride, else the release name (with the chart's name
     unless the release name already has it). */}}
{{- define "sonde.fullname" -}}
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

{{- define "sonde.selectorLabels" -}}
app.kubernetes.io/name: {{ include "sonde.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "sonde.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "sonde.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/component: node-agent
{{- end }}

{{- define "sonde.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "sonde.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "sonde.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{/* Where the Loki credentials are mounted. */}}
{{- define "sonde.lokiSecretDir" -}}/etc/sonde/secrets/loki{{- end }}

{{/* Whether any script source is mounted at /etc/sonde/scripts.d. */}}
{{- define "sonde.hasScripts" -}}
{{- if or .Values.scripts .Values.extraScriptConfigMaps }}true{{ end }}
{{- end }}

{{/* sonde's config.yaml: what the chart owns, with .Values.config merged over it. */}}
{{- define "sonde.config" -}}
{{- $config := dict
  "listen" (printf "0.0.0.0:%v" .Values.port)
  "pods" (dict "cri_socket" (default "none" .Values.criSocket))
  "scripts" (dict "directories" (list "/etc/sonde/scripts.d"))
}}
{{- if .Values.btfArchive.enabled }}
{{- $_ := set $config "btf_archive" "/var/lib/sonde/btf" }}
{{- end }}
{{- with .Values.loki }}
{{- if .url }}
{{- $loki := dict "url" .url "tenant" .tenant }}
{{- if .labels }}
{{- $_ := set $loki "labels" (merge (dict "job" "sonde") .labels) }}
{{- end }}
{{- if and .auth.secretName .auth.bearerTokenKey }}
{{- $_ := set $loki "bearer_token_file" (printf "%s/%s" (include "sonde.lokiSecretDir" $) .auth.bearerTokenKey) }}
{{- else if and .auth.secretName .auth.passwordKey }}
{{- $_ := set $loki "basic_auth" (dict "username" .auth.username "password_file" (printf "%s/%s" (include "sonde.lokiSecretDir" $) .auth.passwordKey)) }}
{{- end }}
{{- $_ := set $config "sinks" (dict "loki" $loki) }}
{{- end }}
{{- end }}
{{- mustMergeOverwrite $config (deepCopy .Values.config) | toYaml }}
{{- end }}
