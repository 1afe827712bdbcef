#!/usr/bin/env python3
"""baton's Grafana dashboards, written with Grafana's own Foundation SDK (its dashboard
model: what Grafana itself loads), into dashboards/*.json.

    python3 dashboards.py            # writes dashboards/*.json
    python3 dashboards.py --check    # fails if a written file is not what this makes, or
                                     # does not load back into Grafana's model unchanged

Needs `grafana-foundation-sdk` (PyPI; scripts/test.sh installs the pinned version in its
own virtualenv). Every query reads the data source of the `datasource` variable; the
`region`, `cell` and `instance` variables filter by the labels infra/prometheus gives
each target.
"""

import json
import sys
from pathlib import Path

from grafana_foundation_sdk.builders import dashboard as d, prometheus, stat, timeseries
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models.dashboard import DataSourceRef, Dashboard, VariableRefresh

HERE = Path(__file__).resolve().parent
OUT = HERE / "dashboards"
DS = DataSourceRef(type_val="prometheus", uid="${datasource}")
RATE = "$__rate_interval"


class Board:
    """One dashboard being written: panels get ids in order, queries refIds A, B, …."""

    def __init__(self, uid, title, description, variables):
        self.next_id = 1
        self.builder = (
            d.Dashboard(title)
            .uid(uid)
            .description(description)
            .tags(["baton"])
            .refresh("30s")
            .time("now-1h", "now")
            .with_variable(d.DatasourceVariable("datasource").label("Data source").type("prometheus"))
        )
        for name, query in variables:
            self.builder = self.builder.with_variable(
                d.QueryVariable(name)
                .label(name.capitalize())
                .datasource(DS)
                .query(query)
                .refresh(VariableRefresh.ON_TIME_RANGE_CHANGED)
                .multi(True)
                .include_all(True)
                .all_value(".*")
            )

    def row(self, title):
        self.builder = self.builder.with_row(d.Row(title).id(self._id()))
        return self

    def graph(self, title, unit, queries, description="", width=12):
        panel = timeseries.Panel().id(self._id()).title(title).description(description).datasource(DS).unit(unit)
        panel = panel.span(width).height(8)
        for i, (expr, legend) in enumerate(queries):
            panel = panel.with_target(prometheus.Dataquery().ref_id(chr(ord("A") + i)).expr(expr).legend_format(legend))
        self.builder = self.builder.with_panel(panel)
        return self

    def single(self, title, unit, expr, description="", width=6):
        panel = stat.Panel().id(self._id()).title(title).description(description).datasource(DS).unit(unit)
        panel = panel.span(width).height(4).with_target(prometheus.Dataquery().ref_id("A").expr(expr))
        self.builder = self.builder.with_panel(panel)
        return self

    def _id(self):
        self.next_id += 1
        return self.next_id - 1

    def json(self):
        return json.loads(json.dumps(self.builder.build(), cls=JSONEncoder))


def q(metric, labels=""):
    """`metric` filtered by the dashboard's region (and `labels`)."""
    sep = "," if labels else ""
    return f'{metric}{{region=~"$region"{sep}{labels}}}'


def rate(metric, labels=""):
    return f"rate({q(metric, labels)}[{RATE}])"


def quantile(p, metric, by, labels=""):
    by = ", ".join([*by, "le"])
    return f"histogram_quantile({p}, sum by ({by}) ({rate(metric + '_bucket', labels)}))"


ALLOCATED = 'kind="allocated"'
OFFERED = 'kind="offered"'
OOM = ',reason="oom_killed"'
IN_CELL = 'cell=~"$cell"'
DESIRED = ',state="desired"'
READY = ',state="ready"'
REGION = ("region", 'label_values(up{job=~"baton-.*"}, region)')
CELL = ("cell", 'label_values(up{job="baton-cell", region=~"$region"}, cell)')


