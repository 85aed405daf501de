"""The test Kubernetes API server, driven by the official `kubernetes` client over real HTTP:
discovery, pagination, selectors, errors as Status objects, and watch."""

from __future__ import annotations

import json
import queue
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import kubernetes
import pytest
from kubernetes.client import ApiClient, ApiException, CoreV1Api

from tests.kubeapi import KubeAPIServer, Request, read_manifests

TIMEOUT = 10  # seconds, for every client call and every wait

# The client's watch and dynamic modules are untyped: Any keeps them at arm's length from mypy.
Watch: Any = kubernetes.watch.Watch
DynamicClient: Any = kubernetes.dynamic.DynamicClient


def names(listing: Any) -> list[str]:
    """The object names of a typed list response, in the server's order."""
    return [item.metadata.name for item in listing.items]


def pod(name: str, namespace: str, node: str = "node-a", **labels: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": namespace, "labels": labels},
        "spec": {"nodeName": node, "containers": [{"name": "app", "image": "nginx:1.27"}]},
    }


@pytest.fixture
def kube() -> Iterator[KubeAPIServer]:
    with KubeAPIServer() as server:
        yield server


@pytest.fixture
def api(kube: KubeAPIServer) -> Iterator[ApiClient]:
    with kube.api_client() as client:
        yield client


@pytest.fixture
def shop(kube: KubeAPIServer) -> KubeAPIServer:
    """Five pods over three namespaces and two nodes."""
    for name, namespace, node, app in [
        ("cart", "shop", "node-a", "web"),
        ("db", "shop", "node-b", "db"),
        ("front", "web", "node-a", "web"),
        ("batch", "jobs", "node-b", "worker"),
        ("cron", "jobs", "node-a", "worker"),
    ]:
        kube.add(pod(name, namespace, node, app=app, **({"tier": "edge"} if app == "web" else {})))
    return kube


def raw(response: Any) -> dict[str, Any]:
    body: dict[str, Any] = json.loads(response.data)
    return body


def status_of(error: ApiException) -> dict[str, Any]:
    body: dict[str, Any] = json.loads(error.body or "")
    return body


def test_discovery_serves_core_standard_and_held_groups(
    kube: KubeAPIServer, api: ApiClient
) -> None:
    kube.add(
        {
            "apiVersion": "monitoring.coreos.com/v1",
            "kind": "ServiceMonitor",
            "metadata": {"name": "web", "namespace": "shop"},
            "spec": {},
        }
    )
    assert kubernetes.client.VersionApi(api).get_code(_request_timeout=TIMEOUT).major == "1"
    assert kubernetes.client.CoreApi(api).get_api_versions(_request_timeout=TIMEOUT).versions == [
        "v1"
    ]
    groups = kubernetes.client.ApisApi(api).get_api_versions(_request_timeout=TIMEOUT).groups
    names = {g.name for g in groups}
    assert {"apps", "batch", "networking.k8s.io", "rbac.authorization.k8s.io", "policy"} <= names
    assert "monitoring.coreos.com" in names
    core = CoreV1Api(api).get_api_resources(_request_timeout=TIMEOUT).resources
    assert {("pods", True), ("namespaces", False), ("nodes", False)} <= {
        (r.name, r.namespaced) for r in core
    }
    rbac = kubernetes.client.RbacAuthorizationV1Api(api).get_api_resources(_request_timeout=TIMEOUT)
    assert {"clusterroles", "clusterrolebindings", "roles", "rolebindings"} <= {
        r.name for r in rbac.resources
    }


def test_dynamic_client_discovers_and_lists(
    shop: KubeAPIServer, api: ApiClient, tmp_path: Path
) -> None:
    client = DynamicClient(api, cache_file=str(tmp_path / "discovery.json"))
    pods = client.resources.get(api_version="v1", kind="Pod").get(namespace="jobs")
    assert sorted(names(pods)) == ["batch", "cron"]


