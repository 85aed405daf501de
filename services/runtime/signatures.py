"""Indicator data the detection rules match against: cloud metadata endpoints, mining-pool ports
and names, package managers and the service-account token location. Pure data and matchers."""

from __future__ import annotations

import re

METADATA_ADDRESSES = frozenset(
    {"169.254.169.254", "::ffff:169.254.169.254", "fd00:ec2::254", "100.100.100.200"}
)
METADATA_NAMES = frozenset({"metadata.google.internal", "metadata.goog", "metadata"})
MINING_PORTS = frozenset({3333, 3334, 3357, 4444, 5555, 5556, 7777, 14433, 14444, 45560, 45700})
MINING_DOMAINS = (
    "2miners.com",
    "c3pool.com",
    "ethermine.org",
    "f2pool.com",
    "hashvault.pro",
    "herominers.com",
    "minergate.com",
    "minexmr.com",
    "moneroocean.stream",
    "nanopool.org",
    "nicehash.com",
    "supportxmr.com",
    "unmineable.com",
    "xmrpool.eu",
)
_MINING_LABEL = re.compile(r"(^|[.-])(xmr|monero|stratum|cryptonight)([.-]|$)")
TOKEN_DIRS = (
    "/var/run/secrets/kubernetes.io/serviceaccount/",
    "/run/secrets/kubernetes.io/serviceaccount/",
)
PACKAGE_MANAGERS = frozenset(
    {
        "apt",
        "apt-get",
        "aptitude",
        "dpkg",
        "yum",
        "dnf",
        "microdnf",
        "rpm",
        "apk",
        "zypper",
        "pip",
        "pip3",
        "npm",
        "yarn",
        "gem",
        "conda",
        "pacman",
        "emerge",
    }
)
_PIP_VERSIONED = re.compile(r"^pip\d(\.\d+)?$")


def is_mining_pool(name: str) -> bool:
    """Return True when the DNS name belongs to a known mining pool or looks like one."""
    if any(name == d or name.endswith("." + d) for d in MINING_DOMAINS):
        return True
    return bool(_MINING_LABEL.search(name))


def is_package_manager(path: str, argv: tuple[str, ...]) -> bool:
    """Return True for a package manager binary, or `python -m pip`."""
    base = path.rsplit("/", 1)[-1]
    if base in PACKAGE_MANAGERS or _PIP_VERSIONED.match(base):
        return True
    return base.startswith("python") and argv[1:3] == ("-m", "pip")
