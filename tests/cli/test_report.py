"""The unified report: the HTML is self-contained (no fetch, no script) and, rendered by headless
Chromium (Debian's chromium), shows every key section; the terminal report names what is
pending; a saved report round-trips through JSON."""

from __future__ import annotations

import io
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from rich.console import Console

from cli import report, report_html
from cli import report_model as m

SECTIONS = ("risks", "incidents", "findings", "profiles", "policies", "flows", "alerts")


def sample() -> m.Report:
    """A report shaped like the demo's, with a <script> in a message to prove escaping."""
    return m.Report(
        title="Parallax demo: the shop",
        generated="2026-01-01 00:00:00 UTC",
        story=["scanned examples/shop/k8s", "attack: a shell read the token"],
        risks=[
            m.Risk(
                "shop/Deployment/frontend",
                76.2,
                1,
                "HIGH",
                [
                    m.Term(
                        "exposure", 20, 1, 20, "reachable through Service/frontend (LoadBalancer)"
                    ),
                ],
            ),
        ],
        findings=[
            m.Finding(
                "POD-05",
                "HIGH",
                "shop/Deployment/kv",
                "hostPath volume mounts /var/lib",
                verdict="EXERCISED",
                verdict_reason="/var/lib/kv/data.log written",
            ),
            m.Finding(
                "SA-01",
                "MEDIUM",
                "shop/Deployment/frontend",
                "<script>alert(1)</script>",
                verdict="NOT_EXERCISED",
                verdict_reason="no read of the token",
            ),
        ],
        profiles=[m.Profile("shop/Deployment/kv", "kv", "COMPLETE", "no new behaviour", 44)],
        policies=[
            m.Policy(
                "shop/Deployment/kv", "seccomp", "READY", True, "44 syscalls", ["rerun"], "{}"
            ),
            m.Policy("shop/Deployment/kv", "networkpolicy", "READY", False, "1/2 allowed"),
        ],
        alerts=[
            m.Alert(
                "R0002",
                "MEDIUM",
                "shop/Deployment/frontend (frontend)",
                "Shell",
                "/bin/sh spawned by python3",
                process_tree=["1 python3", "7 sh -c id"],
            )
        ],
        incidents=[
            m.Incident(
                "Shell in privileged container shop/frontend",
                "CRITICAL",
                "shop/Deployment/frontend (frontend)",
                "R0002",
                "/bin/sh spawned",
                escalation_reasons=["privileged"],
                attack_path=["read the token"],
            )
        ],
        flows=[m.Flow("frontend", "api", 8080, allowed=True), m.Flow("api", "kv", 6379)],
        pending={"vulnerabilities": "awaiting the correlator: UNIMPLEMENTED"},
    )


def test_html_is_self_contained_and_escaped() -> None:
    page = report_html.render(sample())
    assert "<script" not in page.replace("&lt;script", "")
    assert not re.search(r"""(src|href)=["']?(https?:)?//""", page)
    assert "@import" not in page
    assert not re.search(r"url\((?!#)", page)  # only the SVG's own marker
    for key in SECTIONS:
        assert f'id="{key}"' in page


def test_terminal_report_names_pending_sections() -> None:
    out = io.StringIO()
    report.print_terminal(sample(), Console(file=out, width=200, color_system=None))
    text = out.getvalue()
    assert "#1 shop/Deployment/frontend 76/100" in text
    assert "POD-05 shop/Deployment/kv: hostPath volume mounts /var/lib -> EXERCISED" in text
    assert "pending vulnerabilities: awaiting the correlator" in text


def test_report_round_trips_through_json(tmp_path: Path) -> None:
    path = tmp_path / "report.json"
    sample().save(path)
    assert m.Report.load(path) == sample()


def test_chromium_renders_every_section(tmp_path: Path) -> None:
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        pytest.skip("chromium is not installed (apt-get install chromium)")
    page = tmp_path / "report.html"
    report.write_html(sample(), page)
    dom = subprocess.run(
        [
            chromium,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--no-first-run",
            f"--user-data-dir={tmp_path / 'profile'}",
            "--dump-dom",
            page.as_uri(),
        ],
        capture_output=True,
        timeout=90,
        check=True,
    ).stdout.decode()
    for key in SECTIONS:
        assert f'<section id="{key}">' in dom
    assert "Shell in privileged container shop/frontend" in dom
    assert "<svg" in dom and "frontend" in dom
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in dom
