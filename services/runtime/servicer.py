"""The RuntimeService gRPC servicer: parses requests, calls the engine and the read-side queries
under the engine's lock, and renders responses. Errors are domain errors mapped by servicekit.
ReportEvents takes its batches as raw bytes and decodes them itself, so that a garbled one is
refused with INVALID_ARGUMENT like any other bad batch, not INTERNAL from grpc's deserializer."""

from __future__ import annotations

import queue
import time
from collections.abc import Iterable, Iterator, Sequence
from typing import Any, TypeVar

import grpc
from google.protobuf.message import DecodeError
from opentelemetry import trace
from parallax.runtime.v1 import runtime_service_pb2 as pb
from parallax.runtime.v1 import runtime_service_pb2_grpc as pb_grpc
from parallax.type.v1 import change_pb2

from servicekit import authz, serve
from servicekit.errors import InvalidArgument
from servicekit.memory import Settler
from servicekit.pagination import Page, page
from services.runtime import queries, render, rules, wire
from services.runtime.agentnodes import DEFAULT_AGENT_NAMESPACE, AgentNodes
from services.runtime.alerts import AlertState
from services.runtime.engine import Change, Engine
from services.runtime.payloads import bad
from services.runtime.profiles import State

SERVICE_NAME = "parallax.runtime.v1.RuntimeService"
MAX_WINDOW = 30 * 24 * 3600
_STATES = {1: State.LEARNING, 2: State.COMPLETE, 3: State.PARTIAL}
_CHANGES = {
    "added": change_pb2.CHANGE_TYPE_ADDED,
    "updated": change_pb2.CHANGE_TYPE_UPDATED,
    "removed": change_pb2.CHANGE_TYPE_REMOVED,
}
T = TypeVar("T")


def _slice(items: Sequence[T], where: Page) -> tuple[Sequence[T], str]:
    chunk = items[where.offset : where.offset + where.size]
    return chunk, where.next_token(len(chunk), where.offset + len(chunk) < len(items))


def _ref(message: Any) -> queries.RefFilter:
    return queries.RefFilter(
        message.namespace, message.kind, message.name, message.pod, message.container
    )


def _seconds(stamp: Any) -> float:
    return float(stamp.seconds) + float(stamp.nanos) * 1e-9