def test_paginated_list_across_namespaces_returns_everything(
    shop: KubeAPIServer, api: ApiClient
) -> None:
    core, names, token, pages = CoreV1Api(api), [], None, []
    while True:
        page = raw(
            core.list_pod_for_all_namespaces(
                limit=2, _continue=token, _preload_content=False, _request_timeout=TIMEOUT
            )
        )
        pages.append(page)
        names += [item["metadata"]["name"] for item in page["items"]]
        token = page["metadata"].get("continue")
        if not token:
            break
    assert names == ["batch", "cron", "cart", "db", "front"]  # etcd key order: namespace/name
    assert [len(p["items"]) for p in pages] == [2, 2, 1]
    assert pages[0]["kind"] == "PodList" and pages[0]["apiVersion"] == "v1"
    assert pages[0]["metadata"]["remainingItemCount"] == 3
    assert all("kind" not in item and "apiVersion" not in item for item in pages[0]["items"])
    lists = [r for r in shop.requests if r.path == "/api/v1/pods"]
    assert [r.query.get("limit") for r in lists] == ["2", "2", "2"]
    assert [bool(r.query.get("continue")) for r in lists] == [False, True, True]


def test_continued_list_is_a_consistent_snapshot(shop: KubeAPIServer, api: ApiClient) -> None:
    core = CoreV1Api(api)
    first: Any = core.list_pod_for_all_namespaces(limit=2, _request_timeout=TIMEOUT)
    shop.add(pod("zeta", "web"))
    shop.delete(pod("front", "web"))
    rest: Any = core.list_pod_for_all_namespaces(
        limit=10, _continue=first.metadata.var_continue, _request_timeout=TIMEOUT
    )
    assert names(rest) == ["cart", "db", "front"]
    assert rest.metadata.resource_version == first.metadata.resource_version


def test_continue_token_after_compaction_is_gone(shop: KubeAPIServer, api: ApiClient) -> None:
    core = CoreV1Api(api)
    first: Any = core.list_pod_for_all_namespaces(limit=2, _request_timeout=TIMEOUT)
    shop.update(pod("db", "shop", "node-c"))
    shop.compact()
    with pytest.raises(ApiException) as gone:
        core.list_pod_for_all_namespaces(
            limit=2, _continue=first.metadata.var_continue, _request_timeout=TIMEOUT
        )
    status = status_of(gone.value)
    assert (gone.value.status, status["kind"], status["reason"]) == (410, "Status", "Expired")
    inconsistent = core.list_pod_for_all_namespaces(
        _continue=status["metadata"]["continue"], _request_timeout=TIMEOUT
    )
    assert names(inconsistent) == ["cart", "db", "front"]


def test_malformed_continue_token_is_a_bad_request(shop: KubeAPIServer, api: ApiClient) -> None:
    with pytest.raises(ApiException) as bad:
        CoreV1Api(api).list_pod_for_all_namespaces(_continue="garbage", _request_timeout=TIMEOUT)
    assert bad.value.status == 400
    assert status_of(bad.value)["message"].startswith("invalid continue token")


@pytest.mark.parametrize(
    ("selector", "expected"),
    [
        ("app=web", ["cart", "front"]),
        ("app==web,tier=edge", ["cart", "front"]),
        ("app!=web", ["batch", "cron", "db"]),
        ("app in (db, worker)", ["batch", "cron", "db"]),
        ("app notin (web),app", ["batch", "cron", "db"]),
        ("tier", ["cart", "front"]),
        ("!tier", ["batch", "cron", "db"]),
    ],
    ids=["equals", "and", "not-equals", "in", "notin", "exists", "not-exists"],
)
def test_label_selector(
    shop: KubeAPIServer, api: ApiClient, selector: str, expected: list[str]
) -> None:
    pods = CoreV1Api(api).list_pod_for_all_namespaces(
        label_selector=selector, _request_timeout=TIMEOUT
    )
    assert sorted(names(pods)) == expected


