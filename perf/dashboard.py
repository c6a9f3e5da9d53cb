"""The performance dashboard: benchmark history -> one self-contained HTML page.

In:  run records (perf/history.py), oldest first. Out: HTML text with plotly.js inlined once, so
the page opens in a browser with no network access.

What it shows, for the latest run: speedup of lazy against each peer per workload; achieved
GB/s against the memory bandwidth measured in the same run (and GFLOP/s against the matmul roof
for matmul-bound rows), lazy's own kernels included; kernels per workload (lazy, what the
fusion tests expect, torch.compile); compile times cold and warm; a table of every row with its
status. Over the history (runs of the same size and device as the latest): lazy's time per
workload and its speedup against torch eager, per run.

Invariants
- No external resource: no <script src>, no stylesheet or font links; every chart has a stable
  element id (`chart-<name>`, see CHARTS) whether or not it has data.
- Records from older or partial runs (missing peers, failed rows) render; absent data is shown as
  absent, never as zero.
- Every record the history's validator accepts renders: a field it does not require is read with
  a default, and a limit that is missing or 0 (not measured) is drawn as no line and named as not
  measured; tests/test_dashboard.py renders the record with each such field dropped, null or 0.
"""

from __future__ import annotations

import contextlib
import html
import statistics
from pathlib import Path

PEER_COLORS = {"lazy": "#1f77b4", "lazy.jit": "#17becf", "numpy": "#ff7f0e", "torch": "#2ca02c", "torch.compile": "#9467bd",
               "tinygrad": "#8c564b"}
CHARTS = ("speedup", "bandwidth", "matmul", "kernels", "compile", "trend-time", "trend-speedup")
PLOT_CONFIG = {"displaylogo": False, "responsive": True}


def _esc(x) -> str:
    return html.escape("" if x is None else str(x))


def _peers_of(rec: dict) -> list[str]:
    return [p for p in rec.get("peers", []) if p != "lazy"]


def _median(r: dict, peer: str) -> float | None:
    return r.get("peers", {}).get(peer, {}).get("median_s")


def _run_label(rec: dict) -> str:
    commit = (rec.get("git") or {}).get("commit") or "?"
    return f"{rec.get('date', '?')[:16].replace('T', ' ')} {commit[:7]}"


def _figure(title: str, ytitle: str, *, log_y: bool = False, barmode: str = "group"):
    import plotly.graph_objects as go

    fig = go.Figure()  # the template comes from `_white` (8 ms less per figure than naming it here)
    fig.update_layout(title=title, barmode=barmode, height=430,
                      margin={"l": 60, "r": 20, "t": 60, "b": 110}, legend={"orientation": "h", "y": 1.12},
                      yaxis_title=ytitle)
    if log_y:
        fig.update_yaxes(type="log")
    return fig


def _measured(x) -> bool:
    """A machine limit (GB/s, GFLOP/s) that was measured: 0 or absent means the measurement failed."""
    return bool(x) and x > 0


def _kname(k: dict) -> str:
    return k.get("name") or "?"


def _no_data(fig, text: str):
    fig.add_annotation(text=text, showarrow=False, xref="paper", yref="paper", x=0.5, y=0.5, font={"size": 14})
    fig.update_xaxes(visible=False)
    fig.update_yaxes(visible=False)
    return fig


# -- charts of the latest run ------------------------------------------------------------------
def speedup_chart(rec: dict):
    import plotly.graph_objects as go

    fig = _figure("Speedup of lazy against each peer (peer time / lazy time; above 1: lazy is faster)",
                  "speedup (log scale)", log_y=True)
    rows = rec["results"]
    names = [r["workload"] for r in rows]
    any_bar = False
    for p in _peers_of(rec):
        ys, texts = [], []
        for r in rows:
            lz, q = _median(r, "lazy"), _median(r, p)
            ys.append(q / lz if lz and q else None)
            texts.append(f"{q / lz:.2f}x" if lz and q else "")
        any_bar |= any(y is not None for y in ys)
        fig.add_trace(go.Bar(name=p, x=names, y=ys, text=texts, textposition="outside", cliponaxis=False,
                             textfont={"size": 9}, marker_color=PEER_COLORS.get(p), hovertemplate="%{x}<br>" + p + ": %{y:.2f}x<extra></extra>"))
    absent = [r for r in rows if _median(r, "lazy") is None]
    if absent:
        fig.add_trace(go.Scatter(name="lazy missing / failed", x=[r["workload"] for r in absent], y=[1] * len(absent),
                                 mode="markers+text", marker={"symbol": "x", "size": 12, "color": "#d62728"},
                                 text=[r["status"] for r in absent], textposition="top center",
                                 hovertext=[_why(r) for r in absent], hoverinfo="text"))
    fig.add_hline(y=1, line_dash="dash", line_color="#444")
    if not rows or (not any_bar and not absent):
        _no_data(fig, "no peer ran in this run")
    return fig


