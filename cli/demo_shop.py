"""The demo's runtime half on the sample shop: local pods (cli/demo_cluster.py) attributed to
their Deployments, traffic, learning windows until the profiles are COMPLETE, policies through
policygen (cli/demo_policies.py), a re-run of the app under its seccomp profiles, the scripted
attack on the frontend, and the alerts and incident it raises. Called by cli/demo.py."""

from __future__ import annotations

import functools
import json
import os
import re
import sys
import threading
import time
import urllib.parse
from collections.abc import Callable
from pathlib import Path

import grpc
from google.protobuf.duration_pb2 import Duration
from parallax.correlator.v1 import correlator_service_pb2 as co
from parallax.runtime.v1 import profile_pb2
from parallax.runtime.v1 import runtime_service_pb2 as rt
from parallax.type.v1 import source_pb2, workload_pb2

from cli import demo_policies
from cli import report_model as m
from cli.demo_cluster import Node, PodSpec, gateway
from cli.demo_enter import TOKEN_DIR
from cli.demo_run import SHOP, Run, manifests

APP = SHOP / "app"
PYTHON = "/usr/bin/python3"
NAMES = ("kv", "api", "frontend")
PORTS = {"kv": 6379, "api": 8080, "frontend": 8080}
LABELS = {"kv": "data", "api": "backend", "frontend": "web"}
IMAGES = {"kv": "kv:0.9.0", "api": "api:2.0.1", "frontend": "frontend:1.4.2"}
ATTACK = (
    f"cat {TOKEN_DIR}/token; echo; "
    "python3 -c 'import socket; s = socket.socket(); s.settimeout(2); "
    'print(s.connect_ex(("169.254.169.254", 80)))\''
)
EXPECTED_RULES = ("R0002", "R0003", "R0005")
# The correlator refreshes incidents after its feedback loop's policy work, which verifies
# seccomp profiles by running each entrypoint (a server here) until policygen's 30 s timeout.
INCIDENT_SECONDS = 240.0
SLOW_LOOP = (
    "the correlator's feedback loop had not refreshed incidents: it first verifies each "
    "recommendation by running the workload's entrypoint, a server that runs until policygen's "
    "30 s timeout, twice per container"
)
FETCH = (
    "import sys, urllib.request; "
    "print(urllib.request.urlopen(sys.argv[1], timeout=10).read().decode())"
)


def ref(name: str, container: str = "") -> workload_pb2.WorkloadRef:
    """The WorkloadRef of one shop Deployment."""
    return workload_pb2.WorkloadRef(
        namespace="shop", kind="Deployment", name=name, container=container
    )


def listening(log: Path) -> bool:
    """True once a shop service's log says it listens."""
    return b"listening" in log.read_bytes()


def poll(until: Callable[[], bool], seconds: float, what: str) -> None:
    """Re-check `until` every 0.5 s until it holds; TimeoutError naming `what` after `seconds`."""
    waiter, deadline = threading.Event(), time.monotonic() + seconds
    while not until():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} did not happen within {seconds:.0f}s")
        waiter.wait(0.5)


