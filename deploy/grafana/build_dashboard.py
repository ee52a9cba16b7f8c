#!/usr/bin/env python3
"""Builds deploy/grafana/gkaserve.json, the gkaserve Grafana dashboard.

    deploy/grafana/build_dashboard.py > deploy/grafana/gkaserve.json

Panels are declared here once, laid out on Grafana's 24-column grid by code; the JSON is
committed (Grafana, the chart's dashboard ConfigMap and reviewers read it) and a test checks
that it is what this script writes. Every query uses only docs/metrics.md names and the
recording rules of deploy/prometheus/rules; tests/deploy parses each one with promtool.
"""
import json
import sys

DS = {"type": "prometheus", "uid": "${datasource}"}
TIER = 'tier=~"$tier"'
RATE = "$__rate_interval"


def quantiles(metric, by, selector="", qs=(0.5, 0.9, 0.99)):
    """histogram_quantile targets for p50/p90/p99 of `metric` grouped by `by`."""
    sel = "{" + selector + "}" if selector else ""
    legend = " ".join("{{%s}}" % label for label in by.split(", "))
    return [(f"histogram_quantile({q}, sum by ({by}, le) (rate({metric}_bucket{sel}[{RATE}])))",
             f"p{int(q * 100)} {legend}") for q in qs]


class Layout:
    """Places panels left to right, rows of `h` units, on the 24-column grid."""

    def __init__(self):
        self.panels = []
        self.next_id = 1
        self.y = 0
        self.x = 0
        self.row_h = 0
        self.current_row = None

    def _id(self):
        self.next_id += 1
        return self.next_id - 1

    def row(self, title, repeat=None):
        self._newline()
        row = {"type": "row", "title": title, "collapsed": False, "id": self._id(),
               "gridPos": {"h": 1, "w": 24, "x": 0, "y": self.y}, "panels": []}
        if repeat:
            row["repeat"] = repeat
        self.panels.append(row)
        self.y += 1

    def _newline(self):
        if self.x:
            self.y += self.row_h
            self.x = 0
            self.row_h = 0

    def panel(self, title, description, targets, unit="short", w=8, h=8, kind="timeseries",
              stack=False, min_zero=True):
        if self.x + w > 24:
            self._newline()
        defaults = {"unit": unit}
        if min_zero:
            defaults["min"] = 0
        if kind == "timeseries":
            defaults["custom"] = {"stacking": {"mode": "normal" if stack else "none",
                                               "group": "A"},
                                  "fillOpacity": 20 if stack else 0}
        panel = {
            "type": kind,
            "title": title,
            "description": description,
            "id": self._id(),
            "gridPos": {"h": h, "w": w, "x": self.x, "y": self.y},
            "datasource": DS,
            "fieldConfig": {"defaults": defaults, "overrides": []},
            "options": {"legend": {"displayMode": "list", "placement": "bottom",
                                   "showLegend": True},
                        "tooltip": {"mode": "multi", "sort": "desc"}},
            "targets": [{"refId": chr(ord("A") + i), "datasource": DS, "expr": expr,
                         "legendFormat": legend}
                        for i, (expr, legend) in enumerate(targets)],
        }
        if kind == "stat":
            panel["options"] = {"reduceOptions": {"calcs": ["lastNotNull"], "fields": "",
                                                  "values": False},
                                "colorMode": "value", "graphMode": "area",
                                "textMode": "value_and_name"}
        self.panels.append(panel)
        self.x += w
        self.row_h = max(self.row_h, h)


def query_variable(name, label, query, multi=True):
    return {"name": name, "label": label, "type": "query", "datasource": DS,
            "query": {"query": query, "refId": name},
            "multi": multi, "includeAll": True, "allValue": ".*", "refresh": 2, "sort": 1,
            "options": [], "hide": 0}


def textbox(name, label, value, description):
    return {"name": name, "label": label, "type": "textbox", "query": value,
            "description": description, "hide": 0,
            "current": {"text": value, "value": value}, "options": []}


