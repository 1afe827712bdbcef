#!/usr/bin/env python3
"""Renders a dashboard's time-series panels from a live Prometheus to one PNG, so that a
reader without Grafana sees what the dashboard shows (docs/observability-overview.png):

    infra/grafana/render.py PROMETHEUS_URL OUT.png [--dashboard overview] [--minutes 10]
                            [--panel "Calls/s by status" --panel Latency ...]

Each panel's queries run through Prometheus's range API over the last MINUTES minutes,
the dashboard's variables taken as "everything" ($__rate_interval as 30s), and are drawn
with the panel's title and legend format. Needs matplotlib (scripts/test.sh's virtualenv
has no need of it: `pip install matplotlib`)."""
import argparse
import json
import pathlib
import re
import time
import urllib.parse
import urllib.request

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

HERE = pathlib.Path(__file__).resolve().parent
SCALES = {"s": ("ms", 1000.0), "percentunit": ("%", 100.0)}


def variables(expr: str) -> str:
    expr = expr.replace("$__rate_interval", "30s")
    return re.sub(r"\$\{?(region|cell|instance|tenant|datasource)\}?", ".*", expr)


def query_range(url: str, expr: str, start: float, end: float, step: int):
    params = urllib.parse.urlencode({"query": variables(expr), "start": start, "end": end, "step": step})
    with urllib.request.urlopen(f"{url}/api/v1/query_range?{params}", timeout=30) as answer:
        body = json.load(answer)
    if body.get("status") != "success":
        raise SystemExit(f"{expr}: {body}")
    return body["data"]["result"]


def legend(fmt: str, labels: dict) -> str:
    text = re.sub(r"\{\{\s*(\w+)\s*\}\}", lambda m: labels.get(m.group(1), ""), fmt or "")
    return text.strip() or ", ".join(f"{k}={v}" for k, v in labels.items() if k != "__name__")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("prometheus")
    parser.add_argument("out")
    parser.add_argument("--dashboard", default="overview")
    parser.add_argument("--minutes", type=float, default=10)
    parser.add_argument("--panel", action="append", default=[], help="a panel's title, once per panel (default: every time series)")
    args = parser.parse_args()
    board = json.loads((HERE / "dashboards" / f"{args.dashboard}.json").read_text())
    panels = [p for p in board["panels"] if p.get("type") == "timeseries"]
    if args.panel:
        titles = {p["title"]: p for p in panels}
        unknown = [t for t in args.panel if t not in titles]
        if unknown:
            raise SystemExit(f"no time-series panel titled {unknown} in {args.dashboard}; there are {list(titles)}")
        panels = [titles[t] for t in args.panel]
    end = time.time()
    start = end - args.minutes * 60
    cols = 2
    rows = (len(panels) + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(7 * cols, 3.2 * rows), squeeze=False)
    for ax, panel in zip(axes.flat, panels):
        unit = panel.get("fieldConfig", {}).get("defaults", {}).get("unit", "")
        shown, scale = SCALES.get(unit, (unit, 1.0))
        for target in panel.get("targets", []):
            for series in query_range(args.prometheus, target["expr"], start, end, 5):
                xs = [(float(t) - start) / 60 for t, _ in series["values"]]
                ys = [float(v) * scale for _, v in series["values"]]
                ax.plot(xs, ys, label=legend(target.get("legendFormat", ""), series["metric"]), linewidth=1.2)
        ax.set_title(panel["title"], fontsize=10)
        ax.set_xlabel("minutes", fontsize=8)
        if shown:
            ax.set_ylabel(shown, fontsize=8)
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
        if ax.lines:
            ax.legend(fontsize=6, loc="upper left")
    for ax in list(axes.flat)[len(panels):]:
        ax.axis("off")
    fig.suptitle(f"{board['title']} (rendered from Prometheus by infra/grafana/render.py)", fontsize=11)
    fig.tight_layout()
    fig.savefig(args.out, dpi=110)


if __name__ == "__main__":
    main()
