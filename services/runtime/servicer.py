"""The RuntimeService servicer. Ingest, profiles, learning and alerts are built in the runtime
issue; until then each RPC answers UNIMPLEMENTED and says what is missing."""

from __future__ import annotations

from parallax.runtime.v1 import runtime_service_pb2_grpc as pb_grpc

from servicekit.pending import with_pending

_PROFILES = "behaviour profiles and their learning lifecycle are not built yet"
_ALERTS = "detection rules and alert storage are not built yet"

RuntimeServicer = with_pending(
    pb_grpc.RuntimeServiceServicer,
    "RuntimeService",
    {
        "ReportEvents": "event ingest from agents is not built yet",
        "ListWorkloads": _PROFILES,
        "SetLearning": _PROFILES,
        "ListLearningTargets": _PROFILES,
        "GetProfile": _PROFILES,
        "ListProfiles": _PROFILES,
        "ListAlerts": _ALERTS,
        "GetAlert": _ALERTS,
        "SetAlertState": _ALERTS,
        "WatchAlerts": _ALERTS,
        "ListRules": _ALERTS,
        "ListNodes": "per-node drop and attribution counters are not stored yet",
    },
)