class RuntimeServicer(pb_grpc.RuntimeServiceServicer):
    """Serves ingest, profiles, learning targets, alerts, rules and nodes."""

    def __init__(
        self, engine: Engine, agents: AgentNodes | None = None, settler: Settler | None = None
    ) -> None:
        self.engine = engine
        self.plans = wire.Plans()
        # Batches are large units of work; what survives one leaves the collector's sight.
        self.settler = settler or Settler(time.monotonic)
        # Without a node check of its own: no Kubernetes access, pod-named agents are refused.
        self.agents = agents or AgentNodes(None, engine.clock, namespace=DEFAULT_AGENT_NAMESPACE)

    # Mounted with no request deserializer (see _handlers): the stream yields raw bytes.
    def ReportEvents(  # type: ignore[override]
        self, request_iterator: Iterable[bytes], context: Any
    ) -> Iterator[pb.ReportEventsResponse]:
        span = trace.get_current_span()  # the RPC's: one per agent stream
        for index, raw in enumerate(_messages(request_iterator)):
            request = _decode(raw, index)
            _check_node(context, request, self.agents)
            if not index:
                span.set_attributes(
                    {
                        "parallax.agent.id": request.agent_id,
                        "parallax.agent.session": request.session_id,
                        "k8s.node.name": request.node_name,
                    }
                )
            with self.settler.unit():  # the batch is freed before its survivors are frozen
                batch = wire.batch(request, self.engine.clock(), self.plans, raw)
                duplicate = self.engine.ingest(batch)
                events = batch.event_count
                del batch
            span.add_event(
                "batch",
                {
                    "parallax.batch.sequence": request.sequence,
                    "parallax.batch.events": events,
                    "parallax.batch.duplicate": duplicate,
                },
            )
            yield pb.ReportEventsResponse(
                acknowledged_sequence=request.sequence, duplicate=duplicate, records_read=True
            )

    def ListWorkloads(
        self, request: pb.ListWorkloadsRequest, context: Any
    ) -> pb.ListWorkloadsResponse:
        where = page(
            request.page_size, request.page_token, request.namespace, request.profile_state
        )
        engine = self.engine
        with engine.lock:
            found = queries.workloads(engine, request.namespace, _STATES.get(request.profile_state))
            chunk, token = _slice(found, where)
            rendered = [
                render.workload(
                    r,
                    queries.current_profiles(engine, r.workload),
                    engine.default_window,
                    queries.open_alerts(engine, r.workload),
                )
                for r in chunk
            ]
        return pb.ListWorkloadsResponse(workloads=rendered, next_page_token=token)

    def SetLearning(self, request: pb.SetLearningRequest, context: Any) -> pb.SetLearningResponse:
        ref = request.workload
        workload = queries.workload_of(ref.namespace, ref.kind, ref.name)
        window = _seconds(request.learning_window) if request.HasField("learning_window") else None
        if window is not None and not 1 <= window <= MAX_WINDOW:
            raise InvalidArgument("learning_window must be between 1 second and 30 days")
        engine = self.engine
        record = engine.set_learning(workload, ref.container, request.enabled, window)
        with engine.lock:
            current = queries.current_profiles(engine, workload)
            message = render.workload(
                record, current, engine.default_window, queries.open_alerts(engine, workload)
            )
        return pb.SetLearningResponse(workload=message)

    def ListLearningTargets(
        self, request: pb.ListLearningTargetsRequest, context: Any
    ) -> pb.ListLearningTargetsResponse:
        where = page(request.page_size, request.page_token, request.node_name)
        self.engine.tick()
        with self.engine.lock:
            chunk, token = _slice(queries.learning_targets(self.engine), where)
            rendered = [
                render.target(r, p, m, self.engine.default_window, request.node_name)
                for r, p, m in chunk
            ]
        return pb.ListLearningTargetsResponse(learning_targets=rendered, next_page_token=token)

    def GetProfile(self, request: pb.GetProfileRequest, context: Any) -> pb.GetProfileResponse:
        ref = request.workload
        workload = queries.workload_of(ref.namespace, ref.kind, ref.name)
        self.engine.tick()
        with self.engine.lock:
            found = queries.profile(self.engine, workload, ref.container, request.image_digest)
            return pb.GetProfileResponse(profile=render.profile(found, self.engine.clock()))

    def ListProfiles(
        self, request: pb.ListProfilesRequest, context: Any
    ) -> pb.ListProfilesResponse:
        where = _ref(request.workload)
        since = _seconds(request.min_update_time)
        state = _STATES.get(request.state)
        paging = page(
            request.page_size,
            request.page_token,
            where,
            state,
            request.include_superseded,
            since,
            request.summary_only,
        )
        self.engine.tick()
        with self.engine.lock:
            found = queries.profiles(self.engine, where, state, request.include_superseded, since)
            chunk, token = _slice(found, paging)
            now = self.engine.clock()
            rendered = [render.profile(p, now, request.summary_only) for p in chunk]
        return pb.ListProfilesResponse(profiles=rendered, next_page_token=token)

    def ListAlerts(self, request: pb.ListAlertsRequest, context: Any) -> pb.ListAlertsResponse:
        where = queries.AlertFilter(
            _ref(request.workload),
            AlertState(request.state) if request.state else None,
            int(request.minimum_severity),
            tuple(request.rule_ids),
            _seconds(request.min_last_seen_time),
        )
        paging = page(request.page_size, request.page_token, where)
        with self.engine.lock:
            found = queries.alerts(self.engine, where)
        chunk, token = _slice(found, paging)
        return pb.ListAlertsResponse(alerts=[render.alert(a) for a in chunk], next_page_token=token)

    def GetAlert(self, request: pb.GetAlertRequest, context: Any) -> pb.GetAlertResponse:
        with self.engine.lock:
            found = self.engine.alerts.get(_alert_id(request.name))
        return pb.GetAlertResponse(alert=render.alert(found))

    def SetAlertState(
        self, request: pb.SetAlertStateRequest, context: Any
    ) -> pb.SetAlertStateResponse:
        if request.state not in (int(AlertState.ACKNOWLEDGED), int(AlertState.RESOLVED)):
            raise InvalidArgument("state must be ALERT_STATE_ACKNOWLEDGED or ALERT_STATE_RESOLVED")
        changed = self.engine.set_alert_state(
            _alert_id(request.name), AlertState(request.state), request.reason
        )
        return pb.SetAlertStateResponse(alert=render.alert(changed))

    def WatchAlerts(
        self, request: pb.WatchAlertsRequest, context: grpc.ServicerContext
    ) -> Iterator[pb.WatchAlertsResponse]:
        where = queries.AlertFilter(_ref(request.workload), None, int(request.minimum_severity))
        changes: queue.Queue[list[tuple[Any, Change]] | None] = queue.Queue()
        context.add_callback(lambda: changes.put(None))
        with self.engine.lock:
            unsubscribe = self.engine.subscribe(changes.put)
            current = [a for a in self.engine.alerts.live.values() if where.matches(a)]
        try:
            for alert in sorted(current, key=lambda a: a.first_seen):
                yield pb.WatchAlertsResponse(
                    change_type=change_pb2.CHANGE_TYPE_CURRENT, alert=render.alert(alert)
                )
            yield pb.WatchAlertsResponse(change_type=change_pb2.CHANGE_TYPE_SYNCED)
            while (batch := changes.get()) is not None:
                for alert, change in batch:
                    if where.matches(alert):
                        yield pb.WatchAlertsResponse(
                            change_type=_CHANGES[change], alert=render.alert(alert)
                        )
        finally:
            unsubscribe()

    def ListRules(self, request: pb.ListRulesRequest, context: Any) -> pb.ListRulesResponse:
        chunk, token = _slice(rules.RULES, page(request.page_size, request.page_token))
        return pb.ListRulesResponse(rules=[render.rule(r) for r in chunk], next_page_token=token)

    def ListNodes(self, request: pb.ListNodesRequest, context: Any) -> pb.ListNodesResponse:
        where = page(request.page_size, request.page_token, request.state)
        with self.engine.lock:
            now = self.engine.clock()
            found = [render.node(n, now) for _, n in sorted(self.engine.nodes.items())]
        found = [n for n in found if not request.state or n.state == request.state]
        chunk, token = _slice(found, where)
        return pb.ListNodesResponse(nodes=chunk, next_page_token=token)


