{{/*
The chart's name, or nameOverride.
*/}}
{{- define "hone.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
The prefix of every object's name: fullnameOverride, or <release>-<chart>,
or the release name alone when it already contains the chart name. DNS
labels stop at 63 characters.
*/}}
{{- define "hone.fullname" -}}
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

{{/*
chart-version, for the helm.sh/chart label.
*/}}
{{- define "hone.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Labels that select the operator pods. Never change these in an upgrade:
a Deployment's selector is immutable.
*/}}
{{- define "hone.selectorLabels" -}}
app.kubernetes.io/name: {{ include "hone.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: operator
{{- end }}

{{/*
Labels on every object the chart creates.
*/}}
{{- define "hone.labels" -}}
helm.sh/chart: {{ include "hone.chart" . }}
{{ include "hone.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/part-of: hone
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{/*
The operator's ServiceAccount name.
*/}}
{{- define "hone.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "hone.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/*
An image reference from {repository, tag}; an empty tag is the appVersion.
Usage: include "hone.image" (dict "image" .Values.image.trainer "root" .)
*/}}
{{- define "hone.image" -}}
{{- $tag := toString .image.tag }}
{{- printf "%s:%s" .image.repository (default .root.Chart.AppVersion $tag) }}
{{- end }}

{{/*
The operator's RBAC rules (files/operator-rules.yaml), parsed so a broken
file fails the render instead of reaching the apiserver.
Usage: include "hone.rules" (list . "files/operator-rules.yaml")
*/}}
{{- define "hone.rules" -}}
{{- $root := index . 0 }}
{{- $path := index . 1 }}
{{- $raw := $root.Files.Get $path }}
{{- if not $raw }}
{{- fail (printf "%s is missing from the chart" $path) }}
{{- end }}
{{- $rules := fromYamlArray $raw }}
{{- range $rules }}
{{- if not (kindIs "map" .) }}
{{- fail (printf "%s: every entry must be a PolicyRule, found %v" $path .) }}
{{- end }}
{{- end }}
{{- toYaml $rules }}
{{- end }}

{{/*
A node selector map as the operator's --pod-node-selector flag value:
key=value pairs, comma-separated, in key order.
*/}}
{{- define "hone.nodeSelectorFlag" -}}
{{- $pairs := list }}
{{- range $key, $value := . }}
{{- $pairs = append $pairs (printf "%s=%s" $key $value) }}
{{- end }}
{{- join "," $pairs }}
{{- end }}
