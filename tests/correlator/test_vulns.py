"""In-use vulnerability verdicts from a small hand-written Trivy report (libssl3 opened, curl
never run, zlib1g without a file list), the Grype and CycloneDX parsers, and OpenVEX export."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest

from servicekit.errors import InvalidArgument
from services.correlator.domain import ProfileState, Severity
from services.correlator.reports import ReportFormat, parse
from services.correlator.vulns import Usage, VexStatement, openvex, usage
from tests.correlator import builders as b

REPORT = (Path(__file__).parent / "testdata" / "trivy-cart.json").read_bytes()
SERVER = b.profile(
    file_opens=(b.opened("/usr/lib/x86_64-linux-gnu/libssl.so.3"), b.opened("/etc/app.yaml")),
    executables=(b.exe("/app/server"),),
)


def test_trivy_report_parses_packages_files_and_findings() -> None:
    report = parse(ReportFormat.TRIVY, REPORT)
    assert report.digest == "sha256:aa"
    assert len(report.packages) == 3 and len(report.findings) == 3
    assert report.files_present
    found = {f.vulnerability_id: f for f in report.findings}
    assert found["CVE-2024-0727"].severity is Severity.HIGH
    assert found["CVE-2024-0727"].fixed_version == "3.0.13-1"
    assert found["CVE-2024-2398"].aliases == ("DSA-5678-1",)


@pytest.mark.parametrize(
    ("package", "profile", "expected", "fragment"),
    [
        ("libssl3@3.0.11-1", SERVER, Usage.IN_USE, "libssl.so.3"),
        ("curl@7.88.1-10", SERVER, Usage.NOT_IN_USE, "none of the 2 files"),
        ("curl@7.88.1-10", b.profile(ProfileState.LEARNING), Usage.UNKNOWN, "LEARNING"),
        ("curl@7.88.1-10", None, Usage.UNKNOWN, "no runtime profile"),
        ("zlib1g@1:1.2.13", SERVER, Usage.UNKNOWN, "lists no files"),
    ],
    ids=["opened", "never-run", "learning", "no-profile", "no-file-list"],
)
def test_usage_verdicts(package: str, profile, expected: int, fragment: str) -> None:  # type: ignore[no-untyped-def]
    verdict = usage(parse(ReportFormat.TRIVY, REPORT).packages[package], profile)
    assert verdict.usage == expected
    assert fragment in verdict.reason or any(fragment in e.description for e in verdict.evidence)


def test_executed_file_counts_as_in_use() -> None:
    curl = parse(ReportFormat.TRIVY, REPORT).packages["curl@7.88.1-10"]
    verdict = usage(curl, b.profile(executables=(b.exe("/usr/bin/curl"),)))
    assert verdict.usage == Usage.IN_USE
    assert "executed" in verdict.evidence[0].description


def test_grype_and_cyclonedx_reports() -> None:
    grype = {
        "matches": [
            {
                "vulnerability": {
                    "id": "CVE-1",
                    "severity": "Critical",
                    "fix": {"versions": ["2"]},
                },
                "relatedVulnerabilities": [{"id": "GHSA-x"}],
                "artifact": {
                    "name": "lib",
                    "version": "1",
                    "purl": "pkg:deb/debian/lib@1",
                    "metadata": {"files": [{"path": "/usr/lib/lib.so"}]},
                },
            }
        ],
        "source": {"target": {"manifestDigest": "sha256:bb"}},
    }
    parsed = parse(ReportFormat.GRYPE, json.dumps(grype).encode())
    assert parsed.digest == "sha256:bb"
    assert parsed.findings[0].aliases == ("GHSA-x",)
    assert parsed.packages["lib@1"].files == ("/usr/lib/lib.so",)
    bom = {
        "bomFormat": "CycloneDX",
        "components": [
            {
                "bom-ref": "c1",
                "name": "lib",
                "version": "1",
                "properties": [{"name": "syft:location:0:path", "value": "/lib.so"}],
            }
        ],
        "vulnerabilities": [
            {"id": "CVE-2", "ratings": [{"severity": "high"}], "affects": [{"ref": "c1"}]}
        ],
    }
    parsed = parse(ReportFormat.CYCLONEDX, json.dumps(bom).encode())
    assert parsed.findings[0].severity is Severity.HIGH
    assert parsed.packages["c1"].files == ("/lib.so",)


@pytest.mark.parametrize("content", [b"not json", b"[]", b'{"matches": [{}]}'])
def test_malformed_reports_are_invalid_arguments(content: bytes) -> None:
    with pytest.raises(InvalidArgument):
        parse(ReportFormat.GRYPE, content)


def test_openvex_states_not_affected_with_justification() -> None:
    statement = VexStatement(
        "CVE-2024-2398",
        ("DSA-5678-1",),
        "ghcr.io/acme/cart:1.4",
        "sha256:aa",
        "pkg:deb/debian/curl@7.88.1-10",
        "never run",
    )
    document = json.loads(openvex([statement], "", datetime(2026, 1, 1, tzinfo=UTC)))
    assert document["@context"] == "https://openvex.dev/ns/v0.2.0"
    assert document["author"] == "Parallax"
    (only,) = document["statements"]
    assert only["status"] == "not_affected"
    assert only["justification"] == "vulnerable_code_not_in_execute_path"
    assert only["vulnerability"] == {"name": "CVE-2024-2398", "aliases": ["DSA-5678-1"]}
    assert only["products"][0]["subcomponents"] == [{"@id": "pkg:deb/debian/curl@7.88.1-10"}]