def overview():
    invoke = 'route="invoke"'
    errors = 'route="invoke",outcome=~"server_error|upstream_error"'
    b = Board("baton-overview", "baton / Federation overview", "Calls, latency, cold starts, sandboxes, cells and the shard map, over every router and cell.", [REGION])
    b.row("Calls through the routers")
    b.single("Calls/s", "reqps", f"sum({rate('baton_router_requests_total', invoke)})")
    b.single("Baton errors", "percentunit", f"sum({rate('baton_router_requests_total', errors)}) / sum({rate('baton_router_requests_total', invoke)})", "Share of calls failing with an error of baton's own (5xx of ours, owning cell not answering).")
    b.single("p99 latency", "s", quantile(0.99, "baton_router_request_duration_seconds", [], invoke))
    b.single("Cold starts", "percentunit", f"sum({rate('baton_cell_cold_starts_total')}) / sum({rate('baton_cell_invocations_total')})", "Share of calls that waited for a new sandbox.")
    b.graph("Calls/s by status", "reqps", [(f"sum by (outcome) ({rate('baton_router_requests_total', invoke)})", "{{outcome}}")])
    b.graph("Latency", "s", [
        (quantile(0.5, "baton_router_request_duration_seconds", [], invoke), "p50"),
        (quantile(0.99, "baton_router_request_duration_seconds", [], invoke), "p99"),
    ])
    b.graph("Calls/s by router", "reqps", [(f"sum by (region, instance) ({rate('baton_router_requests_total', invoke)})", "{{region}} {{instance}}")])
    b.graph("Cold starts/s and their share", "short", [
        (f"sum by (region, cell) ({rate('baton_cell_cold_starts_total')})", "cold/s {{cell}}"),
        (f"sum by (region, cell) ({rate('baton_cell_cold_starts_total')}) / sum by (region, cell) ({rate('baton_cell_invocations_total')})", "share {{cell}}"),
    ])
    b.row("Async calls")
    b.graph("Async calls/s by event", "reqps", [(f"sum by (event) ({rate('baton_router_async_calls_total')})", "{{event}}")])
    b.graph("Async queue: waiting and delayed", "short", [
        ("max by (region) (baton_router_async_queue_depth)", "queued {{region}}"),
        ("max by (region) (baton_router_async_delayed_calls)", "waiting for a retry or a slot {{region}}"),
    ])
    b.graph("Oldest queued async call", "s", [("max by (region) (baton_router_async_oldest_call_age_seconds)", "{{region}}")])
    # `or … * 0`: no dead letters reads 0, not nothing.
    b.graph("Dead letters by reason", "short", [(
        f"sum by (reason) (increase(baton_router_async_dead_letters_total[{RATE}])) or sum(baton_router_async_queue_depth) * 0",
        "{{reason}}",
    )])
    b.row("Sandboxes and cells")
    b.graph("Sandboxes ready and wanted", "short", [
        (f"sum by (cell) ({q('baton_cell_sandboxes_ready')})", "ready {{cell}}"),
        (f"sum by (cell) ({q('baton_cell_sandboxes_desired')})", "wanted {{cell}}"),
    ])
    b.graph("Cells by state (shard manager)", "short", [("max by (state) (baton_shard_manager_cells)", "{{state}}")])
    b.graph("Cell load: CPU and memory allocated", "percentunit", [
        (f"sum by (cell) ({q('baton_cell_capacity_cpu_millis', ALLOCATED)}) / sum by (cell) ({q('baton_cell_capacity_cpu_millis', OFFERED)})", "cpu {{cell}}"),
        (f"sum by (cell) ({q('baton_cell_capacity_memory_bytes', ALLOCATED)}) / sum by (cell) ({q('baton_cell_capacity_memory_bytes', OFFERED)})", "memory {{cell}}"),
    ])
    b.graph("Calls/s by cell", "reqps", [(f"sum by (cell) ({rate('baton_cell_invocations_total')})", "{{cell}}")])
    b.row("Shard map")
    b.graph("Epoch, and how far each router is behind", "short", [
        ("max(baton_shard_manager_epoch)", "epoch"),
        ("scalar(max(baton_shard_manager_epoch)) - baton_router_map_epoch", "behind: {{instance}}"),
    ])
    b.graph("Map propagation p99 (routers and cells)", "s", [(quantile(0.99, "baton_shard_map_propagation_seconds", ["job"]), "{{job}}")])
    b.graph("Failovers and moves", "short", [
        (f"sum(increase(baton_shard_manager_cell_failovers_total[{RATE}]))", "cells failed over"),
        (f"sum(increase(baton_shard_manager_failover_reassignments_total[{RATE}]))", "functions failed over"),
        (f"sum by (reason) (increase(baton_shard_manager_moves_total[{RATE}]))", "moves: {{reason}}"),
    ], width=24)
    return b


