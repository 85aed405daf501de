"""Runtime verdicts per posture control: each control is EXERCISED by its evidence,
NOT_EXERCISED over a silent COMPLETE profile, and NO_EVIDENCE without a profile or while
LEARNING or PARTIAL."""

from __future__ import annotations

from typing import Any

import pytest

from services.correlator import mounts as mounts_of
from services.correlator.domain import ProfileState, Verdict
from services.correlator.verdicts import judge
from tests.correlator import builders as b

HOST = b.mount("hostPath", "/host", 1, host="/etc")
SOCKET = b.mount("hostPath", "/var/run/docker.sock", 2, host="/var/run/docker.sock")
SECRET = b.mount("secret", "/etc/creds", 3)
SCRATCH = b.mount("emptyDir", "/tmp", 4)
MOUNTS = (HOST, SOCKET, SECRET, SCRATCH)
TOKEN = "/var/run/secrets/kubernetes.io/serviceaccount/token"

# control, finding extras, profile items that exercise it, expected evidence fragment
CASES: list[tuple[str, dict[str, Any], dict[str, Any], str]] = [
    ("CTR-01", {}, {"capabilities": (b.cap("CAP_SYS_ADMIN"),)}, "CAP_SYS_ADMIN allowed"),
    (
        "CTR-06",
        {"message": "container 'cart' adds capability NET_ADMIN"},
        {"capabilities": (b.cap("CAP_NET_ADMIN"),)},
        "CAP_NET_ADMIN",
    ),
    ("CTR-08", {}, {"capabilities": (b.cap("CAP_NET_RAW"),)}, "CAP_NET_RAW"),
    ("CTR-02", {}, {"user_ids": (b.uid(1000, 0, "/usr/bin/sudo"),)}, "euid 0"),
    ("CTR-04", {}, {"user_ids": (b.uid(0, 0),)}, "uid 0"),
    (
        "CTR-03",
        {},
        {"file_opens": (b.opened("/var/cache/app.db", writes=True),)},
        "root filesystem",
    ),
    (
        "POD-05",
        {"field_path": "spec.template.spec.volumes[1].hostPath", "message": "hostPath"},
        {"file_opens": (b.opened("/host/passwd"),)},
        "/host/passwd opened",
    ),
    (
        "POD-06",
        {"message": "container 'cart' mounts hostPath /etc writable"},
        {"file_opens": (b.opened("/host/cron.d/x", writes=True),)},
        "written",
    ),
    (
        "POD-07",
        {"field_path": "spec.template.spec.volumes[2].hostPath.path", "message": "sock"},
        {"executables": (b.exe("/usr/bin/docker"),)},
        "runtime client /usr/bin/docker",
    ),
    (
        "SA-01",
        {"message": "ServiceAccount 'cart' token is mounted"},
        {"file_opens": (b.opened(TOKEN),)},
        "token read by /app/server",
    ),
    (
        "SEC-03",
        {"field_path": "spec.template.spec.volumes[3].secret", "message": "Secret"},
        {"file_opens": (b.opened("/etc/creds/password"),)},
        "/etc/creds/password",
    ),
    (
        "POD-03",
        {"message": "pod spec sets hostNetwork: true"},
        {"peers": (b.peer("10.0.0.1", 10250),)},
        "10.0.0.1:10250",
    ),
    (
        "POD-01",
        {"message": "pod spec sets hostPID: true"},
        {"file_opens": (b.opened("/proc/1/environ"),)},
        "/proc/1/environ",
    ),
    ("NET-01", {"message": "no NetworkPolicy"}, {"peers": (b.peer("10.96.0.10", 53),)}, "outbound"),
]
IDS = [c[0] for c in CASES]


@pytest.mark.parametrize(("control", "extra", "items", "fragment"), CASES, ids=IDS)
def test_exercised(
    control: str, extra: dict[str, Any], items: dict[str, Any], fragment: str
) -> None:
    verdict = judge(b.finding(control, **extra), [b.profile(**items)], MOUNTS)
    assert verdict.verdict is Verdict.EXERCISED, verdict.reason
    assert any(fragment in e.description for e in verdict.evidence)
    assert all(e.source.startswith("workloads/shop/") for e in verdict.evidence)


@pytest.mark.parametrize(("control", "extra", "items", "fragment"), CASES, ids=IDS)
def test_not_exercised_over_complete_profile_links_recommendation(
    control: str, extra: dict[str, Any], items: dict[str, Any], fragment: str
) -> None:
    quiet = b.profile(
        capabilities=(b.cap("CAP_CHOWN"),),
        file_opens=(b.opened("/tmp/scratch", writes=True), b.opened("/etc/hosts", writes=True)),
        user_ids=(b.uid(1000, 1000),),
    )
    verdict = judge(b.finding(control, **extra), [quiet], MOUNTS, lambda f: "recommendations/h1")
    assert verdict.verdict is Verdict.NOT_EXERCISED, verdict.reason
    assert verdict.recommendation == "recommendations/h1"
    assert "COMPLETE" in verdict.reason


@pytest.mark.parametrize(("control", "extra", "items", "fragment"), CASES, ids=IDS)
@pytest.mark.parametrize("state", [ProfileState.LEARNING, ProfileState.PARTIAL])
def test_no_evidence_while_not_complete(
    control: str, extra: dict[str, Any], items: dict[str, Any], fragment: str, state: ProfileState
) -> None:
    verdict = judge(b.finding(control, **extra), [b.profile(state)], MOUNTS)
    assert verdict.verdict is Verdict.NO_EVIDENCE
    assert state.name in verdict.reason


def test_no_evidence_without_profile_or_mount_path() -> None:
    assert "no runtime profile" in judge(b.finding("CTR-01"), [], MOUNTS).reason
    blind = judge(
        b.finding("SEC-03", field_path="spec.template.spec.volumes[3].secret"), [b.profile()], ()
    )
    assert blind.verdict is Verdict.NO_EVIDENCE
    assert "mount path unknown" in blind.reason


def test_positive_evidence_counts_even_while_learning() -> None:
    learning = b.profile(ProfileState.LEARNING, capabilities=(b.cap("CAP_SYS_ADMIN"),))
    assert judge(b.finding("CTR-01"), [learning], ()).verdict is Verdict.EXERCISED


def test_controls_without_runtime_evidence_are_unspecified() -> None:
    assert judge(b.finding("IMG-01"), [b.profile()], ()).verdict is Verdict.UNSPECIFIED


def test_mounts_are_read_from_the_workload_manifest() -> None:
    manifest = {
        "kind": "Deployment",
        "spec": {
            "template": {
                "spec": {
                    "volumes": [
                        {"name": "h", "hostPath": {"path": "/etc"}},
                        {"name": "s", "secret": {}},
                    ],
                    "containers": [
                        {
                            "name": "cart",
                            "volumeMounts": [
                                {"name": "h", "mountPath": "/host", "readOnly": True},
                                {"name": "s", "mountPath": "/etc/creds"},
                            ],
                        }
                    ],
                }
            }
        },
    }
    found = mounts_of.mounts(manifest)
    assert [(m.source, m.path, m.read_only, m.index) for m in found] == [
        ("hostPath", "/host", True, 0),
        ("secret", "/etc/creds", False, 1),
    ]
