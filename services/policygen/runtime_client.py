"""Fetches runtime profiles from the runtime service (RuntimeService.GetProfile and
ListProfiles) for RPCs that name a workload instead of sending profiles inline; maps its status
codes to policygen's domain errors."""

from __future__ import annotations

import grpc
from parallax.runtime.v1 import profile_pb2
from parallax.runtime.v1 import runtime_service_pb2 as runtime_pb
from parallax.runtime.v1 import runtime_service_pb2_grpc as runtime_grpc
from parallax.type.v1 import workload_pb2

from servicekit.channels import connect
from servicekit.errors import FailedPrecondition, Unavailable
from servicekit.tls import TlsMaterial

TIMEOUT = 10.0
MAX_PAGES = 20


class RuntimeProfiles:
    """A client of the runtime service at `address`."""

    def __init__(self, address: str, tls: TlsMaterial | None) -> None:
        self.address = address
        # Over mTLS the policygen certificate's `reader` role lets it read profiles.
        self.credentials = tls.channel_credentials() if tls is not None else None

    def get(self, workload: workload_pb2.WorkloadRef, digest: str) -> profile_pb2.Profile:
        """Return the profile of one container; FailedPrecondition when there is none."""
        request = runtime_pb.GetProfileRequest(workload=workload, image_digest=digest)
        with connect(self.address, timeout=TIMEOUT, credentials=self.credentials) as channel:
            stub = runtime_grpc.RuntimeServiceStub(channel)
            try:
                return stub.GetProfile(request, timeout=TIMEOUT).profile
            except grpc.RpcError as exc:
                raise _domain(exc, workload) from None

    def list(self, workload: workload_pb2.WorkloadRef) -> list[profile_pb2.Profile]:
        """Return the current profiles of every container of a workload."""
        found: list[profile_pb2.Profile] = []
        token = ""
        with connect(self.address, timeout=TIMEOUT, credentials=self.credentials) as channel:
            stub = runtime_grpc.RuntimeServiceStub(channel)
            for _ in range(MAX_PAGES):
                request = runtime_pb.ListProfilesRequest(
                    workload=workload, page_size=1000, page_token=token
                )
                try:
                    page = stub.ListProfiles(request, timeout=TIMEOUT)
                except grpc.RpcError as exc:
                    raise _domain(exc, workload) from None
                found += list(page.profiles)
                token = page.next_page_token
                if not token:
                    break
        if not found:
            raise FailedPrecondition(f"no runtime profile for {_name(workload)} yet")
        return found


def _domain(exc: grpc.RpcError, workload: workload_pb2.WorkloadRef) -> Exception:
    code = exc.code() if isinstance(exc, grpc.Call) else None
    if code == grpc.StatusCode.NOT_FOUND:
        return FailedPrecondition(f"no runtime profile for {_name(workload)} yet")
    return Unavailable(f"runtime service unavailable: {code.name if code else exc}")


def _name(workload: workload_pb2.WorkloadRef) -> str:
    parts = (workload.namespace, workload.kind, workload.name, workload.container)
    return "/".join(p for p in parts if p)