def cell():
    c = 'cell=~"$cell"'
    b = Board("baton-cell", "baton / Cell", "One cell's control plane and data plane: autoscaling, queues, creations, placement and its store.", [REGION, CELL])
    b.row("Calls through the data plane")
    b.graph("Calls/s by outcome", "reqps", [(f"sum by (cell, outcome) ({rate('baton_cell_invocations_total', c)})", "{{cell}} {{outcome}}")])
    b.graph("Call latency p50 / p99", "s", [
        (quantile(0.5, "baton_cell_invocation_seconds", ["cell"], c), "p50 {{cell}}"),
        (quantile(0.99, "baton_cell_invocation_seconds", ["cell"], c), "p99 {{cell}}"),
    ])
    b.graph("Queue depth and calls in flight", "short", [
        (f"sum by (cell) ({q('baton_cell_queue_depth', c)})", "queued {{cell}}"),
        (f"sum by (cell) ({q('baton_cell_in_flight', c)})", "in flight {{cell}}"),
    ])
    b.graph("Queue time p99: cold starts and busy sandboxes", "s", [(quantile(0.99, "baton_cell_queue_seconds", ["cell", "wait"], c), "{{wait}} {{cell}}")])
    b.row("Autoscaling and sandboxes")
    b.graph("Sandboxes wanted and ready", "short", [
        (f"sum by (cell) ({q('baton_cell_sandboxes_desired', c)})", "wanted {{cell}}"),
        (f"sum by (cell) ({q('baton_cell_sandboxes_ready', c)})", "ready {{cell}}"),
    ])
    per_function = "baton_cell_function_sandboxes"
    desired = f"topk(10, max by (function) ({q(per_function, c + DESIRED)}))"
    ready = f"max by (function) ({q(per_function, c + READY)})"
    b.graph("Desired vs ready: the 10 functions wanting most", "short", [
        (desired, "desired {{function}}"),
        (f"{ready} and on (function) {desired}", "ready {{function}}"),
    ])
    b.graph("Autoscaler decisions/s and their time p99", "short", [
        (f"sum by (cell) ({rate('baton_cell_control_decision_seconds_count', c)})", "decisions/s {{cell}}"),
        (quantile(0.99, "baton_cell_control_decision_seconds", ["cell"], c), "p99 s {{cell}}"),
    ])
    b.graph("Creations/s by outcome", "ops", [(f"sum by (cell, outcome) ({rate('baton_cell_sandbox_creations_total', c)})", "{{cell}} {{outcome}}")])
    b.graph("Creation latency p50 / p99 (workers)", "s", [
        (quantile(0.5, "baton_worker_sandbox_creation_seconds", ["cell"], f'{c},phase="total"'), "p50 {{cell}}"),
        (quantile(0.99, "baton_worker_sandbox_creation_seconds", ["cell"], f'{c},phase="total"'), "p99 {{cell}}"),
    ])
    b.row("Placement and store")
    for metric, unit, title in [
        ("baton_cell_capacity_cpu_millis", "short", "CPU allocated / offered (thousandths of a core)"),
        ("baton_cell_capacity_memory_bytes", "bytes", "Memory allocated / offered"),
        ("baton_cell_capacity_sandboxes", "short", "Sandbox slots taken / offered"),
    ]:
        b.graph(title, unit, [(f"sum by (cell, kind) ({q(metric, c)})", "{{kind}} {{cell}}")], width=8)
    b.graph("Workers by state", "short", [(f"sum by (cell, state) ({q('baton_cell_workers', c)})", "{{state}} {{cell}}")])
    b.graph("Store writes/s by kind", "wps", [(f"sum by (cell, kind) ({rate('baton_cell_store_writes_total', c)})", "{{kind}} {{cell}}")])
    b.graph("Image pre-pulls/s by outcome", "ops", [(f"sum by (cell, outcome) ({rate('baton_cell_image_prepulls_total', c)})", "{{outcome}} {{cell}}")])
    b.graph("Routing versions behind (data plane)", "short", [(f"max by (cell) ({q('baton_cell_routing_version', c)}) - min by (cell) ({q('baton_cell_data_plane_routing_version', c)})", "{{cell}}")])
    return b