def _why(r: dict) -> str:
    if r.get("status") == "missing":
        return f"{r['workload']}: missing: {r.get('missing')}"
    return f"{r['workload']}: {r.get('status')}: {r.get('error')}"


def bandwidth_chart(rec: dict):
    import plotly.graph_objects as go

    bw = rec["bandwidth"]
    fig = _figure("Achieved memory bandwidth against this machine's limit (bandwidth-bound workloads)",
                  "GB/s (compulsory bytes / time)")
    rows = [r for r in rec["results"] if not r.get("flops")]
    names = [r["workload"] for r in rows]
    for p in ["lazy"] + _peers_of(rec):
        ys = [r.get("peers", {}).get(p, {}).get("gbps") for r in rows]
        fig.add_trace(go.Bar(name=p, x=names, y=ys, marker_color=PEER_COLORS.get(p),
                             hovertemplate="%{x}<br>" + p + ": %{y:.1f} GB/s<extra></extra>"))
    kx, ky, kt = [], [], []
    for r in rows:
        for k in r.get("kernel_detail") or []:
            if k.get("gbps"):
                kx.append(r["workload"])
                ky.append(k["gbps"])
                roof = r.get("roof_gbps") or bw["triad_gbps"]
                share = f", {100 * k['gbps'] / roof:.0f}% of triad" if _measured(roof) else ", triad not measured"
                kt.append(f"{_kname(k)}: {k['gbps']:.1f} GB/s{share}")
    if kx:
        fig.add_trace(go.Scatter(name="lazy kernel (inside the kernel)", x=kx, y=ky, mode="markers",
                                 marker={"symbol": "diamond", "size": 10, "color": "#17becf",
                                         "line": {"width": 1, "color": "#000"}},
                                 hovertext=kt, hoverinfo="text"))
    if any(r.get("roof_gbps") for r in rows):
        fig.add_trace(go.Scatter(name="triad in the same rounds (the row's roof)", x=names,
                                 y=[r.get("roof_gbps") for r in rows], mode="markers",
                                 marker={"symbol": "line-ew", "size": 28, "color": "#d62728",
                                         "line": {"width": 3, "color": "#d62728"}},
                                 hovertemplate="%{x}<br>triad: %{y:.1f} GB/s<extra></extra>"))
    if _measured(bw["triad_gbps"]):
        fig.add_hline(y=bw["triad_gbps"], line_dash="dash", line_color="#d62728",
                      annotation_text=f"triad {bw['triad_gbps']:.1f} GB/s (measured)", annotation_position="top left")
    if _measured(bw["copy_gbps"]):
        fig.add_hline(y=bw["copy_gbps"], line_dash="dot", line_color="#7f7f7f",
                      annotation_text=f"copy {bw['copy_gbps']:.1f} GB/s", annotation_position="bottom left")
    unmeasured = [n for n in ("triad", "copy") if not _measured(bw[f"{n}_gbps"])]
    if unmeasured and rows:
        fig.add_annotation(text=f"{' and '.join(unmeasured)} not measured in this run: no line", showarrow=False,
                           xref="paper", yref="paper", x=0, y=1.0, xanchor="left")
    if not rows:
        _no_data(fig, "no bandwidth-bound workload in this run")
    return fig


