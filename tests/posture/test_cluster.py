"""Live-cluster listing against the test API server holding the whole evaluation corpus, through
the real `kubernetes` client: completeness, pagination, permission errors, configuration."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import kubernetes.client
import pytest
import yaml

from services.posture.cluster import (
    KINDS,
    ClusterError,
    api_client_from,
    list_cluster_objects,
)
from tests.corpus import CORPUS
from tests.kubeapi import KubeAPIServer, Request, read_manifests

LISTED = {k.kind for k in KINDS}
CLUSTER_SCOPED = {"Namespace", "ClusterRole", "ClusterRoleBinding"}

Identity = tuple[str, str, str]  # kind, namespace ("" when cluster-scoped), name


def identity(obj: dict[str, Any]) -> Identity:
    meta = obj["metadata"]
    namespace = "" if obj["kind"] in CLUSTER_SCOPED else meta.get("namespace") or "default"
    return obj["kind"], namespace, meta["name"]


@pytest.fixture(scope="module")
def corpus() -> list[dict[str, Any]]:
    if not CORPUS.is_dir():
        pytest.skip(f"evaluation corpus not found at {CORPUS}")
    return read_manifests(CORPUS)


@pytest.fixture
def kube(corpus: list[dict[str, Any]]) -> Iterator[KubeAPIServer]:
    with KubeAPIServer() as server:
        for obj in sorted(corpus, key=lambda o: o["kind"] != "CustomResourceDefinition"):
            server.apply(obj)
        yield server


def scan(kube: KubeAPIServer, **options: Any) -> tuple[list[dict[str, Any]], list[str]]:
    with kube.api_client() as api:
        snapshot = list_cluster_objects(api, **options)
    assert snapshot.cluster == kube.url
    return snapshot.objects, snapshot.errors


def test_lists_every_loaded_workload_rbac_and_network_object(
    kube: KubeAPIServer, corpus: list[dict[str, Any]]
) -> None:
    objects, errors = scan(kube, page_size=7)
    loaded = {identity(o) for o in corpus if o["kind"] in LISTED}
    listed = [identity(o) for o in objects]
    assert errors == []
    assert set(listed) == loaded
    assert len(listed) == len(set(listed)), "an object was listed twice"
    assert {"Deployment", "CronJob", "ClusterRoleBinding", "NetworkPolicy"} <= {
        k for k, _, _ in loaded
    }
    assert len(loaded) > 400  # distinct objects; the corpus repeats many


def test_objects_look_like_manifests(kube: KubeAPIServer) -> None:
    objects, _ = scan(kube, page_size=50)
    by_kind = {o["kind"]: o for o in objects}
    assert {k.kind: k.api_version for k in KINDS} == {
        kind: obj["apiVersion"] for kind, obj in by_kind.items()
    }
    assert list(by_kind["CronJob"])[:2] == ["apiVersion", "kind"]
    assert by_kind["CronJob"]["apiVersion"] == "batch/v1"  # the corpus has batch/v1beta1 only
    assert all(o["metadata"].get("resourceVersion") for o in objects)


def test_pagination_follows_continue_tokens(kube: KubeAPIServer) -> None:
    objects, _ = scan(kube, page_size=7)
    lists = [r for r in kube.requests if not r.path.endswith(("/version", "/api", "/apis"))]
    assert {r.query.get("limit") for r in lists} == {"7"}
    continued = Counter(r.path for r in lists if r.query.get("continue"))
    per_kind = Counter(o["kind"] for o in objects)
    assert continued["/api/v1/pods"] == (per_kind["Pod"] - 1) // 7
    assert continued["/apis/apps/v1/deployments"] == (per_kind["Deployment"] - 1) // 7
    assert continued["/apis/rbac.authorization.k8s.io/v1/clusterrolebindings"] > 0


def test_secrets_are_never_requested(kube: KubeAPIServer, corpus: list[dict[str, Any]]) -> None:
    assert any(o["kind"] == "Secret" for o in corpus)
    objects, _ = scan(kube)
    assert not any(o["kind"] in ("Secret", "ConfigMap") for o in objects)
    assert not any("secrets" in r.path or "configmaps" in r.path for r in kube.requests)


def test_a_forbidden_kind_is_an_error_and_the_rest_still_lists(kube: KubeAPIServer) -> None:
    kube.forbid("rolebindings", group="rbac.authorization.k8s.io")
    objects, errors = scan(kube, page_size=7)
    assert errors == [
        "Cannot list RoleBinding (rbac.authorization.k8s.io/v1) across the cluster: HTTP 403 "
        'Forbidden: rolebindings.rbac.authorization.k8s.io is forbidden: User "system:service'
        'account:parallax:scanner" cannot list resource "rolebindings" in API group '
        '"rbac.authorization.k8s.io" at the cluster scope.'
    ]
    kinds = Counter(o["kind"] for o in objects)
    assert kinds["RoleBinding"] == 0
    assert kinds["Role"] > 0 and kinds["ClusterRoleBinding"] > 0 and kinds["Pod"] > 0


def test_only_requested_namespaces_but_all_cluster_rbac(kube: KubeAPIServer) -> None:
    objects, errors = scan(kube, namespaces=["monitoring", "ingress-nginx", "absent"], page_size=7)
    namespaced = {
        o["metadata"].get("namespace") for o in objects if o["kind"] not in CLUSTER_SCOPED
    }
    assert namespaced == {"monitoring", "ingress-nginx"}
    names = {o["metadata"]["name"] for o in objects if o["kind"] == "Namespace"}
    assert names == {"monitoring", "ingress-nginx"}
    assert any(o["kind"] == "ClusterRoleBinding" for o in objects)
    assert errors == [
        'Cannot list Namespace (v1) in namespace absent: HTTP 404 Not Found: namespaces "absent" '
        "not found."
    ]
    paths = {r.path for r in kube.requests}
    assert "/api/v1/namespaces/monitoring/pods" in paths and "/api/v1/pods" not in paths


def test_list_restarts_when_its_continue_token_expires(kube: KubeAPIServer) -> None:
    first_pages: list[Request] = []

    def compact_after_first_page(request: Request) -> None:
        if request.path == "/api/v1/pods" and not request.query.get("continue"):
            first_pages.append(request)
        elif request.path == "/api/v1/pods" and len(first_pages) == 1:
            kube.apply(
                {
                    "apiVersion": "v1",
                    "kind": "Pod",
                    "metadata": {"name": "late", "namespace": "x"},
                    "spec": {"containers": [{"name": "c", "image": "busybox"}]},
                }
            )
            kube.compact()

    kube.on_request = compact_after_first_page
    objects, errors = scan(kube, page_size=7)
    assert errors == []
    assert len(first_pages) == 2, "the list was not restarted"
    pods = [o["metadata"]["name"] for o in objects if o["kind"] == "Pod"]
    assert "late" in pods and len(pods) == len(set(pods))


def test_unreachable_cluster_raises() -> None:
    with KubeAPIServer() as kube:
        url = kube.url  # nothing listens there once the server has stopped
    config = kubernetes.client.Configuration(host=url, retries=0)
    with kubernetes.client.ApiClient(config) as api, pytest.raises(ClusterError, match="answer"):
        list_cluster_objects(api)


def test_rejected_credentials_raise() -> None:
    with KubeAPIServer(token="s3cret") as kube, kube.api_client(token="stale") as api:
        with pytest.raises(ClusterError, match="rejected the credentials: HTTP 401"):
            list_cluster_objects(api)
        assert len(kube.requests) == 1, "gave up at the first 401"


def test_page_size_must_be_positive(kube: KubeAPIServer) -> None:
    with kube.api_client() as api, pytest.raises(ValueError, match="page_size"):
        list_cluster_objects(api, page_size=0)


def kubeconfig(path: Path, server: str, token: str) -> Path:
    path.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "test", "cluster": {"server": server}}],
                "users": [{"name": "scanner", "user": {"token": token}}],
                "contexts": [{"name": "ctx", "context": {"cluster": "test", "user": "scanner"}}],
                "current-context": "ctx",
            }
        )
    )
    return path


def test_api_client_from_kubeconfig_authenticates_with_its_token(tmp_path: Path) -> None:
    with KubeAPIServer(token="s3cret") as kube:
        kube.add({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "shop"}})
        config = kubeconfig(tmp_path / "config", kube.url, "s3cret")
        before = config.read_text()
        with api_client_from(str(config), "ctx", in_cluster=False) as api:
            snapshot = list_cluster_objects(api)
    assert snapshot.errors == []
    assert [o["metadata"]["name"] for o in snapshot.objects] == ["shop"]
    assert config.read_text() == before


@pytest.mark.parametrize(
    ("context", "in_cluster", "message"),
    [("missing", False, "kubeconfig"), (None, True, "in-cluster")],
    ids=["unknown-context", "not-in-a-pod"],
)
def test_api_client_from_unusable_configuration_raises(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    context: str | None,
    in_cluster: bool,
    message: str,
) -> None:
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    config = kubeconfig(tmp_path / "config", "http://127.0.0.1:1", "t")
    with pytest.raises(ClusterError, match=message):
        api_client_from(str(config), context, in_cluster=in_cluster)
