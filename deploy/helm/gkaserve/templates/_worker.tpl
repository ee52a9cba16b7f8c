{{/*
The pod template of a worker (prefill Deployment, decode StatefulSet): one container running
`binary` with the shared flags plus `args`, UCX settings, /dev/shm in memory, GPUs from
tpSize. Parameters: root, component, binary, role (the values block), args (extra flags).
*/}}
{{- define "gkaserve.workerPodTemplate" -}}
{{- $root := .root }}
{{- $role := .role -}}
metadata:
  labels:
    {{- include "gkaserve.labels" (dict "root" $root "component" .component) | nindent 4 }}
  annotations:
    checksum/config: {{ include (print $root.Template.BasePath "/configmap.yaml") $root | sha256sum }}
    {{- with $role.podAnnotations }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
spec:
  {{- include "gkaserve.podCommon" (dict "root" $root "role" $role) | nindent 2 }}
  affinity:
    {{- if $role.affinity }}
    {{- toYaml $role.affinity | nindent 4 }}
    {{- else }}
    # Spread pods of one role over nodes: each pod wants a whole GPU node.
    podAntiAffinity:
      preferredDuringSchedulingIgnoredDuringExecution:
        - weight: 100
          podAffinityTerm:
            topologyKey: kubernetes.io/hostname
            labelSelector:
              matchLabels:
                {{- include "gkaserve.selectorLabels" (dict "root" $root "component" .component) | nindent 16 }}
    {{- end }}
  {{- with include "gkaserve.modelInit" $root }}
  {{- . | nindent 2 }}
  {{- end }}
  containers:
    - name: {{ .component }}
      image: {{ include "gkaserve.image" $root }}
      imagePullPolicy: {{ $root.Values.image.pullPolicy }}
      command: [{{ .binary }}]
      args:
        - --model=$(GKA_MODEL_DIR)
        # Every router: the headless registry Service resolves to each router pod (ready or
        # not); the worker registers and heartbeats with each and re-resolves every 5 s.
        - --router-service={{ include "gkaserve.routerRegistryAddress" $root }}
        - --host=$(POD_IP)
        - --port={{ $role.grpcPort }}
        - --metrics-port={{ $role.metricsPort }}
        - --backend={{ $role.backend }}
        # One rank thread per GPU (tensor parallel); the pod asks for tpSize GPUs.
        - --tp={{ $role.tpSize }}
        - --vocab-limit={{ $root.Values.model.vocabLimit | int }}
        - --device-transfer={{ $role.deviceTransfer | default "auto" }}
        - --worker-id=$(POD_NAME)
        - --tiers=/etc/gkaserve/tiers.json
        # Finish calls in flight within the pod's grace period (SIGTERM, then SIGKILL).
        - --shutdown-grace-ms={{ $role.shutdownGraceMs }}
        - --health-port={{ $role.healthPort }}
        {{- include "gkaserve.tlsArgs" $root | nindent 8 }}
        {{- with .args }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
        {{- with $role.extraArgs }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
      env:
        {{- include "gkaserve.commonEnv" $root | nindent 8 }}
        {{- include "gkaserve.ucxEnv" $root | nindent 8 }}
        {{- with $role.visibleDevices }}
        - name: CUDA_VISIBLE_DEVICES
          value: {{ . | quote }}
        {{- end }}
        {{- with $role.extraEnv }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
      ports:
        - name: grpc
          containerPort: {{ $role.grpcPort }}
          protocol: TCP
        - name: health
          containerPort: {{ $role.healthPort }}
          protocol: TCP
        - name: metrics
          containerPort: {{ $role.metricsPort }}
          protocol: TCP
      # The gRPC port wants a client certificate, which the kubelet cannot present.
      {{- include "gkaserve.probes" (dict "port" $role.healthPort "readyService" "" "startupSeconds" $role.startupSeconds) | nindent 6 }}
      resources:
        {{- include "gkaserve.workerResources" (dict "role" $role "hugepages" $role.hugepages) | nindent 8 }}
      securityContext:
        {{- include "gkaserve.containerSecurityContext" (dict "root" $root "worker" true) | nindent 8 }}
      volumeMounts:
        {{- include "gkaserve.commonVolumeMounts" $root | nindent 8 }}
        - name: dshm
          mountPath: /dev/shm
        {{- if and $role.hugepages $role.hugepages.enabled }}
        - name: hugepages
          mountPath: /dev/hugepages
        {{- end }}
  volumes:
    {{- include "gkaserve.commonVolumes" $root | nindent 4 }}
    - name: dshm
      emptyDir:
        medium: Memory
        sizeLimit: {{ $role.shmSize }}
    {{- if and $role.hugepages $role.hugepages.enabled }}
    - name: hugepages
      emptyDir:
        medium: HugePages-{{ $role.hugepages.pageSize }}
    {{- end }}
{{- end }}