def matmul_chart(rec: dict):
    import plotly.graph_objects as go

    mm = rec["matmul"]
    fig = _figure("Matmul-bound workloads: achieved GFLOP/s against the measured SGEMM roof", "GFLOP/s")
    rows = [r for r in rec["results"] if r.get("flops")]
    names = [r["workload"] for r in rows]
    for p in ["lazy"] + _peers_of(rec):
        ys = [r.get("peers", {}).get(p, {}).get("gflops") for r in rows]
        fig.add_trace(go.Bar(name=p, x=names, y=ys, marker_color=PEER_COLORS.get(p),
                             hovertemplate="%{x}<br>" + p + ": %{y:.1f} GFLOP/s<extra></extra>"))
    if _measured(mm["gflops"]):
        fig.add_hline(y=mm["gflops"], line_dash="dash", line_color="#d62728",
                      annotation_text=f"{mm.get('method') or 'matmul roof (method not recorded)'} "
                                      f"{mm['gflops']:.0f} GFLOP/s (measured)",
                      annotation_position="top left")
    elif rows:
        fig.add_annotation(text="matmul roof not measured in this run: no line", showarrow=False,
                           xref="paper", yref="paper", x=0, y=1.0, xanchor="left")
    if not rows:
        _no_data(fig, "no matmul-bound workload in this run")
    return fig


def kernels_chart(rec: dict):
    import plotly.graph_objects as go

    fig = _figure("Kernels launched per workload", "kernels")
    rows = rec["results"]
    names = [r["workload"] for r in rows]
    fig.add_trace(go.Bar(name="lazy", x=names, y=[r.get("kernels") for r in rows], marker_color=PEER_COLORS["lazy"],
                         hovertext=[", ".join(r.get("kernel_names") or []) or _why(r) for r in rows]))
    for p in _peers_of(rec):  # peers that can count theirs: torch.compile (Inductor), tinygrad
        ks = [r.get("peers", {}).get(p, {}).get("kernels") for r in rows]
        if any(k is not None for k in ks):
            fig.add_trace(go.Bar(name=p, x=names, y=ks, marker_color=PEER_COLORS.get(p)))
    fig.add_trace(go.Scatter(name="expected (fusion tests)", x=names, y=[r.get("expected_kernels") for r in rows],
                             mode="markers", marker={"symbol": "line-ew-open", "size": 24, "color": "#000",
                                                     "line": {"width": 3}}))
    if not rows:
        _no_data(fig, "no workload in this run")
    return fig


def compile_chart(rec: dict):
    import plotly.graph_objects as go

    fig = _figure("Compile time of the first call: cold (empty caches) and warm (disk cache filled, new process)",
                  "seconds (log scale)", log_y=True)
    rows = rec["results"]
    names = [r["workload"] for r in rows]
    series = [("lazy cold", "lazy_cold_s", "#1f77b4"), ("lazy warm", "lazy_warm_s", "#aec7e8"),
              ("torch.compile cold", "torch.compile_cold_s", "#9467bd"),
              ("torch.compile warm", "torch.compile_warm_s", "#c5b0d5")]
    shown = False
    for label, key, color in series:
        ys = [(r.get("compile") or {}).get(key) for r in rows]
        if any(y is not None for y in ys):
            shown = True
            fig.add_trace(go.Bar(name=label, x=names, y=ys, marker_color=color,
                                 hovertemplate="%{x}<br>" + label + ": %{y:.3f} s<extra></extra>"))
    if rec.get("torch_compile_startup_s"):
        fig.add_annotation(text=f"torch.compile startup (once per process): {rec['torch_compile_startup_s']:.1f} s",
                           showarrow=False, xref="paper", yref="paper", x=1, y=1.0, xanchor="right")
    if not shown:
        _no_data(fig, "no compile times in this run")
    return fig


# -- history -----------------------------------------------------------------------------------
def _comparable(records: list[dict]) -> list[dict]:
    last = records[-1]
    return [r for r in records if r.get("size") == last.get("size") and r.get("device") == last.get("device")]


