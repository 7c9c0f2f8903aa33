{{- define "rrm-control-plane.labels" -}}
app.kubernetes.io/part-of: rrm
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ .Chart.Name }}-{{ .Chart.Version }}
{{- end -}}

{{- define "rrm-control-plane.secretName" -}}
{{ .Values.existingSecret | default "rrm-control-plane" }}
{{- end -}}
