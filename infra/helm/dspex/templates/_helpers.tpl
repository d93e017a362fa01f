{{/* Names, labels and the container parts every dspex pod shares. */}}

{{- define "dspex.name" -}}
{{- .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "dspex.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "dspex.image" -}}
{{- printf "%s:%s" .Values.image.repository (.Values.image.tag | default .Chart.AppVersion) -}}
{{- end -}}

{{- define "dspex.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- .Values.serviceAccount.name | default (include "dspex.fullname" .) -}}
{{- else -}}
{{- .Values.serviceAccount.name | default "default" -}}
{{- end -}}
{{- end -}}

{{/* Labels of every object; "dspex.selector" with a component narrows to one kind. */}}
{{- define "dspex.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
app.kubernetes.io/name: {{ include "dspex.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}

{{- define "dspex.selector" -}}
app.kubernetes.io/name: {{ include "dspex.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{/* Pods that serve /metrics (every worker kind). */}}
{{- define "dspex.workerSelector" -}}
app.kubernetes.io/name: {{ include "dspex.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
dspex.io/metrics: "true"
{{- end -}}

{{/* Kafka connection and security: DSPEX_KAFKA_* as dspex.streams.config.KafkaSettings reads them. */}}
{{- define "dspex.kafkaEnv" -}}
- name: DSPEX_KAFKA_BOOTSTRAP
  value: {{ required "kafka.bootstrapServers is required" .Values.kafka.bootstrapServers | quote }}
- name: DSPEX_KAFKA_SECURITY_PROTOCOL
  value: {{ .Values.kafka.securityProtocol | quote }}
{{- if hasPrefix "SASL" .Values.kafka.securityProtocol }}
{{- if not .Values.kafka.sasl.existingSecret }}
{{- fail "kafka.sasl.existingSecret must name a Secret holding the SASL username and password" }}
{{- end }}
- name: DSPEX_KAFKA_SASL_MECHANISM
  value: {{ .Values.kafka.sasl.mechanism | quote }}
- name: DSPEX_KAFKA_SASL_USERNAME
  valueFrom:
    secretKeyRef:
      name: {{ .Values.kafka.sasl.existingSecret }}
      key: {{ .Values.kafka.sasl.usernameKey }}
- name: DSPEX_KAFKA_SASL_PASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ .Values.kafka.sasl.existingSecret }}
      key: {{ .Values.kafka.sasl.passwordKey }}
{{- end }}
{{- if .Values.kafka.tls.existingSecret }}
- name: DSPEX_KAFKA_SSL_CAFILE
  value: /etc/dspex/kafka-tls/{{ .Values.kafka.tls.caKey }}
{{- if .Values.kafka.tls.certKey }}
- name: DSPEX_KAFKA_SSL_CERTFILE
  value: /etc/dspex/kafka-tls/{{ .Values.kafka.tls.certKey }}
- name: DSPEX_KAFKA_SSL_KEYFILE
  value: /etc/dspex/kafka-tls/{{ required "kafka.tls.keyKey goes with kafka.tls.certKey" .Values.kafka.tls.keyKey }}
{{- end }}
{{- end }}
{{- end -}}

{{/* The environment of every container: Kafka, where state goes, the user's extra variables. */}}
{{- define "dspex.env" -}}
{{ include "dspex.kafkaEnv" . }}
- name: HOME
  value: /var/lib/dspex/home
- name: DSPEX_PROMETHEUS_TARGETS_DIR
  value: /var/lib/dspex/targets
{{- with .Values.env }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/* API keys from Secrets, for the kinds that call LMs. */}}
{{- define "dspex.lmEnv" -}}
{{- range .Values.lm.apiKeys }}
- name: {{ .name }}
  valueFrom:
    secretKeyRef:
      name: {{ required "lm.apiKeys[].secretName is required" .secretName }}
      key: {{ required "lm.apiKeys[].secretKey is required" .secretKey }}
{{- end }}
{{- end -}}

{{- define "dspex.lmArgs" -}}
{{- range .Values.lm.allowApiBases }}
- --allow-api-base
- {{ . | quote }}
{{- end }}
{{- range .Values.lm.apiKeys }}
- --allow-key-env
- {{ .name | quote }}
{{- end }}
{{- end -}}

{{- define "dspex.volumeMounts" -}}
- name: state
  mountPath: /var/lib/dspex
- name: tmp
  mountPath: /tmp
{{- if .Values.kafka.tls.existingSecret }}
- name: kafka-tls
  mountPath: /etc/dspex/kafka-tls
  readOnly: true
{{- end }}
{{- end -}}

{{- define "dspex.volumes" -}}
- name: state
  emptyDir: {}
- name: tmp
  emptyDir: {}
{{- if .Values.kafka.tls.existingSecret }}
- name: kafka-tls
  secret:
    secretName: {{ .Values.kafka.tls.existingSecret }}
{{- end }}
{{- end -}}

{{/* Pod-level settings shared by every Deployment; .root is the chart, .spec the kind's values. */}}
{{- define "dspex.podSpecCommon" -}}
serviceAccountName: {{ include "dspex.serviceAccountName" .root }}
terminationGracePeriodSeconds: {{ .root.Values.terminationGracePeriodSeconds }}
{{- with .root.Values.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .root.Values.podSecurityContext }}
securityContext:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with (.spec.nodeSelector | default .root.Values.nodeSelector) }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with (.spec.tolerations | default .root.Values.tolerations) }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with (.spec.affinity | default .root.Values.affinity) }}
affinity:
  {{- toYaml . | nindent 2 }}
{{- end }}
volumes:
  {{- include "dspex.volumes" .root | nindent 2 }}
{{- end -}}

{{- define "dspex.probe" -}}
httpGet:
  path: {{ .path }}
  port: metrics
periodSeconds: {{ .probe.periodSeconds }}
timeoutSeconds: {{ .probe.timeoutSeconds }}
failureThreshold: {{ .probe.failureThreshold }}
{{- end -}}

{{/* Largest replica count KEDA may set for a kind: its input topic's partitions unless given. */}}
{{- define "dspex.maxReplicas" -}}
{{- $partitions := get .root.Values.kafka.partitions .topic -}}
{{- .spec.autoscaling.maxReplicas | default $partitions -}}
{{- end -}}

{{/* NetworkPolicy egress: DNS plus the given rules, or nothing (egress not restricted). */}}
{{- define "dspex.egress" -}}
{{- if .Values.networkPolicy.egress -}}
egress:
  - ports:
      - port: 53
        protocol: UDP
      - port: 53
        protocol: TCP
  {{- toYaml .Values.networkPolicy.egress | nindent 2 }}
{{- end -}}
{{- end -}}
