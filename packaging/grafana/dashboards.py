#!/usr/bin/env python3
"""Writes sonde's Grafana dashboards (the JSON files beside this script).

    python3 packaging/grafana/dashboards.py [--check]

Four dashboards, each with node, namespace and pod variables:
  sonde-pod-network.json  traffic, drops by reason, resets by kind, retransmits, TCP
                          states, conntrack, qdiscs, per pod
  sonde-latency.json      socket, kernel, softirq, qdisc/driver, block I/O latency as
                          heatmaps of sonde's log2 histograms, and p99 per pod
  sonde-events.json       sonde's events in Loki (type, namespace and pod filters)
  sonde-health.json       sonde itself: scripts up, degraded, failed, memory, records
                          and events lost, handler time, series dropped, BTF source

Every metric name used here is one sonde exports with its built-in scripts
(tests/tests/kubernetes.rs checks each expression against a real scrape), and the
Loki stream selectors use only the labels sonde pushes (job, node, type). The Helm
chart ships the same files as ConfigMaps for the Grafana sidecar. Standard library
only; --check fails when a committed file differs from what this writes.
"""

import json
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))

PROM = {"type": "prometheus", "uid": "${datasource}"}
LOKI = {"type": "loki", "uid": "${loki}"}
# Every per-pod series carries node, namespace and pod ("" for the host's own).
POD = 'node=~"$node", namespace=~"$namespace", pod=~"$pod"'
NODE = 'node=~"$node"'
RI = "$__rate_interval"


class Layout:
    """Places panels left to right in rows of 24 grid units."""

    def __init__(self):
        self.panels = []
        self.x = 0
        self.y = 0
        self.row_h = 0
        self.next_id = 1

    def add(self, panel, w=12, h=8):
        if self.x + w > 24:
            self.x, self.y, self.row_h = 0, self.y + self.row_h, 0
        panel["id"] = self.next_id
        self.next_id += 1
        panel["gridPos"] = {"x": self.x, "y": self.y, "w": w, "h": h}
        self.x += w
        self.row_h = max(self.row_h, h)
        self.panels.append(panel)

    def row(self, title):
        if self.x:
            self.x, self.y, self.row_h = 0, self.y + self.row_h, 0
        self.add({"type": "row", "title": title, "collapsed": False, "panels": []}, w=24, h=1)
        self.x, self.y, self.row_h = 0, self.y + 1, 0


def target(expr, legend="", ref="A", fmt=None, instant=False, ds=PROM):
    t = {"datasource": ds, "expr": expr, "refId": ref, "legendFormat": legend}
    if fmt:
        t["format"] = fmt
    if instant:
        t["instant"] = True
        t["range"] = False
    return t


def timeseries(title, targets, unit="short", description="", stack=False, ds=PROM):
    return {
        "type": "timeseries",
        "title": title,
        "description": description,
        "datasource": ds,
        "targets": refs(targets),
        "fieldConfig": {
            "defaults": {
                "unit": unit,
                "custom": {
                    "drawStyle": "line",
                    "lineWidth": 1,
                    "fillOpacity": 20 if stack else 0,
                    "stacking": {"mode": "normal" if stack else "none", "group": "A"},
                    "showPoints": "never",
                },
            },
            "overrides": [],
        },
        "options": {
            "legend": {"displayMode": "table", "placement": "right", "calcs": ["max", "lastNotNull"]},
            "tooltip": {"mode": "multi", "sort": "desc"},
        },
    }


def heatmap(title, expr, description=""):
    """A heatmap of a Prometheus histogram's buckets (already cumulative: not
    recalculated by Grafana)."""
    return {
        "type": "heatmap",
        "title": title,
        "description": description,
        "datasource": PROM,
        "targets": [target(expr, "{{le}}", fmt="heatmap")],
        "fieldConfig": {"defaults": {"custom": {"hideFrom": {"legend": False, "tooltip": False, "viz": False}}}, "overrides": []},
        "options": {
            "calculate": False,
            "yAxis": {"axisPlacement": "left", "unit": "s", "reverse": False},
            "rowsFrame": {"layout": "auto"},
            "color": {"mode": "scheme", "scheme": "Spectral", "steps": 64, "exponent": 0.5, "fill": "dark-orange", "reverse": False},
            "cellGap": 1,
            "filterValues": {"le": 1e-9},
            "tooltip": {"show": True, "yHistogram": False},
            "legend": {"show": True},
            "exemplars": {"color": "rgba(255,0,255,0.7)"},
        },
    }


