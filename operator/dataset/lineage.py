"""Reverse lineage of a Ready Dataset, and DataRemoved on what was built from removed data.

Each TrainingRun records in status.trainedOn the manifest URIs its gang was first created with
(`<output.uri>/revisions/<n>/manifest.json` for a datasetRef), so the revision it trained on is
known after the Dataset moved on. A Ready Dataset lists, per revision, the runs trained on it and
the Evaluations and Deployments of those runs (status.usedBy). A run trained on an older revision
that held documents the current revision removed (its excluded.jsonl against the old revision's
documents.jsonl) gets the condition DataRemoved and status.dataRemoved (a printer column), and
so does every Deployment serving it. The Dataset reconcile does this, and looks again every
LINEAGE_POLL seconds while Ready, so runs created later are found.
"""

from __future__ import annotations

from capstan_api import files
from capstan_api.lineage import DATA_REMOVED
from capstan_operator import kube, objectstore
from capstan_operator.config import OperatorConfig
from capstan_operator.dataset.build import REVISIONS_DIR, revision_uri
from capstan_operator.status import set_condition

LINEAGE_POLL = 60.0

_held: dict[tuple[str, str], int] = {}
"""(old manifest, new manifest) -> documents of the old revision the new one removed; both
revisions' files never change, so once counted is enough (an operator restart counts again)."""


def revision_of(manifest_uri: str, output_uri: str) -> int | None:
    """The revision a manifest URI belongs to, or None when it is not one of this output's."""
    prefix = files.join(output_uri, REVISIONS_DIR) + "/"
    if not manifest_uri.startswith(prefix):
        return None
    head = manifest_uri[len(prefix) :].split("/", 1)[0]
    return int(head) if head.isdigit() else None


def _name(obj: dict) -> str:
    return obj["metadata"]["name"]


def _ref(obj: dict, *path: str) -> str:
    node = obj.get("spec") or {}
    for p in path:
        node = node.get(p) or {}
    return node.get("name", "") if isinstance(node, dict) else ""


def runs_on(dataset: str, output_uri: str, runs: list[dict]) -> dict[str, int]:
    """Run name -> the revision of `dataset` it trained on (runs that recorded none are left out)."""
    out = {}
    for run in runs:
        trained = (run.get("status") or {}).get("trainedOn") or []
        for i, entry in enumerate((run.get("spec") or {}).get("datasets") or []):
            if entry.get("datasetRef") == dataset and i < len(trained):
                rev = revision_of(trained[i], output_uri)
                if rev is not None:
                    out[_name(run)] = rev
    return out


def built_from(run: str, evaluations: list[dict], deployments: list[dict]) -> tuple[list[str], list[str]]:
    """The Evaluations of `run`, and the Deployments serving it (directly or through one of them)."""
    evals = sorted(_name(e) for e in evaluations if _ref(e, "model", "trainingRunRef") == run)
    deps = sorted(
        _name(d)
        for d in deployments
        if _ref(d, "model", "trainingRunRef") == run or _ref(d, "model", "evaluationRef") in evals
    )
    return evals, deps


def used_by(
    output_uri: str, on: dict[str, int], evaluations: list[dict], deployments: list[dict]
) -> list[dict]:
    """status.usedBy (wire names), one entry per revision something was trained on."""
    out = []
    for rev in sorted(set(on.values())):
        runs = sorted(r for r, v in on.items() if v == rev)
        evals, deps = set(), set()
        for r in runs:
            e, d = built_from(r, evaluations, deployments)
            evals.update(e)
            deps.update(d)
        out.append(
            {
                "revision": rev,
                "manifestUri": files.join(revision_uri(output_uri, rev), files.MANIFEST_FILE),
                "trainingRuns": runs,
                "evaluations": sorted(evals),
                "deployments": sorted(deps),
            }
        )
    return out


def removal_note(dataset: str, revision: int, count: int, current: int, run: str) -> tuple[str, str]:
    """(condition message, short dataRemoved value) for a run trained on `revision`."""
    msg = (
        f"TrainingRun {run} trained on revision {revision} of Dataset {dataset}, which held {count} "
        f"document(s) removed in revision {current} (spec.exclusions); replay it without them with "
        f"init.replayWithout: {run}"
    )
    return msg, f"{dataset}@{revision}: {count}"


def held(old_manifest: str, new_manifest: str, cfg: OperatorConfig) -> int:
    """Documents of the old revision that the new one removed: its excluded.jsonl's ids found
    in the old revision's documents.jsonl (0 when it removed none)."""
    key = (old_manifest, new_manifest)
    if key not in _held:
        base = new_manifest.rsplit("/", 1)[0]
        removed = objectstore.json_lines(files.join(base, "excluded.jsonl"), cfg, "status.manifestUri")
        ids = {d["id"] for d in removed or ()}
        count = 0
        if ids:
            docs = objectstore.json_lines(
                files.join(old_manifest.rsplit("/", 1)[0], "documents.jsonl"), cfg, "status.usedBy"
            )
            count = sum(1 for d in docs or () if d.get("id") in ids)
        _held[key] = count
    return _held[key]


def mark(plural: str, obj: dict, message: str, short: str) -> None:
    """DataRemoved=True with `message` and status.dataRemoved on `obj`, written only when changed."""
    status = obj.get("status") or {}
    generation = int(obj["metadata"].get("generation") or 0)
    conditions, changed = set_condition(
        status.get("conditions"), DATA_REMOVED, "True", "DataRemoved", message, generation
    )
    if changed or status.get("dataRemoved") != short:
        kube.patch_custom_status(
            plural, obj["metadata"]["namespace"], _name(obj), {"conditions": conditions, "dataRemoved": short}
        )


def update(body: dict, status: dict, cfg: OperatorConfig) -> list[dict]:
    """Mark what was trained on removed data; returns status.usedBy for the Dataset."""
    ns, name = body["metadata"]["namespace"], body["metadata"]["name"]
    output = ((body.get("spec") or {}).get("output") or {}).get("uri", "")
    current, manifest = status.get("revision"), status.get("manifestUri")
    runs = kube.list_custom("trainingruns", ns)
    evaluations = kube.list_custom("evaluations", ns)
    deployments = kube.list_custom("deployments", ns)
    on = runs_on(name, output, runs)
    by_name = {_name(r): r for r in runs}
    deps_by_name = {_name(d): d for d in deployments}
    for run, rev in sorted(on.items()):
        if not current or not manifest or rev >= current:
            continue
        old = files.join(revision_uri(output, rev), files.MANIFEST_FILE)
        count = held(old, manifest, cfg)
        if not count:
            continue
        msg, short = removal_note(name, rev, count, current, run)
        mark("trainingruns", by_name[run], msg, short)
        for dep in built_from(run, evaluations, deployments)[1]:
            mark("deployments", deps_by_name[dep], f"Deployment {dep} serves a model of which: {msg}", short)
    return used_by(output, on, evaluations, deployments)