def worker():
    w = 'cell=~"$cell",instance=~"$instance"'
    b = Board("baton-worker", "baton / Worker", "A cell's workers: sandbox creations and their phases, exits, OOM kills, images and capacity.", [REGION, CELL, ("instance", 'label_values(up{job="baton-worker", cell=~"$cell"}, instance)')])
    b.row("Sandboxes")
    b.graph("Sandboxes held", "short", [(f"sum by (instance) ({q('baton_worker_sandboxes', w)})", "{{instance}}")])
    b.graph("Creations/s by outcome", "ops", [(f"sum by (outcome) ({rate('baton_worker_sandbox_creations_total', w)})", "{{outcome}}")])
    b.graph("Creation phases p99", "s", [(quantile(0.99, "baton_worker_sandbox_creation_seconds", ["phase"], w), "{{phase}}")])
    b.graph("Creation phases p50", "s", [(quantile(0.5, "baton_worker_sandbox_creation_seconds", ["phase"], w), "{{phase}}")])
    b.graph("Exits by reason", "short", [(f"sum by (reason) (increase({q('baton_worker_sandbox_exits_total', w)}[{RATE}]))", "{{reason}}")])
    b.graph("OOM kills", "short", [(f"sum by (instance) (increase({q('baton_worker_sandbox_exits_total', w + OOM)}[{RATE}]))", "{{instance}}")])
    b.graph("Deletions/s by outcome", "ops", [(f"sum by (outcome) ({rate('baton_worker_sandbox_deletions_total', w)})", "{{outcome}}")])
    b.graph("Control-plane errors/s by call", "ops", [(f"sum by (call) ({rate('baton_worker_control_plane_errors_total', w)})", "{{call}}")])
    b.row("Images and capacity")
    b.graph("Image pulls/s by outcome", "ops", [(f"sum by (outcome) ({rate('baton_worker_image_pulls_total', w)})", "{{outcome}}")])
    b.graph("Image pull time p99", "s", [(quantile(0.99, "baton_worker_image_pull_seconds", [], w), "p99")])
    b.graph("CPU allocated vs offered (cell)", "short", [(f"sum by (kind) ({q('baton_cell_capacity_cpu_millis', IN_CELL)})", "{{kind}}")])
    b.graph("Memory allocated vs offered (cell)", "bytes", [(f"sum by (kind) ({q('baton_cell_capacity_memory_bytes', IN_CELL)})", "{{kind}}")])
    return b