def registration(servicer: RuntimeServicer) -> serve.Registration:
    """Mount `servicer` as parallax.runtime.v1.RuntimeService: agents report events and poll
    their learning targets; everything else follows the default roles."""
    handlers = _handlers(servicer)

    def add(server: grpc.Server) -> None:
        server.add_generic_rpc_handlers(
            [grpc.method_handlers_generic_handler(SERVICE_NAME, handlers)]
        )
        server.add_registered_method_handlers(SERVICE_NAME, handlers)  # type: ignore[attr-defined]

    return serve.Registration(
        SERVICE_NAME,
        add,
        roles={
            "ReportEvents": [authz.AGENT],
            "ListLearningTargets": [authz.AGENT, authz.READER, authz.OPERATOR, authz.CORRELATOR],
        },
    )


class _Handlers:
    """Stands in for a server to the generated `add_*_to_server`, keeping its method handlers."""

    def __init__(self) -> None:
        self.handlers: dict[str, grpc.RpcMethodHandler[Any, Any]] = {}

    def add_generic_rpc_handlers(self, generic: Iterable[grpc.GenericRpcHandler[Any, Any]]) -> None:
        """Ignore the generic handler: it serves the same table as the registered one."""

    def add_registered_method_handlers(
        self, service: str, handlers: dict[str, grpc.RpcMethodHandler[Any, Any]]
    ) -> None:
        """Keep `handlers`, keyed by method name."""
        self.handlers.update(handlers)


def _handlers(servicer: RuntimeServicer) -> dict[str, grpc.RpcMethodHandler[Any, Any]]:
    """Return the generated method handlers of `servicer`, but with ReportEvents given the
    request bytes as they came (no deserializer): grpc's own would answer INTERNAL for a
    message that does not decode, before any handler or interceptor could name the batch."""
    kept = _Handlers()
    pb_grpc.add_RuntimeServiceServicer_to_server(servicer, kept)  # type: ignore[arg-type]
    handlers = kept.handlers
    methods = pb.DESCRIPTOR.services_by_name["RuntimeService"].methods_by_name
    if set(handlers) != set(methods):  # generated code that no longer registers by method name
        raise RuntimeError(f"generated RuntimeService handlers {sorted(handlers)} are incomplete")
    handlers["ReportEvents"] = grpc.stream_stream_rpc_method_handler(
        servicer.ReportEvents, response_serializer=pb.ReportEventsResponse.SerializeToString
    )
    return handlers


def _messages(request_iterator: Iterable[bytes]) -> Iterator[bytes]:
    """Yield the stream's messages, ending quietly when the call ended under the handler: the
    client cancelled, or grpc refused a message past the transport limit (the client has its
    RESOURCE_EXHAUSTED already). Not an unexpected error to log with a traceback."""
    try:
        yield from request_iterator
    except grpc.RpcError:
        return


def _decode(raw: bytes, index: int) -> pb.ReportEventsRequest:
    """Decode the `index`th message (counting from 0) of a ReportEvents stream."""
    try:
        return pb.ReportEventsRequest.FromString(raw)
    except DecodeError as error:
        where = f"batch {index} of this stream (counting from 0)"
        raise bad(where, f"{len(raw)} bytes that are no ReportEventsRequest ({error})") from None


def _check_node(context: Any, request: pb.ReportEventsRequest, agents: AgentNodes) -> None:
    agents.check(authz.identity(context), request.node_name)


def _alert_id(name: str) -> str:
    prefix, _, alert_id = name.partition("/")
    if prefix != "alerts" or not alert_id or "/" in alert_id:
        raise InvalidArgument(f"alert name must look like alerts/{{id}}, got {name!r}")
    return alert_id
