{{/* Names and labels shared by every template. */}}

{{- define "trainpipe.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "trainpipe.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "trainpipe.selectorLabels" -}}
app.kubernetes.io/name: {{ include "trainpipe.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "trainpipe.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "trainpipe.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: trainpipe
{{- end -}}

{{- define "trainpipe.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "trainpipe.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "trainpipe.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}

{{- define "trainpipe.trainerImage" -}}
{{- printf "%s:%s" .Values.trainer.image.repository (default .Chart.AppVersion .Values.trainer.image.tag) -}}
{{- end -}}

{{- define "trainpipe.artifactClaim" -}}
{{- default (printf "%s-artifacts" (include "trainpipe.fullname" .)) .Values.artifacts.claimName -}}
{{- end -}}

{{/* The metrics Service's name: also the scrape job name a ServiceMonitor gives. */}}
{{- define "trainpipe.metricsService" -}}
{{- printf "%s-metrics" (include "trainpipe.fullname" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* The operator's RBAC rules: files/operator-rules.yaml, a copy of the
operator package's deploy/operator-rules.yaml kept equal by a test. */}}
{{- define "trainpipe.rules.namespaced" -}}
{{- (.Files.Get "files/operator-rules.yaml" | fromYaml).namespaced | toYaml -}}
{{- end -}}
{{- define "trainpipe.rules.cluster" -}}
{{- (.Files.Get "files/operator-rules.yaml" | fromYaml).cluster | toYaml -}}
{{- end -}}

{{- define "trainpipe.rules.webhook" -}}
{{- if .Values.webhook.enabled -}}
{{- (.Files.Get "files/operator-rules.yaml" | fromYaml).webhook | toYaml -}}
{{- end -}}
{{- end -}}

{{- define "trainpipe.validate" -}}
{{- if and (eq .Values.rbac.scope "namespaced") (empty .Values.watchNamespaces) -}}
{{- fail "rbac.scope is namespaced, so watchNamespaces must list at least one namespace to watch" -}}
{{- end -}}
{{- end -}}

{{/* The admission webhook: its Service, the cert-manager CA injection, one webhook entry. */}}
{{- define "trainpipe.webhookService" -}}
{{- printf "%s-webhook" (include "trainpipe.fullname" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "trainpipe.webhookAnnotations" -}}
{{- if .Values.webhook.certManager.enabled -}}
annotations:
  cert-manager.io/inject-ca-from: {{ printf "%s/%s-webhook" .Release.Namespace (include "trainpipe.fullname" .) }}
{{- end -}}
{{- end -}}

{{- define "trainpipe.webhook" -}}
{{- $root := .root -}}
clientConfig:
  service:
    name: {{ .service }}
    namespace: {{ $root.Release.Namespace }}
    path: {{ .path }}
    port: 443
  {{- if .caBundle }}
  caBundle: {{ .caBundle }}
  {{- end }}
rules:
  - apiGroups: ["trainpipe.io"]
    apiVersions: ["v1alpha1"]
    resources: [{{ .resource | quote }}]
    operations: {{ toJson .operations }}
    scope: Namespaced
failurePolicy: Fail
matchPolicy: Equivalent
sideEffects: None
admissionReviewVersions: ["v1", "v1beta1"]
timeoutSeconds: {{ $root.Values.webhook.timeoutSeconds }}
{{- if eq $root.Values.rbac.scope "namespaced" }}
# Only the watched namespaces (the label Kubernetes >= 1.21 sets on every namespace).
namespaceSelector:
  matchExpressions:
    - key: kubernetes.io/metadata.name
      operator: In
      values: {{ toJson $root.Values.watchNamespaces }}
{{- end }}
{{- end -}}

{{/* Ray Job API addresses pipelines may name (comma-separated): the
operator.rayAllowedAddresses, plus the chart's own RayCluster service. */}}
{{- define "trainpipe.rayAllowedAddresses" -}}
{{- $addresses := list }}
{{- range .Values.operator.rayAllowedAddresses }}
{{- $addresses = append $addresses . }}
{{- end }}
{{- if .Values.rayCluster.enabled }}
{{- $svc := printf "%s-ray-head-svc" (include "trainpipe.fullname" .) }}
{{- $addresses = append $addresses (printf "http://%s:8265" $svc) }}
{{- $addresses = append $addresses (printf "http://%s.%s.svc:8265" $svc .Release.Namespace) }}
{{- end }}
{{- join "," $addresses }}
{{- end }}
