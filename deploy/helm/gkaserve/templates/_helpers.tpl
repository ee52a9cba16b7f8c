{{/*
Names and labels. Every object carries the standard app.kubernetes.io labels; `component` is
router, prefill or decode, and the NetworkPolicies and PodMonitor select on it.
*/}}
{{- define "gkaserve.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "gkaserve.fullname" -}}
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

{{/* Object name for a component: <fullname>-<component>, within DNS label limits. */}}
{{- define "gkaserve.componentName" -}}
{{- printf "%s-%s" (include "gkaserve.fullname" .root) .component | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "gkaserve.selectorLabels" -}}
app.kubernetes.io/name: {{ include "gkaserve.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
{{- with .component }}
app.kubernetes.io/component: {{ . }}
{{- end }}
{{- end }}

{{- define "gkaserve.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .root.Chart.Name .root.Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "gkaserve.selectorLabels" . }}
app.kubernetes.io/version: {{ .root.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .root.Release.Service }}
app.kubernetes.io/part-of: gkaserve
{{- with .root.Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{- define "gkaserve.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "gkaserve.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "gkaserve.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}

{{/* Where workers find every router: the headless registry Service (all router pods). */}}
{{- define "gkaserve.routerRegistryAddress" -}}
{{- printf "%s-registry:%d" (include "gkaserve.componentName" (dict "root" . "component" "router")) (int .Values.router.internalPort) }}
{{- end }}

{{/*
Mutual TLS between routers and workers (values: tls): the flags, the Secret's volume and its
mount. validate.yaml makes sure there is a Secret or an explicit tls.insecure.
*/}}
{{- define "gkaserve.tlsArgs" -}}
{{- if .Values.tls.insecure }}
- --insecure
{{- else }}
- --tls-ca=/etc/gkaserve-tls/ca.crt
- --tls-cert=/etc/gkaserve-tls/tls.crt
- --tls-key=/etc/gkaserve-tls/tls.key
- --tls-server-name={{ .Values.tls.serverName }}
{{- end }}
{{- end }}

{{- define "gkaserve.tlsVolumeMounts" -}}
{{- if not .Values.tls.insecure }}
- name: tls
  mountPath: /etc/gkaserve-tls
  readOnly: true
{{- end }}
{{- end }}

{{- define "gkaserve.tlsVolumes" -}}
{{- if not .Values.tls.insecure }}
- name: tls
  secret:
    secretName: {{ .Values.tls.existingSecret }}
    defaultMode: 0400
{{- end }}
{{- end }}

{{- define "gkaserve.modelPath" -}}
{{- printf "/models/%s" .Values.model.dir }}
{{- end }}

{{/*
Environment every container gets. POD_IP is where workers listen and what they register with
the router (they advertise their listen address, so 0.0.0.0 would be unreachable for peers).
*/}}
{{- define "gkaserve.commonEnv" -}}
- name: POD_NAME
  valueFrom:
    fieldRef:
      fieldPath: metadata.name
- name: POD_IP
  valueFrom:
    fieldRef:
      fieldPath: status.podIP
- name: GKA_MODEL_DIR
  valueFrom:
    configMapKeyRef:
      name: {{ include "gkaserve.fullname" . }}
      key: model_dir
- name: GKA_MODEL_NAME
  valueFrom:
    configMapKeyRef:
      name: {{ include "gkaserve.fullname" . }}
      key: model_name
{{- end }}

{{/* UCX settings for the workers (the router moves no tensors). */}}
{{- define "gkaserve.ucxEnv" -}}
- name: UCX_TLS
  value: {{ .Values.ucx.transports | quote }}
- name: UCX_NET_DEVICES
  value: {{ .Values.ucx.netDevices | quote }}
- name: UCX_TCP_PORT_RANGE
  value: {{ printf "%d-%d" (int .Values.ucx.tcpPortRange.start) (int .Values.ucx.tcpPortRange.end) | quote }}
{{- with .Values.ucx.extraEnv }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/*
Container security: non-root (from the pod context), nothing escalates, root filesystem
read-only. Workers may add IPC_LOCK for RDMA registration (ucx.ipcLock).
*/}}
{{- define "gkaserve.containerSecurityContext" -}}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
capabilities:
  drop: [ALL]
  {{- if and .worker .root.Values.ucx.ipcLock }}
  add: [IPC_LOCK]
  {{- end }}
{{- end }}

{{/*
gRPC probes, as the kubelet runs them (grpc.health.v1 on the gRPC port). Startup covers model
loading; readiness asks for `service` (the router's GenerateService is SERVING only with at
least one healthy prefill and decode worker); liveness asks for the whole server.
*/}}
{{- define "gkaserve.probes" -}}
startupProbe:
  grpc:
    port: {{ .port }}
  periodSeconds: 10
  timeoutSeconds: 5
  failureThreshold: {{ max 1 (div .startupSeconds 10) }}
readinessProbe:
  grpc:
    port: {{ .port }}
    {{- with .readyService }}
    service: {{ . }}
    {{- end }}
  periodSeconds: 5
  timeoutSeconds: 3
  failureThreshold: 2
livenessProbe:
  grpc:
    port: {{ .port }}
  periodSeconds: 10
  timeoutSeconds: 5
  failureThreshold: 3
{{- end }}

{{- define "gkaserve.modelVolume" -}}
- name: model
{{- if eq .Values.model.source "pvc" }}
  persistentVolumeClaim:
    claimName: {{ .Values.model.pvc.claimName }}
    readOnly: true
{{- else }}
  emptyDir:
    sizeLimit: {{ .Values.model.init.sizeLimit }}
{{- end }}
{{- end }}

{{/* Volumes every pod has: the config, the model, a writable /tmp. */}}
{{- define "gkaserve.commonVolumes" -}}
- name: config
  configMap:
    name: {{ include "gkaserve.fullname" . }}
{{ include "gkaserve.modelVolume" . }}
- name: tmp
  emptyDir:
    sizeLimit: 1Gi
{{- with include "gkaserve.tlsVolumes" . }}
{{ . }}
{{- end }}
{{- end }}

{{- define "gkaserve.commonVolumeMounts" -}}
- name: config
  mountPath: /etc/gkaserve
  readOnly: true
- name: model
  mountPath: /models
  readOnly: true
- name: tmp
  mountPath: /tmp
{{- with include "gkaserve.tlsVolumeMounts" . }}
{{ . }}
{{- end }}
{{- end }}

{{/* The init step that fills the model volume when model.source is "init". */}}
{{- define "gkaserve.modelInit" -}}
{{- if eq .Values.model.source "init" }}
initContainers:
  - name: fetch-model
    image: {{ .Values.model.init.image }}
    command:
      {{- toYaml .Values.model.init.command | nindent 6 }}
    env:
      - name: MODEL_DIR
        value: {{ .Values.model.dir | quote }}
      {{- with .Values.model.init.env }}
      {{- toYaml . | nindent 6 }}
      {{- end }}
    securityContext:
      {{- include "gkaserve.containerSecurityContext" (dict "root" . "worker" false) | nindent 6 }}
    volumeMounts:
      - name: model
        mountPath: /models
      - name: tmp
        mountPath: /tmp
    {{- with .Values.model.init.resources }}
    resources:
      {{- toYaml . | nindent 6 }}
    {{- end }}
{{- end }}
{{- end }}

{{/* Resources with the GPU count set from tpSize for CUDA workers (never set by hand). */}}
{{- define "gkaserve.workerResources" -}}
{{- $res := deepCopy (default dict .role.resources) }}
{{- $limits := default dict $res.limits }}
{{- if eq .role.backend "cuda" }}
{{- $_ := set $limits "nvidia.com/gpu" (int .role.tpSize) }}
{{- end }}
{{- with .hugepages }}
{{- if .enabled }}
{{- $_ := set $limits (printf "hugepages-%s" .pageSize) .amount }}
{{- end }}
{{- end }}
{{- $_ := set $res "limits" $limits }}
{{- toYaml $res }}
{{- end }}

{{/* Pod-level fields shared by every role. */}}
{{- define "gkaserve.podCommon" -}}
serviceAccountName: {{ include "gkaserve.serviceAccountName" .root }}
automountServiceAccountToken: false
enableServiceLinks: false
securityContext:
  {{- toYaml .root.Values.podSecurityContext | nindent 2 }}
{{- with .root.Values.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
terminationGracePeriodSeconds: {{ .role.terminationGracePeriodSeconds }}
{{- with .role.nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .role.tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end }}

{{/*
Per-tier SLO targets as recording rules, so one alert compares every tier's p99 with its own
target: tier:gka_ttft_seconds:target{tier="..."} in seconds. deploy/prometheus/tier_targets.py
writes the same group from a tier file for a Prometheus outside Kubernetes; a test keeps the
two equal.
*/}}
{{- define "gkaserve.tierTargetGroup" -}}
name: gkaserve-tier-targets
rules:
{{- range .Values.tiers.tiers }}
{{- if hasKey . "ttft_target_ms" }}
  - record: tier:gka_ttft_seconds:target
    expr: vector({{ divf .ttft_target_ms 1000.0 }})
    labels:
      tier: {{ .name }}
{{- end }}
{{- if hasKey . "itl_target_ms" }}
  - record: tier:gka_itl_seconds:target
    expr: vector({{ divf .itl_target_ms 1000.0 }})
    labels:
      tier: {{ .name }}
{{- end }}
{{- end }}
{{- end }}