def trend_time_chart(records: list[dict]):
    import plotly.graph_objects as go

    runs = _comparable(records)
    last = records[-1]
    fig = _figure(f"lazy's time per workload over the history (size {last.get('size')}, {last.get('device')})",
                  "median time, ms (log scale)", log_y=True, barmode="overlay")
    labels = [_run_label(r) for r in runs]
    names = list(dict.fromkeys(w["workload"] for r in runs for w in r["results"]))
    for name in names:
        ys = []
        for rec in runs:
            row = next((w for w in rec["results"] if w["workload"] == name), None)
            s = _median(row, "lazy") if row else None
            ys.append(s * 1e3 if s else None)
        if any(y is not None for y in ys):
            fig.add_trace(go.Scatter(name=name, x=labels, y=ys, mode="lines+markers", connectgaps=False,
                                     hovertemplate=name + "<br>%{x}<br>%{y:.3f} ms<extra></extra>"))
    fig.update_xaxes(type="category", title="run (date, commit)")
    if not fig.data:
        _no_data(fig, "no lazy timings in the history")
    return fig


def trend_speedup_chart(records: list[dict]):
    import plotly.graph_objects as go

    runs = _comparable(records)
    fig = _figure("Speedup against torch eager over the history (torch time / lazy time)", "speedup (log scale)",
                  log_y=True, barmode="overlay")
    labels = [_run_label(r) for r in runs]
    names = list(dict.fromkeys(w["workload"] for r in runs for w in r["results"]))
    for name in names:
        ys = []
        for rec in runs:
            row = next((w for w in rec["results"] if w["workload"] == name), None)
            lz, te = (_median(row, "lazy"), _median(row, "torch")) if row else (None, None)
            ys.append(te / lz if lz and te else None)
        if any(y is not None for y in ys):
            fig.add_trace(go.Scatter(name=name, x=labels, y=ys, mode="lines+markers",
                                     hovertemplate=name + "<br>%{x}<br>%{y:.2f}x<extra></extra>"))
    fig.add_hline(y=1, line_dash="dash", line_color="#444")
    fig.update_xaxes(type="category", title="run (date, commit)")
    if not fig.data:
        _no_data(fig, "no lazy and torch timings in the history")
    return fig


# -- tables ------------------------------------------------------------------------------------
def _fmt_s(s) -> str:
    if s is None:
        return "-"
    return f"{s * 1e3:.3f} ms" if s < 1 else f"{s:.2f} s"


def _kernel_cell(detail: list[dict], show: int = 6) -> str:
    """The slowest kernels first, each with its GB/s and share of the triad bandwidth (above 100%:
    its data was in cache)."""
    ks = sorted((k for k in detail if k.get("gbps")), key=lambda k: -(k.get("seconds") or 0))  # untimed last
    text = "; ".join(f"{_kname(k)} {k['gbps']:.1f}" + (f" ({100 * k['roof_fraction']:.0f}%)" if k.get("roof_fraction")
                                                       else "") for k in ks[:show])
    return (text + (f"; +{len(ks) - show} more" if len(ks) > show else "")) or "-"


def results_table(rec: dict) -> str:
    peers = _peers_of(rec)
    head = ["workload", "status", "kernels", "lazy", "rate", "% of roof", "host µs/call", "lazy cold / warm"] + \
        [f"{p}" for p in peers] + ["lazy's slowest kernels: GB/s inside each (% of triad)", "what"]
    out = ["<table class='results'><thead><tr>" + "".join(f"<th>{_esc(h)}</th>" for h in head) + "</tr></thead><tbody>"]
    for r in rec["results"]:
        lz = r.get("peers", {}).get("lazy", {})
        med = lz.get("median_s")
        if r.get("flops"):
            rate = f"{lz['gflops']:.1f} GFLOP/s" if lz.get("gflops") else "-"
        else:
            rate = f"{lz['gbps']:.1f} GB/s" if lz.get("gbps") else "-"
        roof = f"{100 * lz['roof_fraction']:.0f}%" if lz.get("roof_fraction") is not None else "-"
        c = r.get("compile") or {}
        comp = (f"{c['lazy_cold_s']:.2f} s / {c.get('lazy_warm_s', 0) * 1e3:.1f} ms" if "lazy_cold_s" in c
                else _fmt_s(r.get("lazy_first_call_s")))
        status = r.get("status", "?")
        status_txt = f"missing: {r.get('missing')}" if status == "missing" else status
        if status in ("failed", "mismatch"):
            status_txt += f": {r.get('error')}"
        cells = [r["workload"], status_txt, r.get("kernels", "-") if r.get("kernels") is not None else "-", _fmt_s(med),
                 rate, roof, f"{r['overhead_us']:.0f}" if r.get("overhead_us") is not None else "-", comp]
        for p in peers:
            q = r.get("peers", {}).get(p, {})
            qm = q.get("median_s")
            if qm and med:
                cells.append(f"{_fmt_s(qm)} ({qm / med:.2f}x)")
            else:
                cells.append(q.get("status", "-") if q.get("status") not in (None, "ok") else _fmt_s(qm))
        cells.append(_kernel_cell(r.get("kernel_detail") or []))
        cells.append(r.get("description", ""))
        out.append(f"<tr class='status-{_esc(status)}'>" + "".join(f"<td>{_esc(x)}</td>" for x in cells) + "</tr>")
    out.append("</tbody></table>")
    return "\n".join(out)


