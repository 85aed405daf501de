"""Indicator data the detection rules match against: cloud metadata endpoints, mining-pool ports
and names, package managers and the subcommands that change packages, and where projected
service-account tokens live. Pure data and matchers, called by rules/checks.py (and, for
TOKEN_DIRS, by steps.py)."""

from __future__ import annotations

import posixpath
import re
from ipaddress import IPv4Address, IPv6Address, ip_address

# Matched by parsed address (is_metadata_address), so other spellings such as the IPv4-mapped
# `::ffff:a9fe:a9fe` of a dual-stack socket match too.
METADATA_ADDRESSES = frozenset({"169.254.169.254", "fd00:ec2::254", "100.100.100.200"})
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
# Every token path starts with one of these (/var/run is an alias of /run): a cheap first test
# for the ingest path (steps.inert_open) and the rule; token_file then tells the tokens apart
# from what sits beside them (namespace, ca.crt).
TOKEN_DIRS = ("/var/run/secrets/", "/run/secrets/")
# Where projected tokens are mounted, with the token's file name there ("" for any file): the
# pod's own service-account token, EKS IRSA and Pod Identity, OpenShift STS, Azure workload
# identity, and the conventional directory of other projected tokens (GKE workload identity
# federation, Vault).
_TOKEN_FILES = (
    ("/run/secrets/kubernetes.io/serviceaccount/", "token"),
    ("/run/secrets/eks.amazonaws.com/serviceaccount/", "token"),
    ("/run/secrets/pods.eks.amazonaws.com/serviceaccount/", "eks-pod-identity-token"),
    ("/run/secrets/openshift/serviceaccount/", "token"),
    ("/run/secrets/azure/tokens/", "azure-identity-token"),
    ("/run/secrets/tokens/", ""),
)
_PIP_VERSIONED = re.compile(r"^pip\d(\.\d+)?$")
_APT = frozenset(
    {"install", "reinstall", "upgrade", "full-upgrade", "dist-upgrade", "safe-upgrade"}
    | {"remove", "purge", "autoremove", "build-dep"}
)
_YUM = frozenset(
    {"install", "reinstall", "localinstall", "groupinstall", "update", "upgrade", "downgrade"}
    | {"distro-sync", "swap", "remove", "erase", "autoremove", "groupremove"}
)
_NODE = frozenset(
    {"install", "i", "in", "isntall", "add", "ci", "clean-install", "install-clean", "it"}
    | {"install-test", "cit", "install-ci-test", "update", "up", "upgrade"}
    | {"remove", "rm", "r", "uninstall", "un", "unlink"}
)
# The subcommands by which a package manager installs, upgrades or removes packages; its
# queries (`pip --version`, `apt list`) and other commands (`npm start`) change nothing.
_SUBCOMMANDS: dict[str, frozenset[str]] = {
    "apt": _APT,
    "apt-get": _APT,
    "aptitude": _APT,
    "yum": _YUM,
    "dnf": _YUM,
    "microdnf": _YUM,
    "zypper": frozenset(
        {"install", "in", "update", "up", "dist-upgrade", "dup", "patch", "remove", "rm"}
    ),
    "apk": frozenset({"add", "del", "upgrade", "fix"}),
    "pip": frozenset({"install", "uninstall", "download"}),
    "npm": _NODE,
    "yarn": _NODE,
    "pnpm": _NODE,
    "gem": frozenset({"install", "uninstall", "update"}),
    "conda": frozenset({"install", "remove", "uninstall", "update", "upgrade"}),
}
# Package managers whose action is an option: dpkg's, rpm's (a cluster such as -ivh, not a
# query such as -qi), pacman's (-S but not its queries -Ss/-Si/-Sl/-Sg/-Sp, -U, -R).
_ACTIONS: dict[str, re.Pattern[str]] = {
    "dpkg": re.compile(r"^(-[irP]|--(install|unpack|remove|purge))$"),
    "rpm": re.compile(
        r"^(-(?!-)(?![A-Za-z]*[qVK])[A-Za-z]*[iUFe]|--(install|upgrade|freshen|erase|reinstall)$)"
    ),
    "pacman": re.compile(
        r"^(-(?!-)[a-z]*[UR]|-(?!-)(?![A-Za-z]*[silgp])[a-z]*S|--(sync|upgrade|remove)$)"
    ),
}
# emerge installs what it is given unless asked only to pretend, search or report.
_EMERGE_QUERY = re.compile(
    r"^(-(?!-)[A-Za-z]*[psSVh]|--(pretend|search|searchdesc|info|version|help)$)"
)
# Parsed-address verdicts by address string; cleared when full (like patterns.collapse_path).
_METADATA: dict[str, bool] = {}
MEMO_SIZE = 4096
_METADATA_IPS = frozenset(ip_address(a) for a in METADATA_ADDRESSES)


