"""Seccomp verification verdicts: a command that exits 0 passes, a server still running at the
short verification timeout with nothing denied and the negative control refused is READY, and
anything denied or unrefused fails; the verification deadline must cover two runs."""

from __future__ import annotations

import pytest
from google.protobuf.duration_pb2 import Duration
from parallax.policygen.v1 import seccomp_pb2

from servicekit.config import ConfigError
from services.correlator.config import Settings
from services.correlator.policies import verdict
from services.correlator.recommendations import Readiness

REFUSED = seccomp_pb2.NegativeControl(syscall_name="unshare", refused=True, error_number=1)
DENIED = [seccomp_pb2.DeniedSyscall(syscall_name="ptrace")]
ADDRESSES = {
    "PARALLAX_INSECURE": "true",
    "PARALLAX_POSTURE_ADDRESS": "127.0.0.1:1",
    "PARALLAX_RUNTIME_ADDRESS": "127.0.0.1:2",
    "PARALLAX_POLICYGEN_ADDRESS": "127.0.0.1:3",
}


def run(**fields: object) -> seccomp_pb2.SeccompVerification:
    base: dict[str, object] = {"negative_control": REFUSED, "elapsed": Duration(seconds=5)}
    return seccomp_pb2.SeccompVerification(**{**base, **fields})  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("result", "readiness", "said"),
    [
        (run(passed=True), Readiness.READY, "ran under the profile; negative control unshare"),
        (
            run(timed_out=True, exit_status=-1, signal=9, failure_reason="timeout"),
            Readiness.READY,
            "without a denial until the verification timeout (5.0s, a server)",
        ),
        (
            run(
                timed_out=True, exit_status=-1, signal=9, denied_syscalls=DENIED, failure_reason="x"
            ),
            Readiness.FAILED,
            "verification failed: x",
        ),
        (
            run(
                timed_out=True, negative_control=seccomp_pb2.NegativeControl(syscall_name="unshare")
            ),
            Readiness.FAILED,
            "verification failed",
        ),
        (run(exit_status=1, failure_reason="exited 1"), Readiness.FAILED, "exited 1"),
    ],
    ids=["exited-0", "server-until-timeout", "server-denied", "not-enforcing", "exit-1"],
)
def test_verdict(result: seccomp_pb2.SeccompVerification, readiness: Readiness, said: str) -> None:
    got, summary = verdict(["/app/server", "--port", "80"], result)
    assert got is readiness and said in summary


def test_the_verification_deadline_covers_two_runs() -> None:
    settings = Settings.from_env(ADDRESSES)
    assert (settings.verify_run_seconds, settings.verify_timeout) == (5.0, 120.0)
    with pytest.raises(ConfigError, match="PARALLAX_VERIFY_TIMEOUT"):
        Settings.from_env(
            {**ADDRESSES, "PARALLAX_VERIFY_RUN_SECONDS": "60", "PARALLAX_VERIFY_TIMEOUT": "100"}
        )