def _limit(x, fmt: str, unit: str = "") -> str:
    return f"{format(x, fmt)} {unit}".rstrip() if _measured(x) else "not measured"


def runs_table(records: list[dict]) -> str:
    head = ["date (UTC)", "commit", "size", "device", "machine", "copy / triad GB/s", "matmul GFLOP/s", "peers",
            "versions", "wall"]
    out = ["<table class='runs'><thead><tr>" + "".join(f"<th>{_esc(h)}</th>" for h in head) + "</tr></thead><tbody>"]
    for rec in reversed(records):
        g, m, v = rec.get("git") or {}, rec.get("machine") or {}, rec.get("versions") or {}
        commit = (g.get("commit") or "?")[:10] + ("+dirty" if g.get("dirty") else "")
        machine = f"{m.get('cpu', '?')}, {m.get('cpus_usable', '?')} CPUs" + (f", {m['gpu']}" if m.get("gpu") else "")
        vers = ", ".join(f"{k} {val}" for k, val in v.items() if val)
        bw, mm = rec["bandwidth"], rec["matmul"]
        cells = [rec.get("date", "?"), commit, rec.get("size"), rec.get("device"), machine,
                 f"{_limit(bw['copy_gbps'], '.1f')} / {_limit(bw['triad_gbps'], '.1f')}", _limit(mm["gflops"], ".0f"),
                 ", ".join(rec["peers"]),
                 vers, f"{rec['wall_s']:.0f} s" if rec.get("wall_s") else "-"]
        out.append("<tr>" + "".join(f"<td>{_esc(x)}</td>" for x in cells) + "</tr>")
    out.append("</tbody></table>")
    return "\n".join(out)


CSS = """
body { font-family: system-ui, -apple-system, 'Segoe UI', sans-serif; margin: 24px; color: #222; }
h1 { margin-bottom: 4px; } .meta { color: #555; margin: 2px 0; }
section { margin: 28px 0; } .chart { border: 1px solid #eee; border-radius: 6px; margin: 12px 0; }
table { border-collapse: collapse; font-size: 13px; margin: 8px 0; }
th, td { border: 1px solid #ddd; padding: 4px 8px; text-align: left; vertical-align: top; }
th { background: #f5f5f5; position: sticky; top: 0; }
tr.status-missing td { color: #8a6d3b; background: #fcf8e3; }
tr.status-failed td, tr.status-mismatch td { color: #a94442; background: #f2dede; }
.note { color: #555; font-size: 13px; max-width: 70em; }
"""


@contextlib.contextmanager
def _white():
    """plotly's default template is plotly_white inside (the caller's setting is restored after)."""
    import plotly.io as pio

    before = pio.templates.default
    pio.templates.default = "plotly_white"
    try:
        yield
    finally:
        pio.templates.default = before


