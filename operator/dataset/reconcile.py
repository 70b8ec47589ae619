"""Level-based reconcile of a Dataset: finished -> stop; licence policy -> refuse without a pod;
Job failed -> Failed with the pod's exit code, reason and log tail; Job complete -> Ready with
the manifest's statistics; otherwise create what is missing and report Running."""

from __future__ import annotations

from capstan_api import files
from capstan_api import status as st
from capstan_api.common import now_rfc3339
from capstan_api.dataset import DatasetSpec
from capstan_api.status import Phase
from capstan_operator import kube, objectstore
from capstan_operator.config import OperatorConfig
from capstan_operator.dataset import build, resolve
from capstan_operator.jobs import blocked, job_condition, job_failure
from capstan_operator.status import Outcome, StatusDraft, read_spec

POLL_SECONDS = 5.0


def stats_to_status(manifest: dict, output_uri: str) -> dict:
    """DatasetStatus fields (wire names) from manifest.json's statistics."""
    stats = manifest.get("stats") or {}
    tokens = stats.get("tokens") or {}
    docs = stats.get("documents") or {}
    return {
        "stages": [
            {"name": s["stage"], "documentsIn": s["in"], "documentsOut": s["out"]}
            for s in stats.get("stages") or []
        ],
        "documents": sum(docs.values()) if docs else None,
        "tokens": tokens.get("train"),
        "validationTokens": tokens.get("validation"),
        "shards": stats.get("shards"),
        "manifestUri": files.join(output_uri, files.MANIFEST_FILE),
        "datasheetUri": files.join(output_uri, files.DATASHEET_FILE),
        "fingerprint": manifest.get("fingerprint") or None,
    }


def reconcile(body: dict, cfg: OperatorConfig) -> Outcome:
    draft = StatusDraft(body)
    meta = body["metadata"]
    ns, name = meta["namespace"], meta["name"]
    # ---- finished: nothing more to do for this generation
    if draft.finished(Phase.READY, Phase.FAILED):
        return draft.outcome()
    spec, problem = read_spec(body, DatasetSpec)
    if problem:
        return draft.fail("InvalidSpec", problem, st.READY).outcome()
    # ---- policy: refused before any pod exists
    refusals = resolve.licence_refusals(spec, cfg)
    if refusals:
        msg = "; ".join(refusals)
        draft.condition(st.LICENSE_NOT_ALLOWED, "True", "LicenseNotAllowed", msg)
        return draft.fail("LicenseNotAllowed", msg, st.READY).outcome()
    draft.clear(st.LICENSE_NOT_ALLOWED)
    # ---- the Job and its pods
    job_name = build.job_name(name)
    job = kube.get("batch/v1", "Job", ns, job_name)
    if job_condition(job, "Failed"):
        return draft.fail("PrepareFailed", job_failure(job, ns, job_name), st.READY).outcome()
    if job_condition(job, "Complete"):
        manifest = objectstore.read_json(files.join(spec.output.uri, files.MANIFEST_FILE), cfg)
        if manifest is None:
            msg = f"Job {job_name} completed but {spec.output.uri}/manifest.json is missing"
            return draft.fail("ManifestMissing", msg, st.READY).outcome()
        draft.set(**stats_to_status(manifest, spec.output.uri), completionTime=now_rfc3339())
        msg = f"{draft.get('documents')} documents, {draft.get('tokens')} training tokens in {draft.get('shards')} shards"
        draft.condition(st.READY, "True", "Prepared", msg)
        draft.clear(st.FAILED)
        return draft.phase(Phase.READY, msg, "Prepared").outcome()
    # ---- create what is missing (create-or-patch: idempotent)
    if job is None:
        for child in build.build(body, spec, cfg):
            kube.apply(child)
        draft.event("Normal", "Created", f"Job {job_name} preparing {len(spec.sources)} source(s)")
    if not draft.get("startTime"):
        draft.set(startTime=now_rfc3339())
    stuck = blocked(ns, job_name)
    if stuck:  # named in status: a pod that cannot start is not "Running"
        draft.condition(st.READY, "False", stuck[0], stuck[1])
        return draft.phase(Phase.PENDING, stuck[1], stuck[0]).outcome(POLL_SECONDS)
    draft.condition(st.READY, "False", "Preparing", f"Job {job_name} is running")
    return draft.phase(Phase.RUNNING, f"Job {job_name} is preparing the data", "Preparing").outcome(
        POLL_SECONDS
    )