def build():
    g = Layout()

    g.row("Overview")
    g.panel("Requests by tier", "Finished requests per second (gka_requests_total), every code.",
            [(f"sum by (tier) (rate(gka_requests_total{{{TIER}}}[{RATE}]))", "{{tier}}")],
            unit="reqps")
    g.panel("Errors by code", "Requests that ended with an error, by tier and gRPC code.",
            [(f"sum by (tier, code) (rate(gka_request_errors_total{{{TIER}}}[{RATE}]))",
              "{{tier}} {{code}}")], unit="reqps", stack=True)
    g.panel("Server-side error ratio",
            "Share of requests failing for the service's own reasons (the GkaErrorRatioHigh "
            "alert pages above 5%). Recording rule of deploy/prometheus/rules.",
            [(f"tier:gka_request_server_errors:ratio_rate5m{{{TIER}}}", "{{tier}}")],
            unit="percentunit")
    g.panel("TTFT by tier", "Arrival to first token sent (p50/p90/p99), and each tier's "
            "ttft_target_ms from the tier file (dashed in the legend as target).",
            quantiles("gka_ttft_seconds", "tier", TIER)
            + [(f"tier:gka_ttft_seconds:target{{{TIER}}}", "target {{tier}}")], unit="s")
    g.panel("Inter-token latency by tier", "Time between consecutive streamed tokens "
            "(p50/p90/p99) and each tier's itl_target_ms.",
            quantiles("gka_itl_seconds", "tier", TIER)
            + [(f"tier:gka_itl_seconds:target{{{TIER}}}", "target {{tier}}")], unit="s")
    g.panel("End-to-end latency by tier", "Arrival to final message (p50/p99).",
            quantiles("gka_e2e_latency_seconds", "tier", TIER, qs=(0.5, 0.99)), unit="s")
    g.panel("Tokens/s in and out", "Prompt tokens admitted and tokens streamed to clients.",
            [(f"sum by (tier) (rate(gka_prompt_tokens_total{{{TIER}}}[{RATE}]))",
              "in {{tier}}"),
             (f"sum by (tier) (rate(gka_generated_tokens_total{{{TIER}}}[{RATE}]))",
              "out {{tier}}")], unit="short")
    g.panel("Requests in flight", "Requests between admission and final message.",
            [(f"sum by (tier) (gka_requests_running{{{TIER}}})", "{{tier}}")], stack=True)
    g.panel("Queue time by tier", "Arrival to prefill start (router + prefill queue).",
            quantiles("gka_queue_seconds", "tier", TIER, qs=(0.5, 0.99)), unit="s")
    g.panel("Workers", "Workers registered with the routers, healthy or not (max over "
            "routers).", [("max by (role, state) (gka_workers)", "{{role}} {{state}}")])
    g.panel("Retries by reason", "Prefill attempts moved to another worker.",
            [(f"sum by (reason) (rate(gka_retries_total{{{TIER}}}[{RATE}]))", "{{reason}}")],
            unit="reqps")

    g.row("Prefill")
    g.panel("Queued prompt tokens", "Prompt tokens waiting per prefill worker (the HPA's "
            "signal).", [("sum by (worker) (gka_prefill_queue_tokens)", "{{worker}}")])
    g.panel("Tokens per prefill step", "Batch size of the chunked-prefill steps.",
            quantiles("gka_prefill_batch_tokens", "worker", qs=(0.5, 0.99)))
    g.panel("Prefill time by tier", "Engine time of one request's prefill.",
            quantiles("gka_prefill_seconds", "tier", TIER, qs=(0.5, 0.99)), unit="s")
    g.panel("Prefill tokens/s", "Prompt tokens computed per second per worker.",
            [(f"sum by (worker) (rate(gka_prefill_batch_tokens_sum[{RATE}]))", "{{worker}}")])
    g.panel("Prefill MFU (estimate)",
            "Tokens/s x $flops_per_token / $peak_flops: dense-model FLOPs only (no attention "
            "FLOPs), against the peak of one prefill pod. Set both variables for your model "
            "and GPUs.",
            [(f"sum by (worker) (rate(gka_prefill_batch_tokens_sum[{RATE}])) "
              "* $flops_per_token / $peak_flops", "{{worker}}")], unit="percentunit")
    g.panel("GKA num_iter per request", "Mean solver iterations served, by tier and phase "
            "(tiers fix num_iter; overrides and downgrades move it).",
            [(f"sum by (tier, phase) (rate(gka_num_iter_sum{{{TIER}}}[{RATE}])) / "
              f"sum by (tier, phase) (rate(gka_num_iter_count{{{TIER}}}[{RATE}]))",
              "{{tier}} {{phase}}")], min_zero=True)

    g.row("Decode")
    g.panel("Running and waiting sequences", "Sequences in each decode worker's running "
            "batch, and admitted ones waiting (preempted included).",
            [("sum by (worker) (gka_decode_running)", "running {{worker}}"),
             ("sum by (worker) (gka_decode_waiting)", "waiting {{worker}}")])
    g.panel("Decode batch size", "Sequences per decode step.",
            quantiles("gka_decode_batch_size", "worker", qs=(0.5, 0.99)))
    g.panel("Decode step time", "One engine step (the inter-token latency floor).",
            quantiles("gka_decode_step_seconds", "worker", qs=(0.5, 0.99)), unit="s")
    g.panel("KV cache pages in use", "Used / total KV pages per decode worker.",
            [("max by (worker) (gka_kv_pages_used) / max by (worker) (gka_kv_pages_capacity)",
              "{{worker}}")], unit="percentunit")
    g.panel("GKA state slots in use", "Used / total GKA state slots per decode worker.",
            [("max by (worker) (gka_state_slots_used) / "
              "max by (worker) (gka_state_slots_capacity)", "{{worker}}")], unit="percentunit")
    g.panel("Decode num_iter by tier", "Mean GKA num_iter per decoded token, by tier.",
            [(f"sum by (tier) (rate(gka_decode_num_iter_sum{{{TIER}}}[{RATE}])) / "
              f"sum by (tier) (rate(gka_decode_num_iter_count{{{TIER}}}[{RATE}]))",
              "{{tier}}")])
    g.panel("Reservations", "Leases waiting for a transfer, and leases expiring unused.",
            [("sum by (worker) (gka_reservations_active)", "active {{worker}}"),
             (f"sum by (worker) (rate(gka_reservations_expired_total[{RATE}]))",
              "expired/s {{worker}}")])
    g.panel("Preemptions", "Sequences swapped out to host per second.",
            [(f"sum by (worker) (rate(gka_preemptions_total[{RATE}]))", "{{worker}}")])

    g.row("Transfer (prefill to decode over UCX)")
    g.panel("Bytes/s: KV pages vs GKA state", "Bytes written to decode workers by kind: "
            "attention KV pages grow with the prompt, GKA states are fixed size.",
            [(f"sum by (kind) (rate(gka_transfer_bytes_total[{RATE}]))", "{{kind}}")],
            unit="Bps", stack=True)
    g.panel("Transfer time", "UCX put + flush per request, by kind (p50/p99).",
            quantiles("gka_transfer_seconds", "kind", qs=(0.5, 0.99)), unit="s")
    g.panel("Checksum and transfer failures", "Transfers the decode side refused on their "
            "checksum, and failures the prefill side saw, by reason.",
            [(f"sum by (worker) (increase(gka_checksum_failures_total[{RATE}]))",
              "checksum {{worker}}"),
             (f"sum by (reason) (increase(gka_transfer_failures_total[{RATE}]))",
              "{{reason}}")])

    g.row("Prefill worker $prefill_worker", repeat="prefill_worker")
    w = 'worker="$prefill_worker"'
    g.panel("Queue", "Queued prompt tokens.",
            [(f"sum(gka_prefill_queue_tokens{{{w}}})", "queued tokens")], w=6)
    g.panel("Prefill time", "Per request, by tier.",
            quantiles("gka_prefill_seconds", "tier", w, qs=(0.5, 0.99)), unit="s", w=6)
    g.panel("Transfer bytes/s", "By kind.",
            [(f"sum by (kind) (rate(gka_transfer_bytes_total{{{w}}}[{RATE}]))", "{{kind}}")],
            unit="Bps", w=6)
    g.panel("Transfer failures", "By reason.",
            [(f"sum by (reason) (increase(gka_transfer_failures_total{{{w}}}[{RATE}]))",
              "{{reason}}")], w=6)

    g.row("Decode worker $decode_worker", repeat="decode_worker")
    w = 'worker="$decode_worker"'
    g.panel("Batch", "Running and waiting sequences.",
            [(f"sum(gka_decode_running{{{w}}})", "running"),
             (f"sum(gka_decode_waiting{{{w}}})", "waiting")], w=6)
    g.panel("Memory", "KV pages and GKA state slots in use.",
            [(f"max(gka_kv_pages_used{{{w}}}) / max(gka_kv_pages_capacity{{{w}}})", "KV pages"),
             (f"max(gka_state_slots_used{{{w}}}) / max(gka_state_slots_capacity{{{w}}})",
              "state slots")], unit="percentunit", w=6)
    g.panel("Step time", "One decode engine step.",
            quantiles("gka_decode_step_seconds", "worker", w, qs=(0.5, 0.99)), unit="s", w=6)
    g.panel("Failures", "Checksum refusals, expired leases and preemptions.",
            [(f"sum(increase(gka_checksum_failures_total{{{w}}}[{RATE}]))", "checksum"),
             (f"sum(increase(gka_reservations_expired_total{{{w}}}[{RATE}]))",
              "expired leases"),
             (f"sum(increase(gka_preemptions_total{{{w}}}[{RATE}]))", "preemptions")], w=6)

    templating = [
        {"name": "datasource", "label": "Data source", "type": "datasource",
         "query": "prometheus", "options": [], "hide": 0, "refresh": 1,
         "regex": ""},
        query_variable("tier", "Tier", "label_values(gka_requests_total, tier)"),
        query_variable("prefill_worker", "Prefill worker",
                       "label_values(gka_prefill_queue_tokens, worker)"),
        query_variable("decode_worker", "Decode worker",
                       "label_values(gka_decode_running, worker)"),
        textbox("flops_per_token", "FLOPs per prompt token", "6.4e10",
                "2 x parameters (32B) for the MFU estimate."),
        textbox("peak_flops", "Peak FLOP/s per prefill pod", "7.9e15",
                "8 x H100 dense bf16 (989 TFLOP/s each) for the MFU estimate."),
    ]
    return {
        "title": "gkaserve",
        "uid": "gkaserve",
        "description": "gkaserve: router, prefill and decode workers, UCX transfers. "
                       "Rows: Overview, Prefill, Decode, Transfer, then one row per worker.",
        "tags": ["gkaserve", "llm-serving"],
        "editable": True,
        "graphTooltip": 1,
        "schemaVersion": 39,
        "version": 1,
        "refresh": "30s",
        "time": {"from": "now-3h", "to": "now"},
        "timezone": "browser",
        "annotations": {"list": []},
        "links": [],
        "templating": {"list": templating},
        "panels": g.panels,
    }


if __name__ == "__main__":
    json.dump(build(), sys.stdout, indent=2, ensure_ascii=False)
    sys.stdout.write("\n")