def table(title, targets, description=""):
    return {
        "type": "table",
        "title": title,
        "description": description,
        "datasource": PROM,
        "targets": refs(targets),
        "fieldConfig": {"defaults": {}, "overrides": []},
        "options": {"showHeader": True, "cellHeight": "sm"},
        "transformations": [
            {"id": "merge", "options": {}},
            {"id": "organize", "options": {"excludeByName": {"Time": True, "__name__": True, "job": True, "instance": True}}},
        ],
    }


def stat(title, expr, unit="short", description="", thresholds=None):
    steps = thresholds or [{"color": "green", "value": None}]
    return {
        "type": "stat",
        "title": title,
        "description": description,
        "datasource": PROM,
        "targets": [target(expr, instant=True)],
        "fieldConfig": {"defaults": {"unit": unit, "thresholds": {"mode": "absolute", "steps": steps}}, "overrides": []},
        "options": {"reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False}, "colorMode": "background", "graphMode": "none", "textMode": "auto"},
    }


def refs(targets):
    for i, t in enumerate(targets):
        t["refId"] = chr(ord("A") + i)
    return targets


def prom_var(name, label, query, multi=True):
    return {
        "name": name,
        "label": label,
        "type": "query",
        "datasource": PROM,
        "query": {"query": query, "refId": f"{name}-var"},
        "definition": query,
        "refresh": 2,
        "includeAll": True,
        "multi": multi,
        "allValue": ".*",
        "current": {"selected": True, "text": ["All"], "value": ["$__all"]},
        "sort": 1,
    }


def ds_var(name, label, kind):
    return {"name": name, "label": label, "type": "datasource", "query": kind, "refresh": 1, "current": {}, "hide": 0}


def pod_vars():
    # netdev has a series for every network namespace sonde sees, so it lists every pod.
    return [
        ds_var("datasource", "Prometheus", "prometheus"),
        prom_var("node", "node", "label_values(sonde_build_info, node)"),
        prom_var("namespace", "namespace", 'label_values(sonde_netdev_receive_bytes_total{node=~"$node"}, namespace)'),
        prom_var("pod", "pod", 'label_values(sonde_netdev_receive_bytes_total{node=~"$node", namespace=~"$namespace"}, pod)'),
    ]


def dashboard(uid, title, description, panels, variables, refresh="30s"):
    return {
        "uid": uid,
        "title": title,
        "description": description,
        "tags": ["sonde", "network", "ebpf"],
        "schemaVersion": 39,
        "version": 1,
        "editable": True,
        "graphTooltip": 1,
        "time": {"from": "now-1h", "to": "now"},
        "timepicker": {},
        "timezone": "",
        "refresh": refresh,
        "fiscalYearStartMonth": 0,
        "liveNow": False,
        "weekStart": "",
        "annotations": {"list": []},
        "links": [{"type": "dashboards", "tags": ["sonde"], "asDropdown": True, "title": "sonde", "includeVars": True, "keepTime": True}],
        "templating": {"list": variables},
        "panels": panels,
    }


def pod_network():
    L = Layout()
    L.row("Traffic")
    L.add(timeseries("Received per pod", [target(f"sum by (namespace, pod) (rate(sonde_netdev_receive_bytes_total{{{POD}}}[{RI}]))", "{{namespace}}/{{pod}}")], "Bps",
                     "Bytes received on the pod's interfaces (/proc/<pid>/net/dev of its network namespace)."))
    L.add(timeseries("Sent per pod", [target(f"sum by (namespace, pod) (rate(sonde_netdev_transmit_bytes_total{{{POD}}}[{RI}]))", "{{namespace}}/{{pod}}")], "Bps"))
    L.add(timeseries("Traffic by direction, protocol and peer", [target(f"sum by (direction, protocol, peer) (rate(sonde_flow_bytes_total{{{POD}}}[{RI}]))", "{{direction}} {{protocol}} {{peer}}")], "Bps",
                     "The flow probe (TC on each interface): bytes by direction, protocol and whether the peer is a pod, the node or external."))
    L.add(timeseries("Packets by direction and protocol", [target(f"sum by (direction, protocol) (rate(sonde_flow_packets_total{{{POD}}}[{RI}]))", "{{direction}} {{protocol}}")], "pps"))

    L.row("Drops")
    L.add(timeseries("Drops by reason", [target(f"sum by (reason) (rate(sonde_packet_loss_packets_total{{{POD}}}[{RI}]))", "{{reason}}")], "pps",
                     "Packets the kernel freed as dropped (skb:kfree_skb), by drop reason.", stack=True))
    L.add(timeseries("Drops per pod", [target(f"topk(10, sum by (namespace, pod) (rate(sonde_packet_loss_packets_total{{{POD}, reason!=\"NOT_SPECIFIED\"}}[{RI}])))", "{{namespace}}/{{pod}}")], "pps",
                     "Top 10 pods by drops with a reason (NOT_SPECIFIED left out)."))
    L.add(timeseries("Interface drops and errors", [
        target(f"sum by (namespace, pod, device) (rate(sonde_netdev_receive_dropped_total{{{POD}}}[{RI}]))", "rx dropped {{namespace}}/{{pod}} {{device}}"),
        target(f"sum by (namespace, pod, device) (rate(sonde_netdev_transmit_dropped_total{{{POD}}}[{RI}]))", "tx dropped {{namespace}}/{{pod}} {{device}}"),
        target(f"sum by (namespace, pod, device) (rate(sonde_netdev_receive_errors_total{{{POD}}}[{RI}]) + rate(sonde_netdev_transmit_errors_total{{{POD}}}[{RI}]))", "errors {{namespace}}/{{pod}} {{device}}"),
    ], "pps"))
    L.add(timeseries("Socket buffer refusals", [target(f"sum by (namespace, pod, kind, protocol) (rate(sonde_sock_pressure_refusals_total{{{POD}}}[{RI}]))", "{{namespace}}/{{pod}} {{kind}} {{protocol}}")], "pps",
                     "Packets or memory refused to a socket for a full receive queue or buffer."))

    L.row("TCP")
    L.add(timeseries("Resets by kind", [target(f"sum by (kind) (rate(sonde_tcp_reset_segments_total{{{POD}}}[{RI}]))", "{{kind}}")], "pps",
                     "RSTs sent (ACTIVE, NOSOCK) and received (RECEIVE), per kind.", stack=True))
    L.add(timeseries("Resets per pod", [target(f"topk(10, sum by (namespace, pod) (rate(sonde_tcp_reset_segments_total{{{POD}}}[{RI}])))", "{{namespace}}/{{pod}}")], "pps"))
    L.add(timeseries("Retransmitted segments per pod", [target(f"topk(10, sum by (namespace, pod) (rate(sonde_tcp_retrans_segments_total{{{POD}}}[{RI}])))", "{{namespace}}/{{pod}}")], "pps"))
    L.add(timeseries("Retransmit ratio per pod", [target(
        f"topk(10, sum by (namespace, pod) (rate(sonde_tcp_retrans_segments_total{{{POD}}}[{RI}])) / sum by (namespace, pod) (rate(sonde_snmp_tcp_out_segs_total{{{POD}}}[{RI}])))",
        "{{namespace}}/{{pod}}")], "percentunit", "Retransmitted segments / segments sent (Tcp OutSegs)."))
    L.add(timeseries("Sockets by TCP state", [target(f"sum by (state) (sonde_tcpsummary_sockets{{{POD}}})", "{{state}}")], "short",
                     "TCP sockets per state (sock_diag of each pod's namespace).", stack=True))
    L.add(timeseries("Failed connects by reason", [target(f"sum by (reason) (rate(sonde_tcp_state_connect_failures_total{{{POD}}}[{RI}]))", "{{reason}}")], "ops"))
    L.add(timeseries("State transitions", [target(f"topk(10, sum by (from, to) (rate(sonde_tcp_state_transitions_total{{{POD}}}[{RI}])))", "{{from}} → {{to}}")], "ops"))
    L.add(timeseries("Listen queue overflows and drops", [
        target(f"sum by (namespace, pod) (rate(sonde_tcpext_listen_overflows_total{{{POD}}}[{RI}]))", "overflows {{namespace}}/{{pod}}"),
        target(f"sum by (namespace, pod) (rate(sonde_tcpext_listen_drops_total{{{POD}}}[{RI}]))", "drops {{namespace}}/{{pod}}"),
    ], "ops"))

    L.row("conntrack and qdiscs")
    L.add(timeseries("conntrack usage", [target(f"sonde_conntrack_entries{{{POD}}} / (sonde_conntrack_max_entries{{{POD}}} > 0)", "{{namespace}}/{{pod}}")], "percentunit",
                     "Entries / limit of each namespace's conntrack table."))
    L.add(timeseries("conntrack drops and failures", [
        target(f"sum by (namespace, pod) (rate(sonde_conntrack_drop_total{{{POD}}}[{RI}]))", "drop {{namespace}}/{{pod}}"),
        target(f"sum by (namespace, pod) (rate(sonde_conntrack_early_drop_total{{{POD}}}[{RI}]))", "early drop {{namespace}}/{{pod}}"),
        target(f"sum by (namespace, pod) (rate(sonde_conntrack_insert_failed_total{{{POD}}}[{RI}]))", "insert failed {{namespace}}/{{pod}}"),
    ], "ops"))
    L.add(timeseries("qdisc backlog", [target(f"sum by (namespace, pod, device, kind) (sonde_qdisc_backlog_bytes{{{POD}}})", "{{namespace}}/{{pod}} {{device}} {{kind}}")], "bytes"))
    L.add(timeseries("qdisc drops, overlimits, requeues", [
        target(f"sum by (namespace, pod, device) (rate(sonde_qdisc_dropped_packets_total{{{POD}}}[{RI}]))", "dropped {{namespace}}/{{pod}} {{device}}"),
        target(f"sum by (namespace, pod, device) (rate(sonde_qdisc_overlimits_total{{{POD}}}[{RI}]))", "overlimits {{namespace}}/{{pod}} {{device}}"),
        target(f"sum by (namespace, pod, device) (rate(sonde_qdisc_requeues_total{{{POD}}}[{RI}]))", "requeues {{namespace}}/{{pod}} {{device}}"),
    ], "pps"))
    return dashboard("sonde-pod-network", "sonde / Pod network",
                     "Per-pod network health from sonde: traffic, drops, resets, retransmits, TCP states, conntrack and qdiscs.",
                     L.panels, pod_vars())


def latency():
    L = Layout()

    def hist(title, metric, sel, description):
        L.add(heatmap(title, f"sum by (le) (rate({metric}_bucket{{{sel}}}[{RI}]))", description))

    # Classic buckets (text scrapes) or the native histogram (a Prometheus with
    # --enable-feature=native-histograms scrapes protobuf: no _bucket series).
    def p99(title, metric, sel, by, legend):
        classic = f"histogram_quantile(0.99, sum by ({by}, le) (rate({metric}_bucket{{{sel}}}[{RI}])))"
        native = f"histogram_quantile(0.99, sum by ({by}) (rate({metric}{{{sel}}}[{RI}])))"
        L.add(timeseries(title, [target(f"{classic} or {native}", legend)], "s"))

    L.row("Socket")
    hist("Socket read latency", "sonde_socket_latency_seconds", f'{POD}, direction="read"',
         "Time data waits in a socket before the application reads it.")
    p99("Socket latency p99 per pod", "sonde_socket_latency_seconds", POD, "namespace, pod, direction", "{{namespace}}/{{pod}} {{direction}}")
    L.row("Kernel")
    hist("Kernel receive latency", "sonde_kernel_latency_seconds", f'{POD}, direction="rx"',
         "Time a received packet spends in the kernel, from netif_receive_skb to the reader.")
    hist("Kernel transmit latency", "sonde_kernel_latency_seconds", f'{POD}, direction="tx"',
         "Time a sent packet spends in the kernel, from TCP's departure stamp to net_dev_queue.")
    p99("Kernel latency p99 per pod and interval", "sonde_kernel_latency_seconds", POD, "namespace, pod, direction, interval", "{{namespace}}/{{pod}} {{direction}} {{interval}}")
    L.row("softirq (per node)")
    hist("NET_RX softirq delay", "sonde_softirq_delay_seconds", f'{NODE}, vector="NET_RX"',
         "From softirq raise to entry: how long received packets wait for the CPU.")
    hist("NET_RX softirq run time", "sonde_softirq_run_seconds", f'{NODE}, vector="NET_RX"', "Time one NET_RX softirq runs.")
    p99("softirq delay p99 per vector", "sonde_softirq_delay_seconds", NODE, "node, vector", "{{node}} {{vector}}")
    L.row("qdisc and driver")
    hist("Time in the qdisc", "sonde_netif_txlat_qdisc_seconds", POD, "From net_dev_queue to the driver's start_xmit.")
    hist("Time in the driver", "sonde_netif_txlat_driver_seconds", POD, "From start_xmit to the driver's return.")
    p99("qdisc p99 per interface", "sonde_netif_txlat_qdisc_seconds", POD, "namespace, pod, interface", "{{namespace}}/{{pod}} {{interface}}")
    L.row("Block I/O (per node)")
    hist("Block I/O latency", "sonde_bio_latency_seconds", NODE, "From block_rq_issue to block_rq_complete, every disk and op.")
    p99("Block I/O p99 per disk and op", "sonde_bio_latency_seconds", NODE, "node, disk, op", "{{node}} {{disk}} {{op}}")
    L.row("Connections")
    hist("TCP connection lifetime", "sonde_tcp_state_connection_lifetime_seconds", POD, "From SYN to CLOSE, per connection.")
    return dashboard("sonde-latency", "sonde / Latency",
                     "Where time goes for pods' packets: socket, kernel, softirq, qdisc and driver, block I/O (sonde's log2 histograms).",
                     L.panels, pod_vars())


def events():
    L = Layout()
    # Stream labels sonde pushes: job (sonde unless configured), node, type. The pod
    # and namespace are in the JSON line: `| json` makes them labels_namespace/labels_pod.
    stream = '{job="sonde", node=~"$node", type=~"$type"}'
    filt = '| json | labels_namespace=~"$namespace" | labels_pod=~"$pod"'
    L.add({
        "type": "timeseries",
        "title": "Events by type",
        "description": "Events per second pushed by sonde to Loki, by type.",
        "datasource": LOKI,
        "targets": [{"datasource": LOKI, "refId": "A", "expr": f"sum by (type) (count_over_time({stream} {filt} [$__auto]))", "legendFormat": "{{type}}", "queryType": "range"}],
        "fieldConfig": {"defaults": {"unit": "short", "custom": {"drawStyle": "bars", "stacking": {"mode": "normal", "group": "A"}, "fillOpacity": 80}}, "overrides": []},
        "options": {"legend": {"displayMode": "list", "placement": "bottom"}, "tooltip": {"mode": "multi", "sort": "desc"}},
    }, w=24, h=8)
    L.add({
        "type": "logs",
        "title": "Events",
        "description": "Each line is one event as JSON: timestamp, type, labels (namespace, pod, node) and fields (the tuple, state, reason...).",
        "datasource": LOKI,
        "targets": [{"datasource": LOKI, "refId": "A", "expr": f"{stream} {filt}", "queryType": "range"}],
        "options": {"showTime": True, "wrapLogMessage": True, "prettifyLogMessage": False, "enableLogDetails": True, "sortOrder": "Descending", "dedupStrategy": "none", "showLabels": False, "showCommonLabels": False},
    }, w=24, h=20)
    variables = [
        ds_var("loki", "Loki", "loki"),
        ds_var("datasource", "Prometheus", "prometheus"),
        {"name": "node", "label": "node", "type": "query", "datasource": LOKI,
         "query": {"type": 1, "label": "node", "stream": '{job="sonde"}', "refId": "node-var"}, "definition": 'label_values({job="sonde"}, node)',
         "refresh": 2, "includeAll": True, "multi": True, "allValue": ".*", "current": {"selected": True, "text": ["All"], "value": ["$__all"]}, "sort": 1},
        {"name": "type", "label": "type", "type": "query", "datasource": LOKI,
         "query": {"type": 1, "label": "type", "stream": '{job="sonde", node=~"$node"}', "refId": "type-var"}, "definition": 'label_values({job="sonde", node=~"$node"}, type)',
         "refresh": 2, "includeAll": True, "multi": True, "allValue": ".+", "current": {"selected": True, "text": ["All"], "value": ["$__all"]}, "sort": 1},
        # Not stream labels: the choices come from Prometheus, the filter from the JSON line.
        prom_var("namespace", "namespace", 'label_values(sonde_netdev_receive_bytes_total{node=~"$node"}, namespace)'),
        prom_var("pod", "pod", 'label_values(sonde_netdev_receive_bytes_total{node=~"$node", namespace=~"$namespace"}, pod)'),
    ]
    return dashboard("sonde-events", "sonde / Events",
                     "sonde's events (resets, drops, slow packets...) from Loki, filtered by type, node, namespace and pod.",
                     L.panels, variables)


def health():
    L = Layout()
    red_if_any = [{"color": "green", "value": None}, {"color": "red", "value": 1}]
    L.row("Scripts")
    L.add(stat("Scripts up", f"sum(sonde_script_up{{{NODE}}})"), w=4, h=4)
    L.add(stat("Scripts down", f"count((sonde_script_up{{{NODE}}} == 0) unless on (node, script) (sonde_script_unavailable{{{NODE}}} == 1)) or vector(0)",
               description="Down and not unavailable by design.", thresholds=red_if_any), w=4, h=4)
    L.add(stat("Unavailable on this kernel", f"sum(sonde_script_unavailable{{{NODE}}})",
               description="Built-ins whose kernel program this kernel cannot run (sonde probes says why)."), w=4, h=4)
    L.add(stat("Degraded", f"sum(sonde_script_degraded{{{NODE}}})", thresholds=[{"color": "green", "value": None}, {"color": "orange", "value": 1}]), w=4, h=4)
    L.add(stat("Failures (1h)", f"sum(increase(sonde_script_failures_total{{{NODE}}}[1h])) or vector(0)", thresholds=red_if_any), w=4, h=4)
    L.add(stat("Series dropped (1h)", f"sum(increase(sonde_series_dropped_total{{{NODE}}}[1h]))", thresholds=red_if_any), w=4, h=4)
    L.add(table("Scripts", [
        target(f"sonde_script_up{{{NODE}}}", fmt="table", instant=True),
        target(f"sonde_script_unavailable{{{NODE}}}", fmt="table", instant=True),
        target(f"sonde_script_degraded{{{NODE}}}", fmt="table", instant=True),
        target(f"sonde_script_memory_bytes{{{NODE}}}", fmt="table", instant=True),
    ], "Per node and script: up, unavailable, degraded, memory (value columns A-D)."), w=24, h=8)
    L.add(timeseries("Script failures by kind", [target(f"sum by (node, script, kind) (increase(sonde_script_failures_total{{{NODE}}}[{RI}]))", "{{node}} {{script}} {{kind}}")], "short",
                     "sonde stopped the script: memory (over limits.memory), errors (every call failing for 30s), panic."))
    L.add(timeseries("Handler errors", [target(f"sum by (node, script, kind) (rate(sonde_script_errors_total{{{NODE}}}[{RI}]))", "{{node}} {{script}} {{kind}}")], "ops"))
    L.add(timeseries("Script memory", [target(f"sonde_script_memory_bytes{{{NODE}}}", "{{node}} {{script}}")], "bytes", "Measured in each script's allocator arena (limit: limits.memory)."))
    L.add(timeseries("Handler time", [target(f"sum by (node, script) (rate(sonde_script_handler_seconds_total{{{NODE}}}[{RI}]))", "{{node}} {{script}}")], "percentunit",
                     "CPU time in each script's handlers per second."))
    L.row("Records, events, series")
    L.add(timeseries("Records read", [target(f"sum by (node, script) (rate(sonde_probe_records_total{{{NODE}}}[{RI}]))", "{{node}} {{script}}")], "ops"))
    L.add(timeseries("Records lost or dropped", [
        target(f"sum by (node, script) (rate(sonde_probe_records_lost_total{{{NODE}}}[{RI}]))", "lost in the kernel {{node}} {{script}}"),
        target(f"sum by (node, script) (rate(sonde_script_records_dropped_total{{{NODE}}}[{RI}]))", "dropped, script behind {{node}} {{script}}"),
        target(f"sum by (node, script) (rate(sonde_probe_records_undecodable_total{{{NODE}}}[{RI}]))", "undecodable {{node}} {{script}}"),
    ], "ops"))
    L.add(timeseries("Events sent and dropped per sink", [
        target(f"sum by (node, sink) (rate(sonde_events_sent_total{{{NODE}}}[{RI}]))", "sent {{node}} {{sink}}"),
        target(f"sum by (node, sink) (rate(sonde_events_dropped_total{{{NODE}}}[{RI}]))", "dropped {{node}} {{sink}}"),
        target(f"sum by (node, sink) (rate(sonde_sink_errors_total{{{NODE}}}[{RI}]))", "errors {{node}} {{sink}}"),
    ], "ops"))
    L.add(timeseries("Series dropped (budget exhausted)", [target(f"sum by (node, metric) (rate(sonde_series_dropped_total{{{NODE}}}[{RI}])) > 0", "{{node}} {{metric}}")], "ops",
                     "New series refused past limits.series_budget."))
    L.row("Node")
    L.add(table("BTF, build and probes", [
        target(f"sonde_btf_info{{{NODE}}}", fmt="table", instant=True),
        target(f"sonde_build_info{{{NODE}}}", fmt="table", instant=True),
    ], "Which BTF source each node's sonde uses (sysfs, built-in, archive, image...) and its version."), w=12, h=8)
    L.add(table("Probe variants", [target(f"sonde_probe_info{{{NODE}}}", fmt="table", instant=True)],
                "The variant each kernel program runs as on each node (tracepoint, raw tracepoint, kprobe, tc)."), w=12, h=8)
    L.add(timeseries("Pods named through CRI", [
        target(f"sonde_pods_cri_up{{{NODE}}}", "CRI up {{node}}"),
        target(f"sum by (node, source) (sonde_pods_namespaces{{{NODE}}})", "{{node}} {{source}}"),
    ], "short"))
    # (sonde_source_errors_total is left out: it exists only after a source's first error.)
    L.add(timeseries("Config reloads", [
        target(f"sum by (node, result) (increase(sonde_config_reloads_total{{{NODE}}}[{RI}]))", "{{result}} {{node}}"),
    ], "short", "A rejected config or script keeps the running version: /status has the error."))
    L.add(timeseries("Scrape duration p99", [target(f"histogram_quantile(0.99, sum by (node, le) (rate(sonde_http_scrape_duration_seconds_bucket{{{NODE}}}[{RI}])))", "{{node}}")], "s"))
    L.add(timeseries("Kernel time of sonde's programs", [target(f"sum by (node, script) (rate(sonde_bpf_program_run_seconds_total{{{NODE}}}[{RI}]))", "{{node}} {{script}}")], "percentunit",
                     "Only with kernel.bpf_stats_enabled=1."))
    variables = [ds_var("datasource", "Prometheus", "prometheus"), prom_var("node", "node", "label_values(sonde_build_info, node)")]
    return dashboard("sonde-health", "sonde / Agent health",
                     "sonde itself on each node: scripts, memory, records and events lost, handler time, series budgets, BTF.",
                     L.panels, variables, refresh="1m")


DASHBOARDS = {
    "sonde-pod-network.json": pod_network,
    "sonde-latency.json": latency,
    "sonde-events.json": events,
    "sonde-health.json": health,
}


def main():
    check = "--check" in sys.argv[1:]
    stale = []
    for name, make in DASHBOARDS.items():
        text = json.dumps(make(), indent=2, ensure_ascii=False) + "\n"
        path = os.path.join(HERE, name)
        if check:
            try:
                with open(path) as f:
                    if f.read() != text:
                        stale.append(name)
            except FileNotFoundError:
                stale.append(name)
        else:
            with open(path, "w") as f:
                f.write(text)
            print(f"wrote {path}")
    if stale:
        print(f"stale: {', '.join(stale)}: run `make -C packaging dashboards`", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
