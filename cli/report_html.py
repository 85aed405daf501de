"""Renders a Report as one self-contained HTML page: inline CSS, an inline SVG drawing of the
observed flows against what the generated NetworkPolicies allow, no script and no network
fetch. Called by `parallax report --html` and `parallax demo`."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from html import escape

from cli.report_model import Flow, Report

CSS = """
body{font:15px/1.45 system-ui,sans-serif;margin:0 auto;max-width:1100px;padding:1em 2em;
color:#1d232b;background:#fbfbfc}
h1{margin-bottom:.1em}h2{border-bottom:2px solid #d8dde4;padding-bottom:.2em;margin-top:1.6em}
table{border-collapse:collapse;width:100%;margin:.5em 0}
th,td{text-align:left;padding:.3em .5em;border-bottom:1px solid #e3e6ea;vertical-align:top}
th{background:#eef1f4}code,pre{font:13px ui-monospace,monospace}
pre{background:#f2f4f6;padding:.6em;overflow-x:auto;max-height:22em}
.sev{font-weight:600;padding:0 .4em;border-radius:3px;color:#fff;font-size:12px}
.CRITICAL{background:#8b1a1a}.HIGH{background:#c0392b}.MEDIUM{background:#d68910}
.LOW{background:#5d6d7e}.UNSPECIFIED{background:#95a5a6}
.EXERCISED{color:#b03a2e;font-weight:600}.NOT_EXERCISED{color:#1e8449;font-weight:600}
.NO_EVIDENCE{color:#7f8c8d}.pass{color:#1e8449;font-weight:600}.fail{color:#b03a2e;font-weight:600}
.pending{background:#fff6e0;border-left:4px solid #d68910;padding:.5em 1em}
.card{background:#fff;border:1px solid #e3e6ea;border-radius:6px;padding:.6em 1em;margin:.8em 0}
.muted{color:#6b7785}ol,ul{margin:.2em 0 .2em 1.2em;padding:0}
"""


def _sev(value: str) -> str:
    return f'<span class="sev {escape(value)}">{escape(value)}</span>'


def _verdict(allowed: bool | None) -> str:
    return "not judged" if allowed is None else ("allowed" if allowed else "DENIED")


def _mark(ok: bool | None, text: str) -> str:
    if ok is None:
        return escape("not verified" if text == "-" else text)
    return f'<span class="{"pass" if ok else "fail"}">{escape(text)}</span>'


def _table(head: Sequence[str], rows: Iterable[Sequence[str]]) -> str:
    """Cells are HTML already (escaped by the caller)."""
    header = "".join(f"<th>{escape(h)}</th>" for h in head)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{header}</tr></thead><tbody>{body}</tbody></table>"


def _list(items: Iterable[str], ordered: bool = False) -> str:
    tag = "ol" if ordered else "ul"
    inner = "".join(f"<li>{escape(i)}</li>" for i in items)
    return f"<{tag}>{inner}</{tag}>" if inner else ""


def _pending(report: Report, *sections: str) -> str:
    notes = [f"{s}: {report.pending[s]}" for s in sections if s in report.pending]
    return "".join(f'<p class="pending">{escape(n)}</p>' for n in notes)


def _risks(report: Report) -> str:
    out = _pending(report, "risks and verdicts")
    for r in report.risks:
        rows = [
            (escape(t.term), f"{t.weight:g}", f"{t.value:.2f}", f"{t.contribution:.1f}",
             escape(t.explanation))
            for t in r.terms
        ]  # fmt: skip
        out += (
            f'<div class="card"><h3>#{r.rank} {escape(r.workload)} {_sev(r.severity)} '
            f"score {r.score:.0f}/100</h3>"
            + _table(("term", "weight", "value", "contribution", "why"), rows)
            + "</div>"
        )
    return out or '<p class="muted">No risk ranking.</p>'


def _findings(report: Report) -> str:
    rows = [
        (
            _sev(f.severity),
            f"<code>{escape(f.control_id)}</code>",
            escape(f.workload),
            escape(f.message),
            f'<span class="{escape(f.verdict)}">{escape(f.verdict or "-")}</span>'
            + (f"<br><span class='muted'>{escape(f.verdict_reason)}</span>" if f.verdict_reason
               else ""),
        )
        for f in report.findings
    ]  # fmt: skip
    return _pending(report, "posture", "risks and verdicts") + _table(
        ("severity", "control", "workload", "finding", "runtime verdict"), rows
    )


def _profiles(report: Report) -> str:
    rows = [
        (
            escape(f"{p.workload} ({p.container})"),
            f"<b>{escape(p.state)}</b><br><span class='muted'>{escape(p.reason)}</span>",
            str(p.syscalls),
            escape(", ".join(p.executables)),
            escape(", ".join(p.writes) or "-"),
            escape(", ".join(p.peers) or "-"),
            escape(", ".join(p.capabilities) or "none"),
        )
        for p in report.profiles
    ]
    head = ("container", "state", "syscalls", "executables", "writes", "peers", "capabilities")
    return _pending(report, "runtime") + _table(head, rows)


def _policies(report: Report) -> str:
    out = _pending(report, "recommendations")
    for p in report.policies:
        status = _mark(
            p.verified, "-" if p.verified is None else ("verified" if p.verified else "FAILED")
        )
        content = (
            f"<details><summary>policy</summary><pre>{escape(p.content)}</pre></details>"
            if p.content
            else ""
        )
        out += (
            f'<div class="card"><b>{escape(p.kind)}</b> for {escape(p.workload)}: '
            f"{status}, readiness {escape(p.readiness)}<br>{escape(p.verification)}"
            f"{_list(p.details)}{content}</div>"
        )
    return out or '<p class="muted">No generated policies.</p>'


def _incidents(report: Report) -> str:
    out = _pending(report, "incidents")
    for i in report.incidents:
        out += (
            f'<div class="card"><h3>{_sev(i.severity)} {escape(i.title)}</h3>'
            f"<p>{escape(i.message)} <span class='muted'>({escape(i.rule_id)}, "
            f"{escape(i.workload)})</span></p>"
            + (f"<p><b>Why this severity</b></p>{_list(i.escalation_reasons)}"
               if i.escalation_reasons else "")
            + (f"<p><b>What the attacker can do next</b></p>{_list(i.attack_path, True)}"
               if i.attack_path else "")
            + (f"<p><b>Posture that enables it</b></p>{_list(i.findings)}" if i.findings else "")
            + (f"<p><b>Exposure</b></p>{_list(i.exposure)}" if i.exposure else "")
            + (f"<p><b>Service account</b>: {escape(i.service_account)}</p>"
               if i.service_account else "")
            + (f"<p><b>Contained</b>: {escape(i.contained)}</p>" if i.contained else "")
            + "</div>"
        )  # fmt: skip
    return out or '<p class="muted">No incidents.</p>'


def _alerts(report: Report) -> str:
    rows = [
        (
            _sev(a.severity),
            f"<code>{escape(a.rule_id)}</code> {escape(a.title)}",
            escape(a.message),
            "<br>".join(escape(p) for p in a.process_tree) or "-",
            escape(", ".join(f"{k}={v}" for k, v in sorted(a.evidence.items()))),
        )
        for a in report.alerts
    ]
    head = ("severity", "rule", "what happened", "process tree", "evidence")
    return _pending(report, "runtime") + _table(head, rows)


def _vulnerabilities(report: Report) -> str:
    rows = [
        (_sev(v.severity), escape(v.vulnerability_id), escape(v.workload), escape(v.package),
         f"<b>{escape(v.verdict)}</b> <span class='muted'>{escape(v.reason)}</span>")
        for v in report.vulnerabilities
    ]  # fmt: skip
    if not rows:
        note = "No vulnerability report was imported for these images."
        return _pending(report, "vulnerabilities") + f'<p class="muted">{note}</p>'
    return _pending(report, "vulnerabilities") + _table(
        ("severity", "vulnerability", "workload", "package", "in use?"), rows
    )


def flow_svg(flows: Sequence[Flow]) -> str:
    """Draw the flows left to right by depth: green allowed, red denied, grey not judged."""
    nodes: list[str] = []
    for f in flows:
        for n in (f.source, f.destination):
            if n not in nodes:
                nodes.append(n)
    depth = dict.fromkeys(nodes, 0)
    for _ in nodes:  # longest path from a source, bounded by the number of nodes
        for f in flows:
            depth[f.destination] = max(depth[f.destination], depth[f.source] + 1)
    columns: dict[int, list[str]] = {}
    for n in nodes:
        columns.setdefault(min(depth[n], len(nodes)), []).append(n)
    width, height = 240, 90
    where = {n: (30 + d * width, 30 + i * height) for d, ns in columns.items() for i, n in
             enumerate(ns)}  # fmt: skip
    parts = []
    for f in flows:
        (x1, y1), (x2, y2) = where[f.source], where[f.destination]
        colour = "#95a5a6" if f.allowed is None else ("#1e8449" if f.allowed else "#b03a2e")
        label = f"{f.protocol}/{f.port} {_verdict(f.allowed)}"
        parts.append(
            f'<line x1="{x1 + 170}" y1="{y1 + 20}" x2="{x2}" y2="{y2 + 20}" stroke="{colour}" '
            f'stroke-width="2.5" marker-end="url(#arrow)"><title>{escape(f.reason)}</title></line>'
            f'<text x="{(x1 + 170 + x2) / 2 - 40}" y="{(y1 + y2) / 2 + 14}" font-size="12" '
            f'fill="{colour}">{escape(label)}</text>'
        )
    for n, (x, y) in where.items():
        parts.append(
            f'<rect x="{x}" y="{y}" width="170" height="40" rx="6" fill="#eef1f4" '
            f'stroke="#5d6d7e"/><text x="{x + 85}" y="{y + 25}" font-size="13" '
            f'text-anchor="middle">{escape(n)}</text>'
        )
    w = 60 + (max(depth.values(), default=0) + 1) * width
    h = 40 + max((len(c) for c in columns.values()), default=1) * height
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" role="img" '
        f'aria-label="observed flows"><defs><marker id="arrow" viewBox="0 0 10 10" refX="10" '
        f'refY="5" markerWidth="7" markerHeight="7" orient="auto"><path d="M0,0L10,5L0,10z" '
        f'fill="#5d6d7e"/></marker></defs>{"".join(parts)}</svg>'
    )


def _flows(report: Report) -> str:
    if not report.flows:
        return '<p class="muted">No flows observed.</p>'
    rows = [
        (escape(f.source), escape(f.destination), f"{escape(f.protocol)}/{f.port}",
         _mark(f.allowed, _verdict(f.allowed)),
         escape(f.reason))
        for f in report.flows
    ]  # fmt: skip
    return flow_svg(report.flows) + _table(
        ("from", "to", "port", "generated policies", "why"), rows
    )


SECTIONS = (
    ("risks", "Workloads ranked by risk", _risks),
    ("incidents", "Incidents", _incidents),
    ("findings", "Findings with runtime verdicts", _findings),
    ("profiles", "Runtime profiles", _profiles),
    ("policies", "Generated policies and their verification", _policies),
    ("flows", "Observed flows against the generated NetworkPolicies", _flows),
    ("alerts", "Runtime alerts", _alerts),
    ("vulnerabilities", "Vulnerabilities in use", _vulnerabilities),
)


def render(report: Report) -> str:
    """The whole page."""
    story = _list(report.story, ordered=True)
    nav = " · ".join(f'<a href="#{key}">{escape(title)}</a>' for key, title, _ in SECTIONS)
    body = "".join(
        f'<section id="{key}"><h2>{escape(title)}</h2>{draw(report)}</section>'
        for key, title, draw in SECTIONS
    )
    return (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{escape(report.title)}</title><style>{CSS}</style></head><body>"
        f"<h1>{escape(report.title)}</h1><p class='muted'>generated {escape(report.generated)}"
        f"</p><nav>{nav}</nav>"
        + (f'<section id="story"><h2>What happened</h2>{story}</section>' if story else "")
        + body
        + "</body></html>"
    )
