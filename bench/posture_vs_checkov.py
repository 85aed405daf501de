"""Benchmark Parallax's posture scan against Checkov on a corpus and list where they disagree.

Run by hand (see bench/README.md): interleaved subprocess runs of both scanners, medians of wall
time and peak RSS, then a per-(Checkov check, Parallax control) comparison of failing objects.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import venv
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

CHECKOV_VERSION = "3.3.30"
DEFAULT_CORPUS = Path(__file__).resolve().parents[2] / "shared" / "corpus"
EXAMPLES = 5
GNU_TIME = "/usr/bin/time"

# (file relative to the corpus, kind, namespace, name); namespace "" is normalised to "default".
ObjectKey = tuple[str, str, str, str]


@dataclass(frozen=True)
class Sample:
    """One measured child process: wall seconds, peak RSS in MB and what it printed."""

    wall: float
    rss_mb: float
    stdout: str


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--corpus", type=Path, default=DEFAULT_CORPUS)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument(
        "--checkov-venv",
        type=Path,
        default=Path(tempfile.gettempdir()) / "parallax-bench-checkov",
    )
    parser.add_argument("--checkov-version", default=CHECKOV_VERSION)
    parser.add_argument(
        "--disagreements",
        type=Path,
        default=Path(tempfile.gettempdir()) / "parallax-bench-disagreements.json",
    )
    return parser.parse_args(argv)


def ensure_checkov(venv_dir: Path, version: str) -> Path:
    """Return the checkov executable of `venv_dir`, creating the venv and installing if needed."""
    checkov = venv_dir / "bin" / "checkov"
    if _checkov_version(checkov) == version:
        return checkov
    print(f"installing checkov=={version} into {venv_dir}", flush=True)
    venv.EnvBuilder(with_pip=True, clear=True).create(venv_dir)
    pip = [str(venv_dir / "bin" / "python"), "-m", "pip", "install", "--quiet"]
    subprocess.run([*pip, f"checkov=={version}"], check=True)
    found = _checkov_version(checkov)
    if found != version:
        raise SystemExit(f"checkov in {venv_dir} reports {found!r}, wanted {version}")
    return checkov


def _checkov_version(checkov: Path) -> str | None:
    if not checkov.exists():
        return None
    done = subprocess.run([str(checkov), "--version"], capture_output=True, text=True, check=False)
    return done.stdout.strip() if done.returncode == 0 else None


def measure(cmd: Sequence[str], env: dict[str, str]) -> Sample:
    """Run `cmd` to completion and return its wall time, peak RSS and stdout.

    Linux carries a process's peak RSS across fork and exec, so a child forked straight from this
    (growing) parent would report the parent's size; GNU time forks the real child from a tiny
    process instead. Without it, fall back to wait4's rusage.
    """
    with tempfile.TemporaryFile(mode="w+") as out, tempfile.NamedTemporaryFile("r") as rss:
        prefix = [GNU_TIME, "-f", "%M", "-o", rss.name] if Path(GNU_TIME).exists() else []
        start = time.perf_counter()
        proc = subprocess.Popen([*prefix, *cmd], stdout=out, stderr=subprocess.DEVNULL, env=env)
        _, _, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - start
        proc.returncode = 0  # reaped by wait4; stop Popen from waiting again
        out.seek(0)
        # Both GNU time's %M and ru_maxrss are in KiB.
        kib = int(rss.read().split()[-1]) if prefix else usage.ru_maxrss
        return Sample(wall, kib / 1024, out.read())


def commands(args: argparse.Namespace, checkov: Path) -> dict[str, list[str]]:
    corpus = str(args.corpus)
    # The real command a user runs, like `checkov -d`: start-up, imports and JSON output count.
    parallax = str(Path(sys.executable).with_name("parallax"))
    return {
        "parallax": [parallax, "scan", corpus, "--format", "json"],
        "checkov": [
            str(checkov),
            *("-d", corpus, "--framework", "kubernetes", "-o", "json"),
            *("--quiet", "--compact", "--skip-download"),
        ],
    }


def run_rounds(cmds: dict[str, list[str]], rounds: int) -> dict[str, list[Sample]]:
    """Alternate the tools each round so drift in machine load hits both alike."""
    env = {**os.environ, "BC_SKIP_MAPPING": "TRUE", "PYTHONDONTWRITEBYTECODE": "1"}
    samples: dict[str, list[Sample]] = {name: [] for name in cmds}
    for index in range(rounds):
        order = list(cmds) if index % 2 == 0 else list(reversed(cmds))
        for name in order:
            sample = measure(cmds[name], env)
            samples[name].append(sample)
            print(
                f"round {index + 1} {name:9} {sample.wall:7.2f} s {sample.rss_mb:7.1f} MB",
                flush=True,
            )
    return samples


def print_figures(samples: dict[str, list[Sample]]) -> None:
    wall = {name: statistics.median(s.wall for s in runs) for name, runs in samples.items()}
    rss = {name: statistics.median(s.rss_mb for s in runs) for name, runs in samples.items()}
    print(f"\n{'median':12}{'wall s':>10}{'peak RSS MB':>14}")
    for name in samples:
        print(f"{name:12}{wall[name]:10.2f}{rss[name]:14.1f}")
    ratio_wall = wall["checkov"] / wall["parallax"]
    ratio_rss = rss["checkov"] / rss["parallax"]
    print(f"{'ratio c/p':12}{ratio_wall:10.1f}x{ratio_rss:13.1f}x")


def relative(path: str, corpus: Path) -> str:
    """Checkov prints `/sub/file.yaml` relative to -d; Parallax prints absolute paths."""
    prefix = str(corpus.resolve())
    if path.startswith(prefix):
        path = path[len(prefix) :]
    return path.lstrip("/")


def checkov_failures(stdout: str, corpus: Path) -> dict[str, set[ObjectKey]]:
    data = json.loads(stdout)
    reports = data if isinstance(data, list) else [data]
    failing: dict[str, set[ObjectKey]] = defaultdict(set)
    for report in reports:
        for check in report.get("results", {}).get("failed_checks", []):
            kind, namespace, name = check["resource"].split(".", 2)
            key = (relative(check["file_path"], corpus), kind, namespace or "default", name)
            failing[check["check_id"]].add(key)
    return failing


def parallax_failures(stdout: str, corpus: Path) -> dict[str, set[ObjectKey]]:
    failing: dict[str, set[ObjectKey]] = defaultdict(set)
    for finding in json.loads(stdout)["findings"]:
        ref, uri = finding["object"], finding["source"]["uri"]
        key = (relative(uri, corpus), ref["kind"], ref["namespace"] or "default", ref["name"])
        failing[finding["controlId"]].add(key)
    return failing


def compare(
    checkov: dict[str, set[ObjectKey]], parallax: dict[str, set[ObjectKey]]
) -> list[dict[str, object]]:
    """One row per Parallax control against the union of the Checkov checks mapped to it.

    A control maps to several Checkov ids when Checkov splits it (CPU vs memory requests) or
    keeps a PodSecurityPolicy twin, so an object counts as agreed when any of them failed it.
    """
    from services.posture.rules import CONTROLS

    rows: list[dict[str, object]] = []
    for control in CONTROLS:
        per_id = {cid: checkov.get(cid, set()) for cid in control.checkov_ids}
        ck = set().union(*per_id.values())
        px = parallax.get(control.id, set())
        if not control.checkov_ids or (not ck and not px):
            continue
        only_ck = [[cid, *key] for cid, keys in per_id.items() for key in sorted(keys - px)]
        rows.append(
            {
                "control_id": control.id,
                "checkov_ids": [cid for cid, keys in per_id.items() if keys],
                "both": len(ck & px),
                "only_checkov": only_ck,
                "only_parallax": [list(key) for key in sorted(px - ck)],
            }
        )
    return rows


def print_disagreements(rows: Iterable[dict[str, object]]) -> None:
    print(f"\n{'control':9}{'both':>6}{'only-ck':>9}{'only-px':>9}  checkov ids that failed")
    for row in rows:
        only_ck, only_px, ids = row["only_checkov"], row["only_parallax"], row["checkov_ids"]
        assert isinstance(only_ck, list) and isinstance(only_px, list) and isinstance(ids, list)
        print(
            f"{row['control_id']:9}{row['both']:>6}{len(only_ck):>9}{len(only_px):>9}"
            f"  {' '.join(ids) or '-'}"
        )
        for cid, path, kind, namespace, name in only_ck[:EXAMPLES]:
            print(f"    only checkov  {cid:12} {kind}/{namespace}/{name}  {path}")
        for path, kind, namespace, name in only_px[:EXAMPLES]:
            print(f"    only parallax {'':12} {kind}/{namespace}/{name}  {path}")


def main(argv: Sequence[str]) -> None:
    args = parse_args(argv)
    checkov = ensure_checkov(args.checkov_venv, args.checkov_version)
    print(f"checkov {args.checkov_version} from {checkov}; corpus {args.corpus}", flush=True)
    samples = run_rounds(commands(args, checkov), args.rounds)
    print_figures(samples)
    px_out = json.loads(samples["parallax"][-1].stdout)
    summary = px_out["summary"]
    print(f"parallax: {summary['objectsScanned']} objects, {len(px_out['findings'])} findings")
    rows = compare(
        checkov_failures(samples["checkov"][-1].stdout, args.corpus),
        parallax_failures(samples["parallax"][-1].stdout, args.corpus),
    )
    print_disagreements(rows)
    args.disagreements.write_text(json.dumps(rows, indent=1))
    print(f"\nfull disagreement list: {args.disagreements}")


if __name__ == "__main__":
    main(sys.argv[1:])
