"""OTLP log records for alerts: each new alert becomes one log record (body: its message;
attributes: rule, severity, MITRE technique, Kubernetes identity, process and evidence), exported
over OTLP/gRPC in batches from a background thread when OTEL_EXPORTER_OTLP_LOGS_ENDPOINT or
OTEL_EXPORTER_OTLP_ENDPOINT names a collector. A listener of the engine, like the JSON lines and
the webhook; repeats of an alert are aggregated, not re-sent."""

from __future__ import annotations

from collections.abc import Mapping

from opentelemetry._logs import SeverityNumber
from opentelemetry.sdk._logs import LoggerProvider
from opentelemetry.sdk._logs.export import BatchLogRecordProcessor
from opentelemetry.sdk.resources import Resource
from opentelemetry.util.types import AttributeValue

from servicekit.telemetry import otlp_endpoint
from services.runtime.alerts import Alert
from services.runtime.domain import Severity
from services.runtime.engine import Change

EVENT_NAME = "parallax.runtime.alert"
_SEVERITIES = {
    Severity.LOW: SeverityNumber.INFO,
    Severity.MEDIUM: SeverityNumber.WARN,
    Severity.HIGH: SeverityNumber.ERROR,
    Severity.CRITICAL: SeverityNumber.FATAL,
}


def logger_provider(env: Mapping[str, str]) -> LoggerProvider | None:
    """Return a provider exporting over OTLP/gRPC, or None when no endpoint is configured or
    OTEL_LOGS_EXPORTER is not `otlp`."""
    found = otlp_endpoint(env, "logs")
    if found is None:
        return None
    from opentelemetry.exporter.otlp.proto.grpc._log_exporter import OTLPLogExporter

    endpoint, insecure = found
    name = env.get("OTEL_SERVICE_NAME") or "parallax-runtime"
    provider = LoggerProvider(resource=Resource.create({"service.name": name}))
    exporter = OTLPLogExporter(endpoint=endpoint, insecure=insecure)
    provider.add_log_record_processor(BatchLogRecordProcessor(exporter))
    return provider


def attributes(alert: Alert) -> dict[str, AttributeValue]:
    """Return the log record attributes of `alert` (OpenTelemetry k8s.* names where they
    exist, parallax.alert.* otherwise)."""
    origin = alert.origin
    found: dict[str, AttributeValue] = {
        "parallax.alert.name": alert.name,
        "parallax.alert.rule_id": alert.rule_id,
        "parallax.alert.title": alert.title,
        "parallax.alert.severity": alert.severity.name,
        "parallax.alert.count": alert.count,
        "parallax.alert.state": alert.state.name,
        "threat.technique.id": alert.technique,
        "k8s.namespace.name": origin.workload.namespace,
        f"k8s.{origin.workload.kind.lower()}.name": origin.workload.name,
        "k8s.pod.name": origin.pod,
        "k8s.pod.uid": origin.pod_uid,
        "k8s.container.name": origin.container,
        "container.id": origin.container_id,
        "container.image.name": origin.image,
        "k8s.node.name": origin.node,
        "parallax.alert.process_tree": [p.path for p in alert.tree],
    }
    if origin.image_digest:
        found["container.image.repo_digests"] = [origin.image_digest]
    for key, value in alert.evidence.items():
        found[f"parallax.alert.evidence.{key}"] = value
    return found


class OtlpAlerts:
    """Emit each new alert as a log record through `provider`."""

    def __init__(self, provider: LoggerProvider) -> None:
        self.provider = provider
        self.logger = provider.get_logger("parallax.runtime.alerts")

    def __call__(self, changes: list[tuple[Alert, Change]]) -> None:
        for alert, change in changes:
            if change == "added":
                self.logger.emit(
                    timestamp=int(alert.first_seen * 1e9),
                    severity_number=_SEVERITIES[alert.severity],
                    severity_text=alert.severity.name,
                    body=alert.message,
                    attributes=attributes(alert),
                    event_name=EVENT_NAME,
                )