def shard_manager():
    b = Board("baton-shard-manager", "baton / Shard manager", "The raft group: leader, terms, commits, writes, and what it serves.", [REGION])
    b.row("Raft")
    b.graph("Leader", "short", [(q("baton_shard_manager_is_leader"), "{{instance}}")])
    b.graph("Term, and its changes", "short", [
        (f"max({q('baton_shard_manager_raft_term')})", "term"),
        (f"sum(changes({q('baton_shard_manager_raft_term')}[{RATE}]))", "changes"),
    ])
    b.graph("Entries not yet applied", "short", [(f"{q('baton_shard_manager_raft_log_index')} - {q('baton_shard_manager_raft_applied_index')}", "{{instance}}")])
    b.graph("Commands per raft entry p50 / p99", "short", [
        (quantile(0.5, "baton_shard_manager_entry_commands", []), "p50"),
        (quantile(0.99, "baton_shard_manager_entry_commands", []), "p99"),
    ])
    b.row("Writes and the map")
    b.graph("Writes/s by outcome", "wps", [(f"sum by (outcome) ({rate('baton_shard_manager_writes_total')})", "{{outcome}}")])
    b.graph("Write (commit) latency p50 / p99", "s", [
        (quantile(0.5, "baton_shard_manager_write_seconds", []), "p50"),
        (quantile(0.99, "baton_shard_manager_write_seconds", []), "p99"),
    ])
    b.graph("Tenants, functions, cells", "short", [
        (f"max({q('baton_shard_manager_tenants')})", "tenants"),
        (f"max({q('baton_shard_manager_functions')})", "functions"),
        (f"max by (state) ({q('baton_shard_manager_cells')})", "cells {{state}}"),
    ])
    b.graph("Map streams served", "short", [(q("baton_shard_manager_map_followers"), "{{instance}}")])
    b.graph("Raft snapshot size", "bytes", [(q("baton_shard_manager_snapshot_bytes"), "{{instance}}")])
    return b


def tenant():
    t = 'tenant=~"$tenant"'
    calls = f"sum by (tenant) ({rate('baton_router_tenant_calls_total', t)})"

    def share(outcomes):
        # `or … * 0`: a tenant without such calls reads 0, not nothing.
        part = f"sum by (tenant) ({rate('baton_router_tenant_calls_total', t + ',outcome=~' + chr(34) + outcomes + chr(34))})"
        return f"({part} or {calls} * 0) / {calls}"

    b = Board(
        "baton-tenant",
        "baton / Tenants",
        "Per tenant: calls, errors, latency, throttles and its busiest functions. The busiest tenants and functions have series of their own (router metrics.top_*); the rest show as other.",
        [REGION, ("tenant", 'label_values(baton_router_tenant_calls_total{region=~"$region"}, tenant)')],
    )
    b.row("Calls")
    b.graph("Calls/s by tenant", "reqps", [(calls, "{{tenant}}")])
    b.graph("Errors (baton's and the functions') by tenant", "percentunit", [(share("server_error|upstream_error"), "{{tenant}}")])
    b.graph("Latency p50 / p99 by tenant", "s", [
        (quantile(0.5, "baton_router_tenant_call_duration_seconds", ["tenant"], t), "p50 {{tenant}}"),
        (quantile(0.99, "baton_router_tenant_call_duration_seconds", ["tenant"], t), "p99 {{tenant}}"),
    ])
    b.graph("Throttled by tenant", "percentunit", [(share("throttled"), "{{tenant}}")])
    b.graph("Calls/s by outcome", "reqps", [(f"sum by (tenant, outcome) ({rate('baton_router_tenant_calls_total', t)})", "{{tenant}} {{outcome}}")])
    b.graph("Top functions by calls/s", "reqps", [(f"topk(10, sum by (tenant, function) ({rate('baton_router_function_calls_total', t)}))", "{{tenant}}/{{function}}")])
    return b


BOARDS = {"overview": overview, "cell": cell, "worker": worker, "shard-manager": shard_manager, "tenant": tenant}


def main():
    check = "--check" in sys.argv[1:]
    OUT.mkdir(exist_ok=True)
    failed = []
    for name, make in BOARDS.items():
        path = OUT / f"{name}.json"
        text = json.dumps(make().json(), indent=2, sort_keys=True) + "\n"
        if not check:
            path.write_text(text)
            continue
        written = path.read_text() if path.exists() else ""
        if written != text:
            failed.append(f"{path} is not what dashboards.py makes: run python3 infra/grafana/dashboards.py")
            continue
        # Loaded into Grafana's model and written back, nothing is lost or changed.
        again = json.loads(json.dumps(Dashboard.from_json(json.loads(written)), cls=JSONEncoder))
        if again != json.loads(written):
            failed.append(f"{path} does not load back into Grafana's dashboard model unchanged")
    for line in failed:
        print(line, file=sys.stderr)
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