def is_mining_pool(name: str) -> bool:
    """Return True when the DNS name belongs to a known mining pool or looks like one."""
    if any(name == d or name.endswith("." + d) for d in MINING_DOMAINS):
        return True
    return bool(_MINING_LABEL.search(name))


def is_metadata_address(address: str) -> bool:
    """Return True when `address` is a cloud metadata service's in any spelling: IPv6 written
    out or compressed, or IPv4-mapped (`::ffff:a9fe:a9fe`, `::ffff:169.254.169.254`). Memoised:
    the rules ask once per flow step."""
    found = _METADATA.get(address)
    if found is None:
        if len(_METADATA) >= MEMO_SIZE:
            _METADATA.clear()
        found = _METADATA[address] = _parsed(address) in _METADATA_IPS
    return found


def _parsed(address: str) -> IPv4Address | IPv6Address | None:
    try:
        parsed = ip_address(address)
    except ValueError:
        return None
    if isinstance(parsed, IPv6Address) and parsed.ipv4_mapped is not None:
        return parsed.ipv4_mapped
    return parsed


def changes_packages(path: str, argv: tuple[str, ...]) -> bool:
    """Return True when the exec is a package manager installing, upgrading or removing
    packages (`apt-get install`, `dpkg -i`, `python3 -m pip uninstall`), False for anything
    else (`npm start`, `dpkg --print-architecture`, `pip --version`)."""
    base, args = path.rsplit("/", 1)[-1], argv[1:]
    if _PIP_VERSIONED.match(base):
        base = "pip"
    elif base.startswith("python") and args[:2] == ("-m", "pip"):
        base, args = "pip", args[2:]
    actions = _ACTIONS.get(base)
    if actions is not None:
        return any(actions.match(a) for a in args)
    if base == "emerge":
        return bool(args) and not any(_EMERGE_QUERY.match(a) for a in args)
    subcommands = _SUBCOMMANDS.get(base)
    return subcommands is not None and any(w in subcommands for w in _leading_words(args))


def _leading_words(args: tuple[str, ...]) -> list[str]:
    """The arguments that may be the subcommand: the first one that is no option, and before it
    those right after an option, which may be its value (`apt-get -o Opt=1 install`). yarn's
    `global` prefix is skipped."""
    words: list[str] = []
    after_option = False
    for arg in args:
        if arg.startswith("-") and arg != "-":
            after_option = "=" not in arg
        elif arg != "global":
            words.append(arg)
            if not after_option:
                break
            after_option = False
    return words


def token_file(path: str) -> str:
    """Return the projected token that `path` opens, named the same through all its aliases
    (under /run/, `..` resolved, without the volume's `..data/` or timestamped directory), or ""
    when `path` is none (such as the namespace or ca.crt beside the token)."""
    if not path.startswith(TOKEN_DIRS):
        return ""
    normal = posixpath.normpath(path)
    if normal.startswith("/var/run/"):
        normal = normal[4:]
    for directory, name in _TOKEN_FILES:
        if normal.startswith(directory):
            inside = [s for s in normal[len(directory) :].split("/") if not s.startswith("..")]
            wanted = inside == [name] if name else bool(inside)
            return directory + "/".join(inside) if wanted else ""
    return ""