@pytest.mark.parametrize(
    ("namespace", "selector", "expected"),
    [
        (None, "spec.nodeName=node-b", ["batch", "db"]),
        ("jobs", "spec.nodeName=node-a", ["cron"]),
        (None, "spec.nodeName!=node-a,metadata.namespace=shop", ["db"]),
        ("shop", "metadata.name=cart", ["cart"]),
    ],
    ids=["node", "node-in-namespace", "not-equals-and-namespace", "name"],
)
def test_field_selector(
    shop: KubeAPIServer, api: ApiClient, namespace: str | None, selector: str, expected: list[str]
) -> None:
    core = CoreV1Api(api)
    if namespace is None:
        pods = core.list_pod_for_all_namespaces(field_selector=selector, _request_timeout=TIMEOUT)
    else:
        pods = core.list_namespaced_pod(
            namespace, field_selector=selector, _request_timeout=TIMEOUT
        )
    assert sorted(names(pods)) == expected


def test_unsupported_field_selector_is_a_bad_request(shop: KubeAPIServer, api: ApiClient) -> None:
    with pytest.raises(ApiException) as bad:
        CoreV1Api(api).list_pod_for_all_namespaces(
            field_selector="spec.containers=x", _request_timeout=TIMEOUT
        )
    assert bad.value.status == 400
    assert "field label not supported" in status_of(bad.value)["message"]


def test_get_one_object_and_404_status(shop: KubeAPIServer, api: ApiClient) -> None:
    core = CoreV1Api(api)
    got = raw(core.read_namespaced_pod("cart", "shop", _preload_content=False))
    assert (got["kind"], got["apiVersion"], got["metadata"]["namespace"]) == ("Pod", "v1", "shop")
    assert got["metadata"]["uid"] and got["metadata"]["resourceVersion"]
    with pytest.raises(ApiException) as missing:
        core.read_namespaced_pod("cart", "web", _request_timeout=TIMEOUT)
    assert missing.value.status == 404
    assert status_of(missing.value) == {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": 'pods "cart" not found',
        "reason": "NotFound",
        "code": 404,
        "details": {"name": "cart", "kind": "pods"},
    }


def test_cluster_scoped_kinds_and_legacy_api_versions(kube: KubeAPIServer, api: ApiClient) -> None:
    kube.add({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "shop"}})
    kube.add({"apiVersion": "v1", "kind": "Node", "metadata": {"name": "node-a"}})
    kube.add(
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRole",
            "metadata": {"name": "reader"},
            "rules": [],
        }
    )
    kube.add(
        {
            "apiVersion": "batch/v1beta1",
            "kind": "CronJob",
            "metadata": {"name": "nightly"},
            "spec": {"schedule": "@daily", "jobTemplate": {}},
        }
    )
    core, rbac = CoreV1Api(api), kubernetes.client.RbacAuthorizationV1Api(api)
    assert names(core.list_namespace(_request_timeout=TIMEOUT)) == ["shop"]
    assert names(rbac.list_cluster_role(_request_timeout=TIMEOUT)) == ["reader"]
    node: Any = core.read_node("node-a", _request_timeout=TIMEOUT)
    assert node.metadata.namespace is None
    cron = raw(
        kubernetes.client.BatchV1Api(api).list_namespaced_cron_job(
            "default", _preload_content=False, _request_timeout=TIMEOUT
        )
    )
    assert (cron["apiVersion"], cron["items"][0]["metadata"]["name"]) == ("batch/v1", "nightly")


def test_bearer_token_is_required_when_configured() -> None:
    with KubeAPIServer(token="s3cret") as kube:
        kube.add(pod("cart", "shop"))
        with kube.api_client(token="wrong") as intruder, pytest.raises(ApiException) as denied:
            CoreV1Api(intruder).list_namespaced_pod("shop", _request_timeout=TIMEOUT)
        assert denied.value.status == 401
        with kube.api_client() as client:
            pods = CoreV1Api(client).list_namespaced_pod("shop", _request_timeout=TIMEOUT)
        assert names(pods) == ["cart"]


