"""The feedback loop against fakes of posture, runtime and policygen served at the gRPC contract
on 127.0.0.1:0: while the policy pass is stuck in a slow seccomp verification, an alert that
runtime's WatchAlerts announces becomes an incident at once, and the verification asks for the
short run time."""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator
from concurrent import futures
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf.timestamp_pb2 import Timestamp
from parallax.policygen.v1 import hardening_pb2, seccomp_pb2
from parallax.policygen.v1 import policygen_service_pb2 as pg
from parallax.policygen.v1 import policygen_service_pb2_grpc as pg_grpc
from parallax.posture.v1 import posture_service_pb2 as po
from parallax.posture.v1 import posture_service_pb2_grpc as po_grpc
from parallax.runtime.v1 import alert_pb2, profile_pb2
from parallax.runtime.v1 import runtime_service_pb2 as rt
from parallax.runtime.v1 import runtime_service_pb2_grpc as rt_grpc
from parallax.type.v1 import change_pb2, workload_pb2

from servicekit import storage
from services.correlator.correlate import Correlator
from services.correlator.feed import Feed
from services.correlator.loop import FeedbackLoop
from services.correlator.manifests import Manifests
from services.correlator.policies import Policies
from services.correlator.store import CorrelatorStore
from services.correlator.upstream import Upstreams
from tests.processes import eventually

CART = workload_pb2.WorkloadRef(namespace="shop", kind="Deployment", name="cart", container="cart")
UNVERIFIED = 2


def profile() -> profile_pb2.Profile:
    started = Timestamp(seconds=1_790_000_000)
    server = profile_pb2.ProfileExecutable(
        path="/app/server", argv=["/app/server"], first_seen_time=started
    )
    return profile_pb2.Profile(
        name="workloads/shop/Deployment/cart/containers/cart/profiles/sha256:aa",
        workload=CART,
        image="shop/cart:1",
        image_digest="sha256:aa",
        current=True,
        state=profile_pb2.PROFILE_STATE_COMPLETE,
        executables=[server],
    )


def shell() -> alert_pb2.Alert:
    return alert_pb2.Alert(
        name="alerts/a1",
        rule_id="R0002",
        rule_title="Shell spawned in a container",
        severity=3,  # type: ignore[arg-type]
        mitre_technique_id="T1059.004",
        message="/bin/sh spawned in shop/cart",
        workload=CART,
        state=alert_pb2.ALERT_STATE_OPEN,
        last_seen_time=Timestamp(seconds=1_790_000_100),
    )


@dataclass
class Upstream(
    po_grpc.PostureServiceServicer, rt_grpc.RuntimeServiceServicer, pg_grpc.PolicygenServiceServicer
):
    """Posture with no findings, runtime with one COMPLETE profile and the alerts put in
    `changes` (the watch ends at `closing`), and policygen whose seccomp verification waits for
    `release`."""

    alerts: list[alert_pb2.Alert] = field(default_factory=list)
    changes: queue.Queue[rt.WatchAlertsResponse] = field(default_factory=queue.Queue)
    verifying: threading.Event = field(default_factory=threading.Event)
    release: threading.Event = field(default_factory=threading.Event)
    closing: threading.Event = field(default_factory=threading.Event)
    verifications: list[pg.VerifySeccompProfileRequest] = field(default_factory=list)

    def alert(self, message: alert_pb2.Alert) -> None:
        self.alerts.append(message)
        self.changes.put(
            rt.WatchAlertsResponse(change_type=change_pb2.CHANGE_TYPE_ADDED, alert=message)
        )

    def ListFindings(self, request: Any, context: Any) -> po.ListFindingsResponse:
        return po.ListFindingsResponse()

    def ListScans(self, request: Any, context: Any) -> po.ListScansResponse:
        return po.ListScansResponse()

    def ListProfiles(self, request: Any, context: Any) -> rt.ListProfilesResponse:
        return rt.ListProfilesResponse(profiles=[profile()])

    def ListAlerts(self, request: Any, context: Any) -> rt.ListAlertsResponse:
        return rt.ListAlertsResponse(alerts=list(self.alerts))

    def WatchAlerts(self, request: Any, context: Any) -> Iterator[rt.WatchAlertsResponse]:
        yield rt.WatchAlertsResponse(change_type=change_pb2.CHANGE_TYPE_SYNCED)
        while context.is_active() and not self.closing.is_set():
            try:
                yield self.changes.get(timeout=0.05)
            except queue.Empty:
                continue

    def GenerateSeccompProfile(self, request: Any, context: Any) -> Any:
        made = seccomp_pb2.SeccompProfile(
            workload=CART,
            oci_json='{"defaultAction": "SCMP_ACT_ERRNO"}',
            syscall_names=["read"],
            readiness_state=UNVERIFIED,  # type: ignore[arg-type]
        )
        return pg.GenerateSeccompProfileResponse(seccomp_profile=made)

    def VerifySeccompProfile(self, request: Any, context: Any) -> Any:
        self.verifications.append(request)
        self.verifying.set()
        self.release.wait(30)
        proof = seccomp_pb2.SeccompVerification(passed=True, exit_status=0)
        return pg.VerifySeccompProfileResponse(verification=proof)

    def GenerateHardening(self, request: Any, context: Any) -> Any:
        patch = hardening_pb2.HardeningPatch(workload=CART, readiness_state=UNVERIFIED)  # type: ignore[arg-type]
        return pg.GenerateHardeningResponse(hardening_patch=patch)


@pytest.fixture
def upstream() -> Iterator[tuple[Upstream, str]]:
    fake = Upstream()  # type: ignore[abstract]  # only the RPCs the loop calls
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=8))
    po_grpc.add_PostureServiceServicer_to_server(fake, server)
    rt_grpc.add_RuntimeServiceServicer_to_server(fake, server)
    pg_grpc.add_PolicygenServiceServicer_to_server(fake, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    yield fake, f"127.0.0.1:{port}"
    fake.release.set()
    fake.closing.set()
    server.stop(0)


@pytest.fixture
def loop(upstream: tuple[Upstream, str], tmp_path: Path) -> Iterator[FeedbackLoop]:
    address = upstream[1]
    upstreams = Upstreams((address, address, address), None, timeout=5, verify_timeout=60)
    store = CorrelatorStore(storage.engine(f"sqlite:///{tmp_path / 'correlator.db'}"))
    correlator = Correlator(upstreams, store, Manifests(None))
    policies = Policies(upstreams, lambda: 1_790_000_200.0, run_seconds=2.0)
    running = FeedbackLoop(
        correlator, policies, Feed(correlator, lambda: 1_790_000_200.0), lambda: 0.0, 60.0
    )
    running.start()
    yield running
    upstream[0].release.set()
    upstream[0].closing.set()
    running.stop()
    assert not any(thread.is_alive() for thread in running.threads)
    upstreams.close()
    store.engine.dispose()


def test_an_alert_becomes_an_incident_while_a_verification_is_slow(
    upstream: tuple[Upstream, str], loop: FeedbackLoop
) -> None:
    fake = upstream[0]
    assert fake.verifying.wait(10), "the policy pass never reached the seccomp verification"
    assert loop.store.incidents() == []
    fake.alert(shell())
    (found,) = eventually(lambda: loop.store.incidents() or None, timeout=5)
    assert found.id == "a1" and found.workload.name == "cart"
    assert not fake.release.is_set(), "the incident waited for the verification"
    (asked,) = fake.verifications
    assert list(asked.argv) == ["/app/server"]
    assert asked.timeout.ToTimedelta().total_seconds() == 2.0
