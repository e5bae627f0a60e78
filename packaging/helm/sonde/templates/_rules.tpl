{{/*
The alert rules: the one source of the PrometheusRule (prometheusrule.yaml) and of
the plain rules file packaging/prometheus/sonde-rules.yaml, which
packaging/prometheus/generate.py renders from this template with the default
values. Thresholds come from .Values.prometheusRule.
*/}}
{{- define "sonde.ruleGroups" -}}
{{- $r := .Values.prometheusRule -}}
{{- $t := $r.thresholds -}}
{{- $w := $r.rateWindow -}}
{{- $pod := "node, namespace, pod" -}}
{{- /* A pod, or the node's own namespace (namespace and pod empty). */ -}}
{{- $where := `{{ if $labels.pod }}{{ $labels.namespace }}/{{ $labels.pod }}{{ else }}the host network namespace{{ end }}` -}}
- name: sonde-traffic
  rules:
    - alert: SondePodTcpResets
      expr: |
        sum by ({{ $pod }}) (rate(sonde_tcp_reset_segments_total[{{ $w }}])) > {{ $t.resetsPerSecond }}
      for: {{ $r.for.traffic }}
      labels:
        severity: {{ $r.severity.traffic }}
        {{- with $r.additionalLabels }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
      annotations:
        summary: "{{`TCP resets in `}}{{ $where }}{{` on {{ $labels.node }}`}}"
        description: "{{ $where }}{{` sends or receives {{ $value | humanize }} TCP resets per second`}} (threshold {{ $t.resetsPerSecond }}). Refused connections (NOSOCK), aborts and resets from peers are split by kind in sonde_tcp_reset_segments_total; the events (TCPRESET_*) carry the tuples."
    - alert: SondePodPacketDrops
      expr: |
        sum by ({{ $pod }}) (rate(sonde_packet_loss_packets_total{reason!~"{{ $t.dropsIgnoredReasons }}"}[{{ $w }}])) > {{ $t.dropsPerSecond }}
      for: {{ $r.for.traffic }}
      labels:
        severity: {{ $r.severity.traffic }}
        {{- with $r.additionalLabels }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
      annotations:
        summary: "{{`Packet drops in `}}{{ $where }}{{` on {{ $labels.node }}`}}"
        description: "{{`The kernel drops {{ $value | humanize }} packets per second in `}}{{ $where }} (threshold {{ $t.dropsPerSecond }}, reasons matching {{ $t.dropsIgnoredReasons }} left out). sonde_packet_loss_packets_total has the drop reasons."
    - alert: SondePodTcpRetransmits
      expr: |
        (
          sum by ({{ $pod }}) (rate(sonde_tcp_retrans_segments_total[{{ $w }}]))
            / sum by ({{ $pod }}) (rate(sonde_snmp_tcp_out_segs_total[{{ $w }}]))
        ) > {{ $t.retransmitRatio }}
        and sum by ({{ $pod }}) (rate(sonde_snmp_tcp_out_segs_total[{{ $w }}])) > {{ $t.retransmitMinSegmentsPerSecond }}
      for: {{ $r.for.traffic }}
      labels:
        severity: {{ $r.severity.traffic }}
        {{- with $r.additionalLabels }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
      annotations:
        summary: "{{`TCP retransmits in `}}{{ $where }}{{` on {{ $labels.node }}`}}"
        description: "{{`{{ $value | humanizePercentage }} of the TCP segments `}}{{ $where }}{{` sends are retransmissions`}} (threshold {{ $t.retransmitRatio }})."
    - alert: SondePodSocketLatency
      expr: |
        (
          histogram_quantile(0.99, sum by ({{ $pod }}, direction, le) (rate(sonde_socket_latency_seconds_bucket[{{ $w }}])))
          or
          histogram_quantile(0.99, sum by ({{ $pod }}, direction) (rate(sonde_socket_latency_seconds[{{ $w }}])))
        ) > {{ $t.socketLatencySeconds }}
      for: {{ $r.for.traffic }}
      labels:
        severity: {{ $r.severity.traffic }}
        {{- with $r.additionalLabels }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
      annotations:
        summary: "{{`Slow socket {{ $labels.direction }}s in `}}{{ $where }}{{` on {{ $labels.node }}`}}"
        description: "{{`The 99th percentile of socket {{ $labels.direction }} latency in `}}{{ $where }}{{` is {{ $value | humanizeDuration }}`}} (threshold {{ $t.socketLatencySeconds }}s): data waits in the socket before the application takes it."
    - alert: SondeConntrackNearLimit
      expr: |
        sonde_conntrack_entries / (sonde_conntrack_max_entries > 0) > {{ $t.conntrackUsage }}
      for: {{ $r.for.traffic }}
      labels:
        severity: {{ $r.severity.traffic }}
        {{- with $r.additionalLabels }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
      annotations:
        summary: "{{`conntrack table nearly full in `}}{{ $where }}{{` on {{ $labels.node }}`}}"
        description: "{{`conntrack holds {{ $value | humanizePercentage }} of its limit`}} (threshold {{ $t.conntrackUsage }}); new connections are dropped once it is full."
- name: sonde-agent
  rules:
    - alert: SondeScriptDown
      # A built-in whose kernel program this kernel cannot run is down by design
      # (sonde_script_unavailable 1): left out.
      expr: |
        sonde_script_up == 0 unless on (node, script) sonde_script_unavailable == 1
      for: {{ $r.for.sonde }}
      labels:
        severity: {{ $r.severity.sonde }}
        {{- with $r.additionalLabels }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
      annotations:
        summary: "{{`sonde script {{ $labels.script }} is down on {{ $labels.node }}`}}"
        description: "{{`Script {{ $labels.script }} is not running on {{ $labels.node }}: its last error is in sonde's /status and log.`}}"
    - alert: SondeScriptFailed
      expr: |
        increase(sonde_script_failures_total[15m]) > 0
      labels:
        severity: {{ $r.severity.sonde }}
        {{- with $r.additionalLabels }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
      annotations:
        summary: "{{`sonde stopped script {{ $labels.script }} on {{ $labels.node }} ({{ $labels.kind }})`}}"
        description: "{{`sonde stopped {{ $labels.script }} for {{ $labels.kind }} (memory: over limits.memory; errors: every handler call failed for 30s). It is retried with a backoff.`}}"
    - alert: SondeScriptDegraded
      expr: |
        sonde_script_degraded == 1
      for: {{ $r.for.sonde }}
      labels:
        severity: {{ $r.severity.sonde }}
        {{- with $r.additionalLabels }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
      annotations:
        summary: "{{`sonde script {{ $labels.script }} is degraded on {{ $labels.node }}`}}"
        description: "{{`{{ $labels.script }} has failing handlers or drops records; /status has the last handler error.`}}"
    - alert: SondeRecordsLost
      expr: |
        sum by (node, script) (increase(sonde_probe_records_lost_total[{{ $w }}])) > 0
        or sum by (node, script) (increase(sonde_script_records_dropped_total[{{ $w }}])) > 0
      for: {{ $r.for.sonde }}
      labels:
        severity: {{ $r.severity.sonde }}
        {{- with $r.additionalLabels }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
      annotations:
        summary: "{{`sonde loses records of {{ $labels.script }} on {{ $labels.node }}`}}"
        description: "{{`{{ $value | humanize }} records of {{ $labels.script }} were lost in the kernel buffer or dropped because the script fell behind (limits.max_backlog).`}}"
    - alert: SondeEventsDropped
      expr: |
        sum by (node, sink) (increase(sonde_events_dropped_total[{{ $w }}])) > 0
      for: {{ $r.for.sonde }}
      labels:
        severity: {{ $r.severity.sonde }}
        {{- with $r.additionalLabels }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
      annotations:
        summary: "{{`sonde drops events for sink {{ $labels.sink }} on {{ $labels.node }}`}}"
        description: "{{`{{ $value | humanize }} events were dropped: the {{ $labels.sink }} sink is slow or unreachable and its queue is full.`}}"
    - alert: SondeSeriesBudgetExhausted
      expr: |
        sum by (node, metric) (increase(sonde_series_dropped_total[{{ $w }}])) > 0
      for: {{ $r.for.sonde }}
      labels:
        severity: {{ $r.severity.sonde }}
        {{- with $r.additionalLabels }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
      annotations:
        summary: "{{`{{ $labels.metric }} is over its series budget on {{ $labels.node }}`}}"
        description: "{{`New series of {{ $labels.metric }} are dropped (limits.series_budget): raise the budget or drop a label.`}}"
{{- end }}
