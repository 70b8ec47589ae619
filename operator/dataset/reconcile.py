"""Level-based reconcile of a Dataset: finished -> stop; licence policy -> refuse without a pod;
then the preparation stages in order (capstan_api.preparation.plan), one Indexed Job each: a
failed stage -> Failed with a pod's exit code, reason and log tail; a complete one -> the next;
a missing one -> create it; after `finish` -> Ready with the manifest's statistics."""

from __future__ import annotations

import functools

import yaml

from capstan_api import files, preparation
from capstan_api import status as st
from capstan_api.common import now_rfc3339
from capstan_api.dataset import DatasetSpec
from capstan_api.status import Phase
from capstan_operator import children, kube, objectstore
from capstan_operator.config import OperatorConfig
from capstan_operator.dataset import build, progress, resolve
from capstan_operator.jobs import blocked, job_condition, job_failure
from capstan_operator.status import Outcome, StatusDraft, read_spec

POLL_SECONDS = 10.0
"""POLL_SECONDS: how often a preparation in flight is looked at. Workers rewrite their progress
files every preparation.PROGRESS_SECONDS, so status.stages trails them by at most ~20 s; a Job's
own changes (a pod done, the stage complete) wake the reconcile at once through the Job watch."""


def stats_to_status(manifest: dict, output_uri: str) -> dict:
    """DatasetStatus fields (wire names) from manifest.json's statistics."""
    stats = manifest.get("stats") or {}
    tokens = stats.get("tokens") or {}
    docs = stats.get("documents") or {}
    return {
        "steps": [
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


def stage_jobs(ns: str, name: str) -> dict[str, dict]:
    """The Dataset's Jobs by name (one list call for every stage)."""
    selector = children.selector(children.labels("Dataset", name, build.COMPONENT))
    return {j["metadata"]["name"]: j for j in kube.list_("batch/v1", "Job", ns, selector)}


def started_spec(ns: str, name: str) -> DatasetSpec | None:
    """The spec the preparation started with, from its ConfigMap (what every stage's workers
    read), or None before the first stage: an edit while preparing cannot change the plan midway."""
    cm = kube.get("v1", "ConfigMap", ns, build.config_map_name(name))
    if cm is None:
        return None
    doc = yaml.safe_load((cm.get("data") or {}).get(children.CONFIG_KEY) or "{}") or {}
    return DatasetSpec.model_validate(doc.get("spec") or {})


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
    # ---- the stage Jobs, bucketed by stage; the first one not Complete is the one in flight
    found = stage_jobs(ns, name)
    started = started_spec(ns, name) if found else None
    run = started or spec
    stages = preparation.plan(run)
    jobs = {s.name: found.get(build.stage_job_name(name, s.name)) for s in stages}
    current = next((s for s in stages if not job_condition(jobs[s.name], "Complete")), None)
    job_name = build.stage_job_name(name, current.name) if current else ""
    # ---- create what is missing (create-or-patch: idempotent), so status shows it at once
    if current and jobs[current.name] is None:
        if started is None:  # the first stage: the ConfigMap fixes the spec for every stage
            kube.apply(build.build_config_map(body, spec, cfg))
        jobs[current.name] = kube.apply(build.build_stage_job(body, run, cfg, current))
        draft.event(
            "Normal", "Created", f"Job {job_name}: stage {current.name} with {current.workers} worker(s)"
        )
    read = functools.partial(progress.read_progress, cfg=cfg)
    old = draft.get("stages") or []
    draft.set(stages=progress.stage_status(meta["uid"], stages, jobs, old, run.output.uri, read))
    # ---- every stage complete: the manifest says how it went
    if current is None:
        return _ready(draft, run, cfg)
    job = jobs[current.name]
    if job_condition(job, "Failed"):
        msg = f"stage {current.name}: {job_failure(job, ns, job_name)}"
        return draft.fail("PrepareFailed", msg, st.READY).outcome()
    # ---- in flight
    if not draft.get("startTime"):
        draft.set(startTime=now_rfc3339())
    stuck = blocked(ns, job_name)
    if stuck:  # named in status: a pod that cannot start is not "Running"
        draft.condition(st.READY, "False", stuck[0], stuck[1])
        return draft.phase(Phase.PENDING, stuck[1], stuck[0]).outcome(POLL_SECONDS)
    done = (job.get("status") or {}).get("succeeded") or 0
    where = f"stage {current.name} ({stages.index(current) + 1}/{len(stages)})"
    draft.condition(st.READY, "False", "Preparing", f"{where}: Job {job_name} is running")
    msg = f"{where}: {done}/{current.workers} workers done"
    return draft.phase(Phase.RUNNING, msg, "Preparing").outcome(POLL_SECONDS)


def _ready(draft: StatusDraft, run: DatasetSpec, cfg: OperatorConfig) -> Outcome:
    """Every stage complete: the manifest's statistics, or Failed when there is none."""
    uri = files.join(run.output.uri, files.MANIFEST_FILE)
    manifest = objectstore.read_json(uri, cfg, "spec.output.uri")
    if manifest is None:
        msg = f"every stage completed but {uri} is missing"
        return draft.fail("ManifestMissing", msg, st.READY).outcome()
    draft.set(**stats_to_status(manifest, run.output.uri), completionTime=now_rfc3339())
    msg = f"{draft.get('documents')} documents, {draft.get('tokens')} training tokens in {draft.get('shards')} shards"
    draft.condition(st.READY, "True", "Prepared", msg)
    draft.clear(st.FAILED)
    return draft.phase(Phase.READY, msg, "Prepared").outcome()
