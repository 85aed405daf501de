"""Parsers of vulnerability scanner reports (Trivy JSON, Grype JSON, CycloneDX JSON with
vulnerabilities) into packages with their file lists and (vulnerability, package) pairs. Pure;
a malformed report raises InvalidArgument and nothing is stored. Called by the import RPC."""

from __future__ import annotations

import enum
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from servicekit.errors import InvalidArgument
from services.correlator.domain import Severity

MAX_REPORT_BYTES = 64 * 1024 * 1024


class ReportFormat(enum.IntEnum):
    """The supported formats, numbered as the contract numbers them."""

    TRIVY = 1
    GRYPE = 2
    CYCLONEDX = 3


@dataclass(frozen=True)
class Package:
    """An installed package and the files it owns (empty when the report does not list them)."""

    key: str
    name: str
    version: str
    purl: str
    files: tuple[str, ...] = ()


@dataclass(frozen=True)
class Finding:
    """One vulnerability of one package."""

    vulnerability_id: str
    package: str
    severity: Severity
    title: str = ""
    fixed_version: str = ""
    aliases: tuple[str, ...] = ()


@dataclass(frozen=True)
class Report:
    """A parsed report: its digest (when it names one), packages by key, and findings."""

    digest: str
    packages: Mapping[str, Package]
    findings: tuple[Finding, ...]

    @property
    def files_present(self) -> bool:
        """True when the report lists files for its packages."""
        return any(p.files for p in self.packages.values())


def severity(text: Any) -> Severity:
    """Map a scanner's severity word; unknown and negligible become LOW."""
    word = str(text or "").strip().upper()
    return Severity[word] if word in ("LOW", "MEDIUM", "HIGH", "CRITICAL") else Severity.LOW


def _files(*groups: Any) -> tuple[str, ...]:
    out = []
    for group in groups:
        for item in group if isinstance(group, list) else [group]:
            path = item.get("path") if isinstance(item, Mapping) else item
            if isinstance(path, str) and path:
                out.append("/" + path.lstrip("/"))
    return tuple(dict.fromkeys(out))


def _trivy(data: Mapping[str, Any]) -> Report:
    metadata = data.get("Metadata") or {}
    digests = metadata.get("RepoDigests") or []
    digest = str(digests[0]).rpartition("@")[2] if digests else ""
    packages: dict[str, Package] = {}
    findings: list[Finding] = []
    for result in data.get("Results") or []:
        for pkg in result.get("Packages") or []:
            key = f"{pkg['Name']}@{pkg.get('Version', '')}"
            purl = (pkg.get("Identifier") or {}).get("PURL", "")
            files = _files(pkg.get("InstalledFiles") or [], pkg.get("FilePath") or [])
            packages[key] = Package(key, pkg["Name"], pkg.get("Version", ""), purl, files)
        for vuln in result.get("Vulnerabilities") or []:
            key = f"{vuln['PkgName']}@{vuln.get('InstalledVersion', '')}"
            if key not in packages:
                purl = (vuln.get("PkgIdentifier") or {}).get("PURL", "")
                files = _files(vuln.get("PkgPath") or [])
                packages[key] = Package(
                    key, vuln["PkgName"], vuln.get("InstalledVersion", ""), purl, files
                )
            findings.append(
                Finding(
                    vuln["VulnerabilityID"],
                    key,
                    severity(vuln.get("Severity")),
                    str(vuln.get("Title") or ""),
                    str(vuln.get("FixedVersion") or ""),
                    tuple(vuln.get("VendorIDs") or ()),
                )
            )
    return Report(digest, packages, tuple(findings))


def _grype(data: Mapping[str, Any]) -> Report:
    target = (data.get("source") or {}).get("target") or {}
    digest = str(target.get("manifestDigest") or "") if isinstance(target, Mapping) else ""
    packages: dict[str, Package] = {}
    findings: list[Finding] = []
    for match in data.get("matches") or []:
        art, vuln = match["artifact"], match["vulnerability"]
        key = f"{art['name']}@{art.get('version', '')}"
        files = _files(art.get("locations") or [], (art.get("metadata") or {}).get("files") or [])
        packages[key] = Package(
            key, art["name"], art.get("version", ""), art.get("purl", ""), files
        )
        fixes = (vuln.get("fix") or {}).get("versions") or []
        aliases = tuple(r["id"] for r in match.get("relatedVulnerabilities") or () if r.get("id"))
        findings.append(
            Finding(
                vuln["id"],
                key,
                severity(vuln.get("severity")),
                str(vuln.get("description") or "")[:200],
                str(fixes[0]) if fixes else "",
                tuple(a for a in aliases if a != vuln["id"]),
            )
        )
    return Report(digest, packages, tuple(findings))


def _cyclonedx(data: Mapping[str, Any]) -> Report:
    if data.get("bomFormat") != "CycloneDX":
        raise KeyError("bomFormat")
    packages: dict[str, Package] = {}
    for comp in data.get("components") or []:
        ref = comp.get("bom-ref") or comp.get("purl") or comp["name"]
        paths = [
            p["value"]
            for p in comp.get("properties") or []
            if ":location:" in str(p.get("name")) and str(p.get("name")).endswith(":path")
        ]
        packages[ref] = Package(
            ref, comp["name"], comp.get("version", ""), comp.get("purl", ""), _files(paths)
        )
    findings = []
    for vuln in data.get("vulnerabilities") or []:
        ratings = [r.get("severity") for r in vuln.get("ratings") or []]
        top = max((severity(r) for r in ratings), default=Severity.LOW)
        for affected in vuln.get("affects") or []:
            findings.append(
                Finding(
                    vuln["id"],
                    affected["ref"],
                    top,
                    str(vuln.get("description") or "")[:200],
                    "",
                    tuple(r.get("id") for r in vuln.get("references") or () if r.get("id")),
                )
            )
    return Report("", packages, tuple(findings))


_PARSERS: dict[ReportFormat, Callable[[Mapping[str, Any]], Report]] = {
    ReportFormat.TRIVY: _trivy,
    ReportFormat.GRYPE: _grype,
    ReportFormat.CYCLONEDX: _cyclonedx,
}


def parse(form: ReportFormat, content: bytes) -> Report:
    """Parse a report; InvalidArgument for oversize, non-JSON or malformed content."""
    if len(content) > MAX_REPORT_BYTES:
        raise InvalidArgument(f"report is larger than {MAX_REPORT_BYTES} bytes")
    try:
        data = json.loads(content)
        if not isinstance(data, dict):
            raise TypeError("a JSON object")
        return _PARSERS[form](data)
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise InvalidArgument(
            f"not a valid {form.name} report: {type(exc).__name__} {exc}"
        ) from None