def test_forbidden_resource_answers_403_like_rbac(shop: KubeAPIServer, api: ApiClient) -> None:
    shop.forbid("deployments", group="apps")
    with pytest.raises(ApiException) as forbidden:
        kubernetes.client.AppsV1Api(api).list_namespaced_deployment(
            "shop", _request_timeout=TIMEOUT
        )
    status = status_of(forbidden.value)
    assert (forbidden.value.status, status["reason"]) == (403, "Forbidden")
    assert status["message"] == (
        'deployments.apps is forbidden: User "system:serviceaccount:parallax:scanner" cannot list '
        'resource "deployments" in API group "apps" in the namespace "shop"'
    )
    assert CoreV1Api(api).list_namespaced_pod("shop", _request_timeout=TIMEOUT).items


def test_watch_streams_added_modified_deleted(kube: KubeAPIServer, api: ApiClient) -> None:
    core = CoreV1Api(api)
    listing: Any = core.list_namespaced_pod("shop", _request_timeout=TIMEOUT)
    since = listing.metadata.resource_version
    watching, events = threading.Event(), queue.Queue[tuple[str, str, str]]()
    kube.on_request = lambda r: watching.set() if r.query.get("watch") == "true" else None

    def consume() -> None:
        watch = Watch()
        for event in watch.stream(
            core.list_namespaced_pod,
            "shop",
            resource_version=since,
            timeout_seconds=TIMEOUT,
            _request_timeout=TIMEOUT,
        ):
            obj = event["object"]
            events.put((event["type"], obj.metadata.name, obj.spec.node_name))
            if event["type"] == "DELETED":
                watch.stop()

    consumer = threading.Thread(target=consume)
    consumer.start()
    assert watching.wait(TIMEOUT)
    kube.add(pod("cart", "shop"))
    assert events.get(timeout=TIMEOUT) == ("ADDED", "cart", "node-a")
    kube.add(pod("elsewhere", "web"))  # another namespace: not this watch's business
    kube.update(pod("cart", "shop", "node-b"))
    assert events.get(timeout=TIMEOUT) == ("MODIFIED", "cart", "node-b")
    kube.delete(pod("cart", "shop"))
    assert events.get(timeout=TIMEOUT) == ("DELETED", "cart", "node-b")
    consumer.join(TIMEOUT)
    assert not consumer.is_alive() and events.empty()


def test_watch_without_version_starts_with_current_state(
    shop: KubeAPIServer, api: ApiClient
) -> None:
    stream = Watch().stream(
        CoreV1Api(api).list_namespaced_pod,
        "jobs",
        timeout_seconds=TIMEOUT,
        _request_timeout=TIMEOUT,
    )
    first, second = next(stream), next(stream)
    stream.close()
    assert [(e["type"], e["object"].metadata.name) for e in (first, second)] == [
        ("ADDED", "batch"),
        ("ADDED", "cron"),
    ]


def test_watch_reports_objects_leaving_its_selector_as_deleted(
    shop: KubeAPIServer, api: ApiClient
) -> None:
    core = CoreV1Api(api)
    listing: Any = core.list_namespaced_pod("shop", _request_timeout=TIMEOUT)
    since = listing.metadata.resource_version
    shop.update(pod("cart", "shop", app="retired"))
    stream = Watch().stream(
        core.list_namespaced_pod,
        "shop",
        label_selector="app=web",
        resource_version=since,
        timeout_seconds=TIMEOUT,
        _request_timeout=TIMEOUT,
    )
    event = next(stream)
    stream.close()
    assert (event["type"], event["object"].metadata.name) == ("DELETED", "cart")


def test_watch_from_a_compacted_version_is_gone(shop: KubeAPIServer, api: ApiClient) -> None:
    core = CoreV1Api(api)
    listing: Any = core.list_namespaced_pod("shop", _request_timeout=TIMEOUT)
    since = listing.metadata.resource_version
    shop.update(pod("cart", "shop", "node-z"))
    shop.compact()
    with pytest.raises(ApiException) as gone:
        next(
            Watch().stream(
                core.list_namespaced_pod,
                "shop",
                resource_version=since,
                timeout_seconds=TIMEOUT,
                _request_timeout=TIMEOUT,
            )
        )
    assert gone.value.status == 410


