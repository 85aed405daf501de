"""In-use verdicts for vulnerable packages and their OpenVEX export. A vulnerability is IN_USE
when a file of its package was executed or opened by the workload's container, NOT_IN_USE when a
COMPLETE profile shows none was, UNKNOWN otherwise (no COMPLETE profile, or no file list).
Pure; called by the import RPC, the correlation pass and ExportVex."""

from __future__ import annotations

import fnmatch
import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from services.correlator.domain import Evidence, Profile, ProfileState
from services.correlator.reports import Package

MAX_EVIDENCE = 16


class Usage:
    """Usage verdicts, numbered as the contract numbers them."""

    IN_USE = 1
    NOT_IN_USE = 2
    UNKNOWN = 3


@dataclass(frozen=True)
class UsageVerdict:
    """A package's use by one container profile."""

    usage: int
    reason: str
    evidence: tuple[Evidence, ...] = ()


def _used_files(profile: Profile) -> list[tuple[str, str, float]]:
    """(path pattern, how, first seen) for everything the container executed or opened."""
    found = [
        (e.path, f"executed ({' '.join(e.argv[:3]) or e.path})", e.first_seen)
        for e in profile.executables
    ]
    found += [
        (f.pattern, f"opened by {', '.join(f.executables) or '?'}", f.first_seen)
        for f in profile.file_opens
    ]
    return found


def _matches(pattern: str, path: str) -> bool:
    return pattern == path or ("*" in pattern and fnmatch.fnmatchcase(path, pattern))


def usage(package: Package, profile: Profile | None) -> UsageVerdict:
    """Decide whether `profile`'s container uses `package`."""
    if profile is None:
        return UsageVerdict(Usage.UNKNOWN, "no runtime profile for a container running the image")
    if not package.files:
        return UsageVerdict(Usage.UNKNOWN, "the report lists no files for the package")
    files = set(package.files)
    seen = [
        Evidence(f"{path} {how}", profile.name, when)
        for pattern, how, when in _used_files(profile)
        for path in sorted(files)
        if _matches(pattern, path)
    ]
    if seen:
        return UsageVerdict(
            Usage.IN_USE,
            f"{len(seen)} file(s) of {package.name} used, first {seen[0].description}",
            tuple(seen[:MAX_EVIDENCE]),
        )
    if profile.state is not ProfileState.COMPLETE:
        state = profile.state.name
        return UsageVerdict(Usage.UNKNOWN, f"profile is {state}: absence proves nothing yet")
    why = f"none of the {len(files)} files of {package.name} was executed or opened"
    return UsageVerdict(
        Usage.NOT_IN_USE,
        f"{why} (profile COMPLETE)",
        (Evidence(f"{why} while learning", profile.name),),
    )


def image_matches(profile: Profile, image_ref: str, digest: str) -> bool:
    """True when the profile's container runs the report's image (by digest when both have it)."""
    if digest and profile.digest:
        return profile.digest == digest
    return bool(image_ref) and profile.image == image_ref


@dataclass(frozen=True)
class VexStatement:
    """One NOT_IN_USE vulnerability to state as not_affected."""

    vulnerability_id: str
    aliases: tuple[str, ...]
    image_ref: str
    image_digest: str
    package_purl: str
    reason: str


def _product(statement: VexStatement) -> dict[str, object]:
    ident = statement.image_ref
    if statement.image_digest:
        repository = statement.image_ref.split("@", 1)[0].rsplit(":", 1)[0]
        ident = f"pkg:oci/{repository.rsplit('/', 1)[-1]}@{statement.image_digest}"
        ident += f"?repository_url={repository}"
    product: dict[str, object] = {"@id": ident}
    if statement.package_purl:
        product["subcomponents"] = [{"@id": statement.package_purl}]
    return product


def openvex(statements: Sequence[VexStatement], author: str, now: datetime) -> str:
    """An OpenVEX v0.2.0 document stating each vulnerability not_affected because the
    vulnerable code is not in the execute path."""
    stamp = now.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    body = [
        {
            "vulnerability": {"name": s.vulnerability_id, "aliases": list(s.aliases)}
            if s.aliases
            else {"name": s.vulnerability_id},
            "products": [_product(s)],
            "status": "not_affected",
            "justification": "vulnerable_code_not_in_execute_path",
            "impact_statement": s.reason,
        }
        for s in statements
    ]
    digest = hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()[:32]
    document = {
        "@context": "https://openvex.dev/ns/v0.2.0",
        "@id": f"https://parallax.dev/vex/{digest}",
        "author": author or "Parallax",
        "timestamp": stamp,
        "version": 1,
        "statements": body,
    }
    return json.dumps(document, indent=2)