def render(records: list[dict]) -> str:
    """The dashboard page for `records` (oldest first, at least one)."""
    if not records:
        raise ValueError("dashboard: the history has no runs to show")
    from plotly.offline import get_plotlyjs

    rec = records[-1]
    g, m = rec.get("git") or {}, rec.get("machine") or {}
    with _white():
        charts = {
            "speedup": speedup_chart(rec), "bandwidth": bandwidth_chart(rec), "matmul": matmul_chart(rec),
            "kernels": kernels_chart(rec), "compile": compile_chart(rec),
            "trend-time": trend_time_chart(records), "trend-speedup": trend_speedup_chart(records),
        }
    divs = {k: f"<div class='chart'>{fig.to_html(full_html=False, include_plotlyjs=False, div_id='chart-' + k, config=PLOT_CONFIG)}</div>"
            for k, fig in charts.items()}
    unavailable = "; ".join(f"{p}: {why}" for p, why in (rec.get("peers_unavailable") or {}).items())
    missing = [r for r in rec["results"] if r.get("status") != "ok"]
    tc_cold = [r["compile"]["torch.compile_cold_s"] for r in rec["results"]
               if "torch.compile_cold_s" in (r.get("compile") or {})]
    bw, mm = rec["bandwidth"], rec["matmul"]
    body = f"""
<h1>lazy-triton performance</h1>
<p class='meta'>latest run: {_esc(rec.get('date'))} &middot; commit {_esc((g.get('commit') or '?')[:10])}{' (dirty)' if g.get('dirty') else ''}
 &middot; size {_esc(rec.get('size'))} &middot; {_esc(rec.get('device'))} ({_esc(rec.get('backend'))} backend)
 &middot; {len(records)} run(s) in the history</p>
<p class='meta'>machine: {_esc(m.get('cpu'))}, {_esc(m.get('cpus_usable'))} CPUs, {_esc(m.get('memory_gb'))} GB{(', ' + _esc(m['gpu'])) if m.get('gpu') else ''}
 &middot; measured: copy {_limit(bw['copy_gbps'], '.1f', 'GB/s')}, triad {_limit(bw['triad_gbps'], '.1f', 'GB/s')}
 ({_esc(bw.get('method') or 'method not recorded')});
 matmul {_limit(mm['gflops'], '.0f', 'GFLOP/s')} ({_esc(mm.get('method') or 'method not recorded')})</p>
<p class='meta'>peers: {_esc(', '.join(rec['peers']))}{(' &middot; not run: ' + _esc(unavailable)) if unavailable else ''}</p>
{"<p class='meta'>not ok in this run: " + _esc('; '.join(_why(r) for r in missing)) + "</p>" if missing else ""}
<section id='speedups'><h2>Speedups</h2>{divs['speedup']}</section>
<section id='roofline'><h2>Against the hardware</h2>
<p class='note'>Bars: compulsory bytes (inputs read once, outputs written once) over the end-to-end median time.
Diamonds: each lazy kernel's own bytes over its own time. Lines: the copy and triad bandwidth measured by an OpenMP C
loop in the same run; for matmul-bound rows, the vendor SGEMM rate.</p>
{divs['bandwidth']}{divs['matmul']}</section>
<section id='kernels'><h2>Kernels</h2>{divs['kernels']}</section>
<section id='compile'><h2>Compile times</h2>
<p class='note'>cold: first call with empty caches; warm: first call of a new process with the disk cache filled.
{f"torch.compile: startup {rec['torch_compile_startup_s']:.1f} s once per process, median cold compile {statistics.median(tc_cold):.2f} s per workload." if tc_cold and rec.get('torch_compile_startup_s') else ""}</p>
{divs['compile']}</section>
<section id='table'><h2>All rows of the latest run</h2>{results_table(rec)}</section>
<section id='trend'><h2>History</h2>{divs['trend-time']}{divs['trend-speedup']}
<h3>Runs</h3>{runs_table(records)}</section>
"""
    return (f"<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'>\n"
            f"<meta name='viewport' content='width=device-width, initial-scale=1'>\n"
            f"<title>lazy-triton performance: {_esc(rec.get('size'))}, {_esc(_run_label(rec))}</title>\n"
            f"<style>{CSS}</style>\n<script type='text/javascript'>{get_plotlyjs()}</script>\n</head>\n"
            f"<body>{body}</body></html>\n")


def write(records: list[dict], path: str | Path) -> Path:
    """Render and write atomically (a reader never sees half a page)."""
    import os
    import tempfile

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    text = render(records)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; a page is for sharing
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path