def test_stop_ends_open_watches(kube: KubeAPIServer, api: ApiClient) -> None:
    ended = threading.Event()
    watching = threading.Event()
    kube.on_request = lambda r: watching.set() if r.query.get("watch") else None

    def consume() -> None:
        stream = Watch().stream(
            CoreV1Api(api).list_pod_for_all_namespaces,
            resource_version=kube.resource_version,
            timeout_seconds=TIMEOUT,
            _request_timeout=TIMEOUT,
        )
        assert list(stream) == []
        ended.set()

    consumer = threading.Thread(target=consume)
    consumer.start()
    assert watching.wait(TIMEOUT)
    kube.stop()
    consumer.join(TIMEOUT)
    assert ended.is_set()


def test_load_yaml_skips_what_does_not_parse(
    kube: KubeAPIServer, api: ApiClient, tmp_path: Path
) -> None:
    (tmp_path / "nested").mkdir()
    (tmp_path / "nested" / "app.yaml").write_text(
        "apiVersion: v1\nkind: ServiceAccount\nmetadata: {name: app, namespace: shop}\n"
        "---\nkind: [unclosed\n"
        "---\napiVersion: v1\nkind: Service\nmetadata: {name: app, namespace: shop}\n"
        "spec: {default: !!value =}\n"
        "---\njust a string\n"
    )
    (tmp_path / "roles.yml").write_text(
        "apiVersion: rbac.authorization.k8s.io/v1\nkind: RoleList\nitems:\n"
        "- {kind: Role, metadata: {name: a, namespace: shop}, rules: []}\n"
        "- {kind: Role, metadata: {name: b, namespace: web}, rules: []}\n"
    )
    (tmp_path / "notes.txt").write_text("kind: Pod\n")
    assert kube.load_yaml(tmp_path) == 4
    assert {(o["kind"], o["metadata"]["name"]) for o in read_manifests(tmp_path)} == {
        ("ServiceAccount", "app"),
        ("Service", "app"),
        ("Role", "a"),
        ("Role", "b"),
    }
    roles = kubernetes.client.RbacAuthorizationV1Api(api).list_role_for_all_namespaces(
        _request_timeout=TIMEOUT
    )
    assert sorted(names(roles)) == ["a", "b"]


def test_custom_resources_follow_their_definition(kube: KubeAPIServer, api: ApiClient) -> None:
    kube.add(
        {
            "apiVersion": "apiextensions.k8s.io/v1",
            "kind": "CustomResourceDefinition",
            "metadata": {"name": "clusterscans.parallax.dev"},
            "spec": {
                "group": "parallax.dev",
                "scope": "Cluster",
                "names": {"kind": "ClusterScan", "plural": "clusterscans"},
            },
        }
    )
    kube.add(
        {
            "apiVersion": "parallax.dev/v1",
            "kind": "ClusterScan",
            "metadata": {"name": "nightly", "namespace": "ignored"},
        }
    )
    custom = kubernetes.client.CustomObjectsApi(api)
    scans: Any = custom.list_cluster_custom_object("parallax.dev", "v1", "clusterscans")
    assert [(s["kind"], s["metadata"]["name"]) for s in scans["items"]] == [
        ("ClusterScan", "nightly")
    ]
    assert "namespace" not in scans["items"][0]["metadata"]


def test_request_log_records_method_path_and_query(shop: KubeAPIServer, api: ApiClient) -> None:
    CoreV1Api(api).list_namespaced_pod("web", label_selector="app=web", _request_timeout=TIMEOUT)
    assert shop.requests[-1] == Request(
        "GET", "/api/v1/namespaces/web/pods", {"labelSelector": "app=web"}
    )