class Shop:
    """The sample shop on the demo's node, and what the platform makes of it."""

    def __init__(self, run: Run) -> None:
        self.run = run
        self.node = Node(f"pxnode-{os.getpid()}", run.registry)
        self.addresses: dict[str, str] = {}
        self.report_policies: list[m.Policy] = []
        self.flows: list[m.Flow] = []
        self.pending: dict[str, str] = {}
        self.logs = run.data / "logs" / "shop"

    def everything(self) -> m.Report:
        """The whole loop; the node and every process are gone when it returns."""
        self.logs.mkdir(parents=True, exist_ok=True)
        with self.run.services(), self.run.node_agent():
            self.run.scan()
            self.run.wait_agent()
            try:
                self.node.create()
                self._learn()
                self._policies()
                self._rerun_under_seccomp()
                self._attack()
                found = self.run.collect()
            finally:
                self.node.close()
        found.policies, found.flows = self.report_policies, self.flows
        ours = tuple(f"shop/Deployment/{n}" for n in NAMES)  # other local pods may share "shop"
        found.risks = [r for r in found.risks if r.workload in ours]
        found.profiles = [p for p in found.profiles if p.workload in ours]
        found.alerts = [a for a in found.alerts if a.workload.startswith(ours)]
        found.incidents = [i for i in found.incidents if i.workload.startswith(ours)]
        if not found.incidents:
            found.pending.update(self.pending)
        return found

    def _spec(self, name: str) -> PodSpec:
        env = {"PORT": str(PORTS[name])}
        if name == "kv":
            env["DATA_DIR"] = "/var/lib/kv"
        if name == "api":
            env["KV_ADDR"] = f"{self.addresses['kv']}:6379"
        if name == "frontend":
            env.update(API_URL=f"http://{self.addresses['api']}:8080", DEBUG="1")
        hostpath = self.run.data / "shop" / "node-var-lib-shop-kv"
        hostpath.mkdir(parents=True, exist_ok=True)
        return PodSpec(
            name=name,
            image=f"registry.example.com/shop/{IMAGES[name]}",
            labels={"app": name, "tier": LABELS[name]},
            argv=[PYTHON, str(APP / f"{name}.py")],
            env=env,
            token=name == "frontend",
            host_paths={"/var/lib/kv": hostpath} if name == "kv" else {},
        )

    def _learn(self) -> None:
        window = Duration(seconds=int(self.run.window), nanos=int(self.run.window % 1 * 1e9))
        for name in NAMES:
            request = rt.SetLearningRequest(
                workload=ref(name), enabled=True, learning_window=window
            )
            self.run.runtime.SetLearning(request, timeout=30)
        self.run.wait_learning()
        for name in NAMES:  # upstreams first: each pod is told its upstream's address
            log = (self.logs / f"{name}.log").open("ab")
            pod = self.node.start_pod("shop", self._spec(name), log)
            log.close()
            self.addresses[name] = pod.address
            poll(functools.partial(listening, self.logs / f"{name}.log"), 30, f"{name} start")
        self.run.say(
            "started kv, api and frontend as local pods, each in its own cgroup, network "
            "namespace and mount view: " + ", ".join(f"{n} {a}" for n, a in self.addresses.items())
        )
        self._load(f"http://{self.addresses['frontend']}:8080", 8, "")
        poll(self._complete, self.run.window + 90, "COMPLETE profiles for kv, api and frontend")
        self.run.say(f"profiles COMPLETE after {self.run.window:g}s without new behaviour")

    def _load(self, url: str, rounds: int, netns: str) -> dict[str, object]:
        argv = [PYTHON, str(APP / "loadgen.py"), str(rounds)]
        done = self.node.run(argv, {"FRONTEND_URL": url}, 60, netns)
        if done.returncode != 0 and not done.stdout:
            # Died before it ran (seen in CI: a child forked from this
            # grpc-using process died between fork and exec); the load itself never started.
            done = self.node.run(argv, {"FRONTEND_URL": url}, 60, netns)
        outcome: dict[str, object] = json.loads(done.stdout or b"{}")
        if done.returncode != 0:
            detail = outcome or done.stderr.decode()[-500:]
            raise RuntimeError(f"shop traffic failed (exit {done.returncode}): {detail}")
        where = "under seccomp" if netns else "through the frontend"
        self.run.say(f"drove {outcome['requests']} shopping requests {where}: {outcome['ok']} ok")
        return outcome

    def _complete(self) -> bool:
        states = []
        for name in NAMES:
            request = rt.ListProfilesRequest(workload=ref(name, name), page_size=10)
            profiles = self.run.runtime.ListProfiles(request, timeout=30).profiles
            for p in profiles:
                if p.state == profile_pb2.PROFILE_STATE_PARTIAL:
                    raise RuntimeError(f"the {name} profile is {p.state_reason}")
            states += [p.state for p in profiles] or [profile_pb2.PROFILE_STATE_UNSPECIFIED]
        return all(s == profile_pb2.PROFILE_STATE_COMPLETE for s in states)

    def _objects(self) -> list[source_pb2.Manifest]:
        pods = [
            {
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {
                    "name": f"{name}-{os.getpid()}",
                    "namespace": "shop",
                    "labels": {"app": name, "tier": LABELS[name]},
                },
                "spec": {"containers": [{"name": name}]},
                "status": {"podIP": address},
            }
            for name, address in self.addresses.items()
        ]
        content = "\n---\n".join(json.dumps(p) for p in pods).encode()
        return [*manifests(), source_pb2.Manifest(uri="running-pods.yaml", content=content)]

    def _policies(self) -> None:
        objects = self._objects()
        gateways = {gateway(a): "outside (load balancer)" for a in self.addresses.values()}
        gateways.update({a: n for n, a in self.addresses.items()})
        scratch = self.run.data / "shop" / "check"
        scratch.mkdir(parents=True, exist_ok=True)
        for name in NAMES:
            check = (
                [PYTHON, str(APP / f"{name}.py"), "--check"],
                {"PORT": "0", "DATA_DIR": str(scratch)},
            )
            made = demo_policies.for_workload(
                self.run.policygen, ref(name), objects, check, gateways
            )
            self.report_policies += made.policies
            self.flows += [f for f in made.flows if f not in self.flows]
            (self.run.data / "shop" / f"{name}.seccomp.json").write_text(made.seccomp_json)
        verified = sum(1 for p in self.report_policies if p.verified)
        self.run.say(
            f"generated {len(self.report_policies)} policies (seccomp, NetworkPolicy, hardening "
            f"for each service); {verified} verified under real enforcement or evaluation"
        )

    def _rerun_under_seccomp(self) -> None:
        netns = self.node.bare_namespace(f"pxverify-{os.getpid()}")
        scratch = self.run.data / "shop" / "rerun"
        scratch.mkdir(parents=True, exist_ok=True)
        env = {
            "kv": {"PORT": "6379", "DATA_DIR": str(scratch)},
            "api": {"PORT": "8081", "KV_ADDR": "127.0.0.1:6379"},
            "frontend": {"PORT": "8080", "API_URL": "http://127.0.0.1:8081"},
        }
        started = []
        for name in NAMES:
            profile = self.run.data / "shop" / f"{name}.seccomp.json"
            argv = [sys.executable, "-m", "services.policygen.jail", str(profile), "--",
                    PYTHON, str(APP / f"{name}.py")]  # fmt: skip
            path = self.logs / f"{name}-seccomp.log"
            with path.open("ab") as log:
                started.append(self.node.start_in(netns, argv, env[name], log))
            # Generous: under a loaded 2-core machine a jailed interpreter starts slowly.
            poll(functools.partial(listening, path), 90, f"{name} start under seccomp")
        outcome = self._load("http://127.0.0.1:8080", 3, netns)
        alive = all(p.poll() is None for p in started)
        for p in started:
            p.terminate()
            p.wait(timeout=10)
        line = f"re-run under its generated profile served {outcome['ok']}/{outcome['requests']}"
        for policy in self.report_policies:
            if policy.kind == "seccomp":
                policy.details.insert(0, line + ("" if alive else "; a service died"))
                policy.verified = bool(policy.verified) and alive
        self.run.say("re-ran the whole shop under the generated seccomp profiles (libseccomp jail)")

    def _attack(self) -> None:
        url = f"http://{self.addresses['frontend']}:8080/debug/run?cmd=" + urllib.parse.quote(
            ATTACK
        )
        done = self.node.run([PYTHON, "-c", FETCH, url], {}, 30)
        shown = re.search(r"<pre>(.*)</pre>", done.stdout.decode(errors="replace"), re.DOTALL)
        token, _, code = (shown.group(1).strip() if shown else "").partition("\n")
        self.run.say(
            "attack: through the frontend's leftover /debug/run endpoint a shell read the "
            f"service-account token ({token[:20]}...) and connected to 169.254.169.254 "
            f"(connect: errno {code.strip() or '?'}, nothing left the demo's namespaces)"
        )
        poll(self._alerted, 30, "alerts " + ", ".join(EXPECTED_RULES))
        self.run.say("runtime raised " + ", ".join(sorted(self._rules())))
        asked = time.monotonic()
        try:
            poll(self._incident, INCIDENT_SECONDS, "a correlator incident for the frontend")
            self.run.say(
                "the correlator joined the alerts with posture into incidents "
                f"({time.monotonic() - asked:.0f}s after the alerts)"
            )
        except (grpc.RpcError, TimeoutError) as exc:
            why = f"{exc.code().name}: {exc.details()}" if isinstance(exc, grpc.Call) else SLOW_LOOP
            self.run.say(f"no incident from the correlator within {INCIDENT_SECONDS:g}s")
            self.pending["incidents"] = f"{m.AWAITING}: {why}"

    def _rules(self) -> set[str]:
        request = rt.ListAlertsRequest(workload=ref("frontend"), page_size=100)
        return {a.rule_id for a in self.run.runtime.ListAlerts(request, timeout=30).alerts}

    def _alerted(self) -> bool:
        return set(EXPECTED_RULES) <= self._rules()

    def _incident(self) -> bool:
        request = co.ListIncidentsRequest(workload=ref("frontend"), page_size=50)
        return bool(self.run.correlator.ListIncidents(request, timeout=30).incidents)
