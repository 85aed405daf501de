"""Alerts as OTLP log records, exported over OTLP/gRPC to a real collector LogsService receiver
on 127.0.0.1:0; no exporter without an endpoint."""

from __future__ import annotations

from services.runtime import domain
from services.runtime.alerts import AlertBook
from services.runtime.otlp import EVENT_NAME, OtlpAlerts, logger_provider
from services.runtime.rules import BY_ID, Detection
from tests.collector import Collector
from tests.runtime import builders as b


def test_new_alerts_are_exported_as_log_records() -> None:
    with Collector() as collector:
        provider = logger_provider({"OTEL_EXPORTER_OTLP_LOGS_ENDPOINT": collector.endpoint})
        assert provider is not None
        book = AlertBook()
        event = b.event(b.flow("169.254.169.254", 80), at=b.T0 + 1)
        detection = Detection(BY_ID["R0005"], "169.254.169.254", "metadata contacted", {"x": "y"})
        try:
            book.record(detection, event, ())
            added = [(a, "added" if new else "updated") for a, new in book.flush(b.T0 + 2)]
            book.record(detection, event, ())
            repeat = [(a, "updated") for a, _ in book.flush(b.T0 + 3)]
            OtlpAlerts(provider)([*added, *repeat])  # type: ignore[list-item]
            assert provider.force_flush(5000)
            assert collector.received.wait(10)
        finally:
            provider.shutdown()
    resource_logs = [rl for r in collector.logs for rl in r.resource_logs]
    services = {
        a.value.string_value
        for rl in resource_logs
        for a in rl.resource.attributes
        if a.key == "service.name"
    }
    assert services == {"parallax-runtime"}
    (record,) = [lr for rl in resource_logs for sl in rl.scope_logs for lr in sl.log_records]
    values = {a.key: a.value for a in record.attributes}
    assert record.body.string_value == "metadata contacted"
    assert record.severity_text == "HIGH" and record.event_name == EVENT_NAME
    assert record.time_unix_nano == int((b.T0 + 1) * 1e9)
    assert values["parallax.alert.rule_id"].string_value == "R0005"
    assert values["k8s.deployment.name"].string_value == "cart"
    assert values["k8s.pod.name"].string_value == "cart-1"
    assert values["parallax.alert.evidence.x"].string_value == "y"
    assert domain.Severity.HIGH.name == record.severity_text


def test_no_exporter_without_an_endpoint() -> None:
    assert logger_provider({}) is None
    assert (
        logger_provider(
            {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://x:4317", "OTEL_LOGS_EXPORTER": "none"}
        )
        is None
    )
