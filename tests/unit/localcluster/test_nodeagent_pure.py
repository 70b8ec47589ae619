"""Pure pieces of the node agent: name resolution and `$(VAR)` expansion."""

from hack.localcluster.nodeagent.hosts import render
from hack.localcluster.nodeagent.podspec import expand, quantity


def pod(name, ns="default", ip=None, labels=None, hostname=None, subdomain=None, ready=True, uid=None):
    return {
        "metadata": {"name": name, "namespace": ns, "uid": uid or name, "labels": labels or {}},
        "spec": {"hostname": hostname, "subdomain": subdomain},
        "status": {
            "podIP": ip,
            "phase": "Running",
            "conditions": [{"type": "Ready", "status": "True" if ready else "False"}],
        },
    }


def svc(name, selector, ns="default", headless=False):
    return {
        "metadata": {"name": name, "namespace": ns, "uid": "svc-" + name},
        "spec": {"selector": selector, "clusterIP": "None" if headless else "10.96.0.10"},
    }


def lines(text):
    return {name: ln.split("\t")[0] for ln in text.splitlines() for name in ln.split("\t")[1].split()}


def test_service_resolves_to_a_ready_pod_never_to_the_cluster_ip():
    me = pod("client", ip="127.1.0.9")
    pods = [
        me,
        pod("web-a", ip="127.1.0.2", labels={"app": "web"}, ready=False),
        pod("web-b", ip="127.1.0.3", labels={"app": "web"}),
    ]
    names = lines(render(me, "127.1.0.9", pods, [svc("web", {"app": "web"})]))
    assert names["web"] == "127.1.0.3"
    assert names["web.default.svc.cluster.local"] == "127.1.0.3"
    assert "10.96.0.10" not in names.values()


def test_headless_subdomain_names_and_other_namespaces():
    me = pod("run-0", ip="127.1.0.5", hostname="run-0", subdomain="run", uid="a")
    peer = pod("run-1", ip="127.1.0.6", hostname="run-1", subdomain="run", uid="b", ready=False)
    other = pod("x", ns="other", ip="127.1.0.7", labels={"app": "x"})
    names = lines(render(me, "127.1.0.5", [me, peer, other], [svc("x", {"app": "x"}, ns="other")]))
    assert names["run-0"] == "127.1.0.5"
    assert names["run-1.run"] == "127.1.0.6"  # not ready yet, still resolvable for rendezvous
    assert names["run-1.run.default.svc.cluster.local"] == "127.1.0.6"
    assert names["x.other"] == "127.1.0.7"
    assert "x" not in names  # short names only within the pod's own namespace


def test_expand_follows_kubernetes_rules():
    env = {"A": "1", "B": "two"}
    assert expand("$(A)-$(B)", env) == "1-two"
    assert expand("$(MISSING)", env) == "$(MISSING)"
    assert expand("$$(A)", env) == "$(A)"


def test_quantities():
    assert quantity("500m") == 0.5
    assert quantity("2Gi") == 2 * 2**30
    assert quantity("4") == 4


def test_an_image_pinned_by_tag_and_digest_resolves_to_its_digest_without_the_registry(tmp_path):
    """The chart writes `repo:tag@sha256:...`; containerd pulls the digest, skopeo cannot parse it."""
    from hack.localcluster.nodeagent.images import ImageStore

    digest = "sha256:" + "ab" * 32
    store = ImageStore(tmp_path, mirror="127.0.0.1:1")  # nothing listens: no registry is asked
    assert store._resolve(f"127.0.0.1:1/capstan/operator:0.1.0@{digest}") == digest
    assert store._resolve(f"capstan/operator@{digest}") == digest
