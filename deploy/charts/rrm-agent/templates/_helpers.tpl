{{- define "rrm-agent.name" -}}
rrm-agent-{{ required "runtime is required" .Values.runtime }}
{{- end -}}

{{- define "rrm-agent.labels" -}}
app.kubernetes.io/name: rrm-agent
app.kubernetes.io/instance: {{ .Values.runtime }}
app.kubernetes.io/part-of: rrm
{{- end -}}
