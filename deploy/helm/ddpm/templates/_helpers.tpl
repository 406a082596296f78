{{/* Chart name, truncated to the 63 characters Kubernetes allows. */}}
{{- define "ddpm.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Fully qualified release name. */}}
{{- define "ddpm.fullname" -}}
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

{{- define "ddpm.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
app.kubernetes.io/name: {{ include "ddpm.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{/* Selector labels of one component (api, worker, redis): pass (list . "api"). */}}
{{- define "ddpm.selectorLabels" -}}
{{- $ := index . 0 -}}
app.kubernetes.io/name: {{ include "ddpm.name" $ }}
app.kubernetes.io/instance: {{ $.Release.Name }}
app.kubernetes.io/component: {{ index . 1 }}
{{- end }}

{{- define "ddpm.image" -}}
{{ .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}
{{- end }}

{{/* Whether the chart runs its own Redis. */}}
{{- define "ddpm.internalRedis" -}}
{{- if and .Values.redis.internal.enabled (not .Values.redis.url) (not .Values.redis.existingSecret) }}true{{ end }}
{{- end }}

{{- define "ddpm.redisHost" -}}
{{ include "ddpm.fullname" . }}-redis
{{- end }}

{{/* The Secret and key holding the Redis URL. */}}
{{- define "ddpm.redisSecretName" -}}
{{- if .Values.redis.existingSecret }}{{ .Values.redis.existingSecret }}{{ else }}{{ include "ddpm.fullname" . }}-redis-url{{ end }}
{{- end }}
{{- define "ddpm.redisSecretKey" -}}
{{- if .Values.redis.existingSecret }}{{ .Values.redis.existingSecretKey }}{{ else }}redis-url{{ end }}
{{- end }}

{{/* The Secret and key holding the API key; empty when there is none. */}}
{{- define "ddpm.apiKeySecretName" -}}
{{- if .Values.apiKey.existingSecret }}{{ .Values.apiKey.existingSecret }}{{ else if .Values.apiKey.value }}{{ include "ddpm.fullname" . }}-api-key{{ end }}
{{- end }}
{{- define "ddpm.apiKeySecretKey" -}}
{{- if .Values.apiKey.existingSecret }}{{ .Values.apiKey.existingSecretKey }}{{ else }}api-key{{ end }}
{{- end }}

{{/* Environment shared by api and workers. */}}
{{- define "ddpm.env" -}}
- name: DDPM_REDIS_URL
  valueFrom:
    secretKeyRef:
      name: {{ include "ddpm.redisSecretName" . }}
      key: {{ include "ddpm.redisSecretKey" . }}
{{- if include "ddpm.apiKeySecretName" . }}
- name: DDPM_API_KEY
  valueFrom:
    secretKeyRef:
      name: {{ include "ddpm.apiKeySecretName" . }}
      key: {{ include "ddpm.apiKeySecretKey" . }}
{{- end }}
- name: HF_HOME
  value: /cache/huggingface
{{- end }}

{{/* ddpm serve arguments for a role: pass (list . "api"). */}}
{{- define "ddpm.args" -}}
{{- $ := index . 0 -}}
{{- $s := $.Values.serve -}}
- serve
- --role={{ index . 1 }}
- --addr=:8080
- --redis-prefix={{ $.Values.redis.prefix }}
- --max-batch={{ $s.maxBatch }}
- --queue={{ $s.queue }}
- --timeout={{ $s.timeout }}
- --drain-timeout={{ $s.drainTimeout }}
- --result-ttl={{ $s.resultTTL }}
- --claim-idle={{ $s.claimIdle }}
- --max-attempts={{ $s.maxAttempts }}
- --max-steps={{ $s.maxSteps }}
- --max-n={{ $s.maxN }}
{{- if $.Values.model.path }}
- --model={{ $.Values.model.path }}
{{- end }}
{{- if $s.logJSON }}
- --log-json
{{- end }}
{{- range $s.extraArgs }}
- {{ . | quote }}
{{- end }}
{{- end }}

{{/* Probes on /healthz (liveness) and /readyz (readiness: fails while draining or while Redis is unreachable). */}}
{{- define "ddpm.probes" -}}
livenessProbe:
  httpGet: {path: /healthz, port: http}
  periodSeconds: 10
  timeoutSeconds: 3
  failureThreshold: 3
readinessProbe:
  httpGet: {path: /readyz, port: http}
  periodSeconds: 5
  timeoutSeconds: 3
  failureThreshold: 2
{{- end }}

{{/* Volumes and mounts shared by api and workers. */}}
{{- define "ddpm.volumes" -}}
- name: cache
  emptyDir:
    sizeLimit: {{ .Values.model.cache.sizeLimit }}
- name: tmp
  emptyDir: {}
{{- with .Values.model.volume }}
- name: model
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end }}
{{- define "ddpm.volumeMounts" -}}
- name: cache
  mountPath: /cache
- name: tmp
  mountPath: /tmp
{{- if .Values.model.volume }}
- name: model
  mountPath: {{ .Values.model.mountPath }}
  readOnly: true
{{- end }}
{{- end }}
