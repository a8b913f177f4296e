{{/*
Chart name, truncated to the 63 characters a DNS label allows.
*/}}
{{- define "realtime-gateway.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Fully qualified app name: the release name, suffixed with the chart name
unless the release name already contains it.
*/}}
{{- define "realtime-gateway.fullname" -}}
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

{{- define "realtime-gateway.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Selector labels: stable for the life of a release (a Deployment's selector is
immutable), so nothing version-dependent goes here.
*/}}
{{- define "realtime-gateway.selectorLabels" -}}
app.kubernetes.io/name: {{ include "realtime-gateway.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "realtime-gateway.labels" -}}
helm.sh/chart: {{ include "realtime-gateway.chart" . }}
{{ include "realtime-gateway.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/component: gateway
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{- define "realtime-gateway.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "realtime-gateway.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "realtime-gateway.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{/*
Name of the Secret holding publish token, socket secret and Redis URL.
*/}}
{{- define "realtime-gateway.secretName" -}}
{{- default (include "realtime-gateway.fullname" .) .Values.secrets.existingSecret }}
{{- end }}

{{/*
True (non-empty) when the chart renders its own Secret: no existingSecret and
at least one secret value given.
*/}}
{{- define "realtime-gateway.createSecret" -}}
{{- if and (not .Values.secrets.existingSecret) (or .Values.secrets.publishToken .Values.secrets.socketSecret .Values.secrets.redisUrl .Values.secrets.sentinelPassword) }}true{{ end }}
{{- end }}

{{/*
Convert a Kubernetes CPU quantity ("2", 2, "1500m", 0.5) to whole CPUs,
rounded up, at least 1. Empty input gives empty output.
*/}}
{{- define "realtime-gateway.cpuCeil" -}}
{{- $q := toString . }}
{{- if and . (ne $q "<nil>") }}
{{- if hasSuffix "m" $q }}
{{- max 1 (div (add (trimSuffix "m" $q | int64) 999) 1000) }}
{{- else }}
{{- max 1 (ceil (float64 $q)) }}
{{- end }}
{{- end }}
{{- end }}

{{/*
GATEWAY_WORKERS: gateway.workers, else the CPU limit, else the CPU request,
else 1. The gateway's own default (os CPU count) sees the node's cores, not
the pod's limit, so the chart always sets it.
*/}}
{{- define "realtime-gateway.workers" -}}
{{- $limits := dict }}
{{- $requests := dict }}
{{- with .Values.resources }}
{{- $limits = .limits | default dict }}
{{- $requests = .requests | default dict }}
{{- end }}
{{- if .Values.gateway.workers }}
{{- .Values.gateway.workers | int64 }}
{{- else if $limits.cpu }}
{{- include "realtime-gateway.cpuCeil" $limits.cpu }}
{{- else if $requests.cpu }}
{{- include "realtime-gateway.cpuCeil" $requests.cpu }}
{{- else }}
{{- 1 }}
{{- end }}
{{- end }}

{{/*
terminationGracePeriodSeconds: explicit value, else preStop sleep + shutdown
grace (rounded up to seconds) + margin. The kubelet starts the countdown before
the preStop hook, so the hook's sleep must be inside it.
*/}}
{{- define "realtime-gateway.terminationGracePeriodSeconds" -}}
{{- if .Values.terminationGracePeriodSeconds }}
{{- .Values.terminationGracePeriodSeconds | int64 }}
{{- else }}
{{- $graceS := div (add (.Values.gateway.shutdownGraceMs | int64) 999) 1000 }}
{{- add (.Values.lifecycle.preStopSleepSeconds | int64) $graceS (.Values.terminationGraceMarginSeconds | int64) }}
{{- end }}
{{- end }}

{{/*
Configuration errors that would only show up as a crash-looping or silently
broken deployment: fail at render time instead.
*/}}
{{- define "realtime-gateway.validate" -}}
{{- $redis := include "realtime-gateway.hasRedis" . }}
{{- if and (not $redis) (or .Values.autoscaling.enabled (gt (int .Values.replicaCount) 1)) }}
{{- fail "without Redis (gateway.redis.url, secrets.redisUrl or secrets.existingSecret) the gateway runs standalone: one process whose events arrive only through its own publish API, so replicaCount must be 1 and autoscaling off. Set gateway.redis.url." }}
{{- end }}
{{- if ge (int64 .Values.gateway.drainMs) (int64 .Values.gateway.shutdownGraceMs) }}
{{- fail "gateway.drainMs must be shorter than gateway.shutdownGraceMs (the gateway refuses to start otherwise)" }}
{{- end }}
{{- if not (has .Values.podAntiAffinity (list "soft" "hard" "none" "")) }}
{{- fail "podAntiAffinity must be soft, hard or none" }}
{{- end }}
{{- $t := .Values.service.sessionAffinityTimeoutSeconds | int64 }}
{{- if and (eq .Values.service.sessionAffinity "ClientIP") (or (lt $t 1) (gt $t 86400)) }}
{{- fail "service.sessionAffinityTimeoutSeconds must be 1..86400 (the API server rejects anything else)" }}
{{- end }}
{{- if and (eq .Values.gateway.redis.mode "sentinel") (not (and .Values.gateway.redis.sentinels .Values.gateway.redis.sentinelName)) }}
{{- fail "gateway.redis.mode sentinel needs gateway.redis.sentinels and gateway.redis.sentinelName" }}
{{- end }}
{{- if and (eq .Values.gateway.redis.mode "cluster") (not .Values.gateway.redis.clusterNodes) }}
{{- fail "gateway.redis.mode cluster needs gateway.redis.clusterNodes" }}
{{- end }}
{{- $prestop := .Values.lifecycle.preStopSleepSeconds | int64 }}
{{- $grace := include "realtime-gateway.terminationGracePeriodSeconds" . | int64 }}
{{- if le (mul $grace 1000) (add (mul $prestop 1000) (.Values.gateway.shutdownGraceMs | int64)) }}
{{- fail "terminationGracePeriodSeconds must exceed lifecycle.preStopSleepSeconds + gateway.shutdownGraceMs, or the kubelet kills the gateway mid-drain" }}
{{- end }}
{{- end }}

{{/*
An int-or-string value: integers unquoted (1, not 1.0 or "1"), percentages
quoted ("25%").
*/}}
{{- define "realtime-gateway.intOrPercent" -}}
{{- if hasSuffix "%" (toString .) }}{{ toString . | quote }}{{ else }}{{ int64 . }}{{ end }}
{{- end }}

{{/*
True (non-empty) when Redis is configured (URL, Secret, or a non-standalone mode).
*/}}
{{- define "realtime-gateway.hasRedis" -}}
{{- if or .Values.gateway.redis.url .Values.secrets.redisUrl .Values.secrets.existingSecret (and .Values.gateway.redis.mode (ne .Values.gateway.redis.mode "standalone")) }}true{{ end }}
{{- end }}
