{{/* Names: <release>-cardflow unless the release name already contains "cardflow". */}}
{{- define "cardflow.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 50 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 50 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "cardflow.labels" -}}
app.kubernetes.io/name: {{ .root.Chart.Name }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/version: {{ .root.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .root.Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .root.Chart.Name .root.Chart.Version }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "cardflow.selector" -}}
app.kubernetes.io/name: {{ .root.Chart.Name }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "cardflow.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}{{ default (include "cardflow.fullname" .) .Values.serviceAccount.name }}
{{- else -}}{{ default "default" .Values.serviceAccount.name }}{{- end -}}
{{- end -}}

{{- define "cardflow.image" -}}
{{ .Values.image.repository }}:{{ default .Chart.AppVersion .Values.image.tag }}
{{- end -}}

{{/* Service names end in words that are no cardflow setting, so service-link variables (off anyway)
     could never be read as CARDFLOW_* settings. */}}
{{- define "cardflow.peopleService" -}}{{ include "cardflow.fullname" . }}-people-peers{{- end -}}
{{- define "cardflow.warehouseService" -}}{{ include "cardflow.fullname" . }}-warehouse-peers{{- end -}}
{{- define "cardflow.apiService" -}}{{ include "cardflow.fullname" . }}-http{{- end -}}

{{/* Environment every cardflow container gets: the ConfigMap, secrets by reference, the pod's identity. */}}
{{- define "cardflow.env" -}}
- name: POD_NAME
  valueFrom: {fieldRef: {fieldPath: metadata.name}}
- name: POD_IP
  valueFrom: {fieldRef: {fieldPath: status.podIP}}
{{- with .Values.kafka.sasl.existingSecret }}
- name: CARDFLOW_SASL_USERNAME
  valueFrom: {secretKeyRef: {name: {{ . }}, key: {{ $.Values.kafka.sasl.usernameKey }}}}
- name: CARDFLOW_SASL_PASSWORD
  valueFrom: {secretKeyRef: {name: {{ . }}, key: {{ $.Values.kafka.sasl.passwordKey }}}}
{{- end }}
{{- with .Values.warehouse.existingSecret }}
- name: CARDFLOW_WAREHOUSE_PASSWORD
  valueFrom: {secretKeyRef: {name: {{ . }}, key: {{ $.Values.warehouse.passwordKey }}}}
{{- end }}
{{- with .Values.lake.existingSecret }}
- name: AWS_ACCESS_KEY_ID
  valueFrom: {secretKeyRef: {name: {{ . }}, key: AWS_ACCESS_KEY_ID}}
- name: AWS_SECRET_ACCESS_KEY
  valueFrom: {secretKeyRef: {name: {{ . }}, key: AWS_SECRET_ACCESS_KEY}}
{{- end }}
{{- with .Values.apiTokens.existingSecret }}
- name: CARDFLOW_API_TOKENS
  valueFrom: {secretKeyRef: {name: {{ . }}, key: {{ $.Values.apiTokens.key }}}}
{{- end }}
{{- end -}}

{{- define "cardflow.envFrom" -}}
- configMapRef:
    name: {{ include "cardflow.fullname" . }}-settings
{{- end -}}

{{- define "cardflow.podSecurity" -}}
runAsNonRoot: true
runAsUser: 10001
runAsGroup: 10001
fsGroup: 10001
seccompProfile: {type: RuntimeDefault}
{{- end -}}

{{- define "cardflow.containerSecurity" -}}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
runAsNonRoot: true
capabilities: {drop: ["ALL"]}
{{- end -}}

{{- define "cardflow.volumeMounts" -}}
- name: tmp
  mountPath: /tmp
{{- if .Values.kafka.tls.existingSecret }}
- name: kafka-tls
  mountPath: /etc/cardflow/kafka-tls
  readOnly: true
{{- end }}
{{- end -}}

{{- define "cardflow.volumes" -}}
- name: tmp
  emptyDir: {}
{{- with .Values.kafka.tls.existingSecret }}
- name: kafka-tls
  secret: {secretName: {{ . }}}
{{- end }}
{{- end -}}

{{/* The worker web server's probes: liveness (loop not blocked, partitions progressing), readiness
     (partitions assigned, tables recovered), and a startup budget for changelog recovery. */}}
{{- define "cardflow.workerProbes" -}}
startupProbe:
  httpGet: {path: /healthz, port: health}
  periodSeconds: 5
  failureThreshold: 120
livenessProbe:
  httpGet: {path: /healthz, port: health}
  periodSeconds: 10
  timeoutSeconds: 5
  failureThreshold: 3
readinessProbe:
  httpGet: {path: /readyz, port: health}
  periodSeconds: 5
  timeoutSeconds: 5
  failureThreshold: 2
{{- end -}}
