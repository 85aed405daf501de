"""The correlator's clients of posture, runtime and policygen: one traced channel each (mutual
TLS with the correlator's certificate, or plaintext when PARALLAX_INSECURE=true), a deadline on
every call, and paging to the end of each List. Nothing else in the correlator dials out."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import grpc
from opentelemetry.sdk.trace import TracerProvider
from parallax.policygen.v1 import policygen_service_pb2 as pg
from parallax.policygen.v1 import policygen_service_pb2_grpc as pg_grpc
from parallax.posture.v1 import finding_pb2, scan_pb2
from parallax.posture.v1 import posture_service_pb2 as po
from parallax.posture.v1 import posture_service_pb2_grpc as po_grpc
from parallax.runtime.v1 import alert_pb2, profile_pb2
from parallax.runtime.v1 import runtime_service_pb2 as rt
from parallax.runtime.v1 import runtime_service_pb2_grpc as rt_grpc
from parallax.type.v1 import workload_pb2

from servicekit.channels import connect

MAX_PAGES = 100
PAGE = 1000


class Upstreams:
    """Stubs of the three upstream services with the correlator's deadline."""

    def __init__(
        self,
        addresses: tuple[str, str, str],
        credentials: grpc.ChannelCredentials | None,
        timeout: float,
        tracer_provider: TracerProvider | None = None,
        verify_timeout: float = 120.0,
    ) -> None:
        self.timeout = timeout
        self.verify_timeout = verify_timeout
        self.channels = [
            connect(a, credentials=credentials, timeout=timeout, tracer_provider=tracer_provider)
            for a in addresses
        ]
        self.posture = po_grpc.PostureServiceStub(self.channels[0])
        self.runtime = rt_grpc.RuntimeServiceStub(self.channels[1])
        self.policygen = pg_grpc.PolicygenServiceStub(self.channels[2])

    def close(self) -> None:
        """Close the channels."""
        for channel in self.channels:
            channel.close()

    def _pages(self, call: Any, request: Any, field: str) -> Iterator[Any]:
        for _ in range(MAX_PAGES):
            reply = call(request, timeout=self.timeout)
            yield from getattr(reply, field)
            if not reply.next_page_token:
                return
            request.page_token = reply.next_page_token

    def findings(
        self, workload: workload_pb2.WorkloadRef | None = None
    ) -> list[finding_pb2.Finding]:
        """Unsuppressed findings of the latest completed scan of every source."""
        request = po.ListFindingsRequest(page_size=PAGE, workload=workload)
        return list(self._pages(self.posture.ListFindings, request, "findings"))

    def latest_scans(self) -> list[scan_pb2.Scan]:
        """The newest scans (first page)."""
        reply = self.posture.ListScans(po.ListScansRequest(page_size=50), timeout=self.timeout)
        return list(reply.scans)

    def profiles(
        self, workload: workload_pb2.WorkloadRef | None = None, summary: bool = False
    ) -> list[profile_pb2.Profile]:
        """Current profiles (all, or of one workload)."""
        request = rt.ListProfilesRequest(page_size=PAGE, workload=workload, summary_only=summary)
        return list(self._pages(self.runtime.ListProfiles, request, "profiles"))

    def alerts(
        self, workload: workload_pb2.WorkloadRef | None = None, min_last_seen: Any = None
    ) -> list[alert_pb2.Alert]:
        """Alerts (most recently seen first), optionally only those seen since a time."""
        request = rt.ListAlertsRequest(
            page_size=PAGE, workload=workload, min_last_seen_time=min_last_seen
        )
        return list(self._pages(self.runtime.ListAlerts, request, "alerts"))

    def watch_alerts(self, timeout: float | None) -> Any:
        """Follow runtime's alert stream (current, SYNCED, then changes); cancel() ends it."""
        return self.runtime.WatchAlerts(rt.WatchAlertsRequest(), timeout=timeout)

    def seccomp(self, profile: profile_pb2.Profile) -> pg.GenerateSeccompProfileResponse:
        """Generate a seccomp profile from an inline profile."""
        request = pg.GenerateSeccompProfileRequest(profile=profile)
        return self.policygen.GenerateSeccompProfile(request, timeout=self.timeout)

    def verify_seccomp(self, request: pg.VerifySeccompProfileRequest) -> Any:
        """Run a command under a profile."""
        return self.policygen.VerifySeccompProfile(request, timeout=self.verify_timeout)

    def netpol(self, request: pg.GenerateNetworkPolicyRequest) -> Any:
        """Generate a NetworkPolicy."""
        return self.policygen.GenerateNetworkPolicy(request, timeout=self.timeout)

    def verify_netpol(self, request: pg.VerifyNetworkPolicyRequest) -> Any:
        """Evaluate a NetworkPolicy against flows."""
        return self.policygen.VerifyNetworkPolicy(request, timeout=self.timeout)

    def hardening(self, request: pg.GenerateHardeningRequest) -> Any:
        """Generate a hardening patch."""
        return self.policygen.GenerateHardening(request, timeout=self.timeout)
