"""The CorrelatorService servicer. Runtime verdicts on findings, risk ranking, incidents,
in-use vulnerabilities and the feedback loop are built in the correlator issue; until then
each RPC answers UNIMPLEMENTED and says what is missing."""

from __future__ import annotations

from parallax.correlator.v1 import correlator_service_pb2_grpc as pb_grpc

from servicekit.pending import with_pending

_LOOP = "the posture/runtime join is not built yet"
_VULNS = "vulnerability report import and in-use verdicts are not built yet"

CorrelatorServicer = with_pending(
    pb_grpc.CorrelatorServiceServicer,
    "CorrelatorService",
    {
        "ListRisks": _LOOP,
        "GetWorkloadContext": _LOOP,
        "ListIncidents": "contextual incidents are not built yet",
        "WatchIncidents": "contextual incidents are not built yet",
        "ImportVulnerabilityReport": _VULNS,
        "ListVulnerabilities": _VULNS,
        "ExportVex": _VULNS,
        "ListRecommendations": "the policy feedback loop is not built yet",
    },
)
