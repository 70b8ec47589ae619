"""Level-based reconcile of a Dataset: finished -> stop; licence policy -> refuse without a pod;
a revision built from another spec (or a failed one, since edited) -> removed, and the next
revision (`<output.uri>/revisions/<n>/`, status.revision) started, once the Dataset named by
spec.tokenizer.datasetRef is Ready (Waiting until then); then the preparation stages in order (capstan_api.preparation.plan), one Indexed Job each: a
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
from capstan_operator import children, identity, kube, objectstore
from capstan_operator.config import OperatorConfig
from capstan_operator.dataset import build, lineage, progress, resolve
from capstan_operator.jobs import blocked, job_condition, job_failure, start_overdue
from capstan_operator.status import Outcome, StatusDraft, read_spec

WAIT_SECONDS = 5.0  # a referenced Dataset is looked at again this often while this one waits
SUPERSEDE_POLL = 1.0  # a superseded revision's Jobs are gone within seconds (Foreground deletion)
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
        "toxicity": stats.get("toxicity"),
        "augmentation": stats.get("augmentation"),
        "manifestUri": files.join(output_uri, files.MANIFEST_FILE),
        "datasheetUri": files.join(output_uri, files.DATASHEET_FILE),
        "fingerprint": manifest.get("fingerprint") or None,
        **removal_status(stats),
    }


def removal_status(stats: dict) -> dict:
    """removed and removedByRule from the manifest's exclusion counts (nothing without rules)."""
    ex = stats.get("exclusions") or {}
    if not ex.get("byRule"):
        return {"removed": None, "removedByRule": []}
    by_rule = [{"rule": rule, "documents": n} for rule, n in ex["byRule"].items()]
    return {"removed": ex.get("removed", 0), "removedByRule": by_rule}


def stage_jobs(ns: str, name: str) -> dict[str, dict]:
    """The Dataset's Jobs by name (one list call for every stage)."""
    selector = children.selector(children.labels("Dataset", name, build.COMPONENT))
    return {j["metadata"]["name"]: j for j in kube.list_("batch/v1", "Job", ns, selector)}


def started_spec(cm: dict) -> DatasetSpec:
    """The spec a revision is prepared from (its output.uri the revision's folder), from its
    ConfigMap: what every stage's workers read, so an edit while preparing changes nothing midway."""
    doc = yaml.safe_load((cm.get("data") or {}).get(children.CONFIG_KEY) or "{}") or {}
    return DatasetSpec.model_validate(doc.get("spec") or {})


# Status fields that describe one revision's outputs: cleared when the next one starts.
REVISION_FIELDS = (
    "steps", "documents", "tokens", "validationTokens", "shards", "toxicity", "augmentation",
    "manifestUri", "datasheetUri", "fingerprint", "startTime", "completionTime", "removed",
)  # fmt: skip


def reconcile(body: dict, cfg: OperatorConfig) -> Outcome:
    draft = StatusDraft(body)
    meta = body["metadata"]
    ns, name = meta["namespace"], meta["name"]
    # ---- finished: nothing more to do for this generation
    if draft.finished(Phase.READY, Phase.FAILED):
        if draft.old.get("phase") == Phase.READY:  # lineage and removal, looked at again later
            used = lineage.update(body, draft.old, cfg)
            if used != (draft.old.get("usedBy") or []):
                draft.set(usedBy=used)
            return draft.outcome(lineage.LINEAGE_POLL)
        return draft.outcome()
    spec, problem = read_spec(body, DatasetSpec)
    problem = problem or resolve.own_tokenizer(name, spec)
    if problem:
        return draft.fail("InvalidSpec", problem, st.READY).outcome()
    # ---- policy: refused before any pod exists
    refusals = resolve.licence_refusals(spec, cfg)
    if refusals:
        msg = "; ".join(refusals)
        draft.condition(st.LICENSE_NOT_ALLOWED, "True", "LicenseNotAllowed", msg)
        return draft.fail("LicenseNotAllowed", msg, st.READY).outcome()
    draft.clear(st.LICENSE_NOT_ALLOWED)
    # ---- a revision made from another spec (or one that failed, its spec since edited): the
    # edit is prepared again as a new revision; the old one's files stay where they are.
    found = stage_jobs(ns, name)
    cm = kube.get("v1", "ConfigMap", ns, build.config_map_name(name))
    want = build.spec_hash(body)
    retry = draft.old.get("phase") == Phase.FAILED  # and the generation moved (not finished)
    if retry or any(children.built_from(o) != want for o in (cm, *found.values()) if o is not None):
        return _supersede(draft, ns, cm, found)
    if cm is None:
        if found:  # the last revision's Jobs are still going away
            return draft.outcome(SUPERSEDE_POLL)
        # ---- the Dataset whose tokenizer this one uses: resolved once, into the revision's spec
        ref = spec.tokenizer.dataset_ref
        base = kube.get_custom("datasets", ns, ref.name) if ref else None
        res = resolve.tokenizer(name, spec, base)
        if res.failure:
            return draft.clear(st.WAITING).fail("DependencyFailed", res.failure, st.READY).outcome()
        if res.waiting:
            draft.condition(st.WAITING, "True", "DependencyNotReady", res.waiting)
            return draft.phase(Phase.WAITING, res.waiting, "Waiting").outcome(WAIT_SECONDS)
        cm = _start_revision(body, draft, res.spec)
    draft.clear(st.WAITING)
    run = started_spec(cm)
    draft.set(revision=build.revision_of(cm))
    stages = preparation.plan(run)
    jobs = {s.name: found.get(build.stage_job_name(name, s.name)) for s in stages}
    current = next((s for s in stages if not job_condition(jobs[s.name], "Complete")), None)
    job_name = build.stage_job_name(name, current.name) if current else ""
    # ---- create what is missing (create-or-patch: idempotent), so status shows it at once
    if current and jobs[current.name] is None:
        identity.ensure_service_account(body, cfg)
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
    if stuck and start_overdue(job, spec.start_deadline_seconds):
        # Retrying would pull the same image or miss the same Secret: fail, and free the nodes.
        kube.delete("batch/v1", "Job", ns, job_name, propagation="Foreground")
        limit = spec.start_deadline_seconds
        msg = f"stage {current.name}: pods did not start within startDeadlineSeconds ({limit} s): {stuck[1]}"
        return draft.fail(stuck[0], msg, st.READY).outcome()
    if stuck:  # named in status: a pod that cannot start is not "Running"
        draft.condition(st.READY, "False", stuck[0], stuck[1])
        return draft.phase(Phase.PENDING, stuck[1], stuck[0]).outcome(POLL_SECONDS)
    done = (job.get("status") or {}).get("succeeded") or 0
    where = (
        f"revision {draft.get('revision')}, stage {current.name} ({stages.index(current) + 1}/{len(stages)})"
    )
    draft.condition(st.READY, "False", "Preparing", f"{where}: Job {job_name} is running")
    msg = f"{where}: {done}/{current.workers} workers done"
    return draft.phase(Phase.RUNNING, msg, "Preparing").outcome(POLL_SECONDS)


def _supersede(draft: StatusDraft, ns: str, cm: dict | None, jobs: dict[str, dict]) -> Outcome:
    """Stop and remove the last revision's Jobs and ConfigMap (its files stay); the next reconcile
    starts the next revision once they are gone."""
    live = [j for j in jobs.values() if not j["metadata"].get("deletionTimestamp")]
    for job in live:
        kube.delete("batch/v1", "Job", ns, job["metadata"]["name"], propagation="Foreground")
    last = build.revision_of(cm)
    if cm is not None:
        kube.delete("v1", "ConfigMap", ns, cm["metadata"]["name"])
        # Its number is spent even when a lost status write never recorded it: never reused.
        draft.set(revision=max(int(draft.get("revision") or 0), last or 0))
    if live or cm is not None:
        revision = draft.get("revision")
        msg = f"spec changed (generation {draft.generation}): preparing a new revision"
        if revision:
            msg += f"; revision {revision} stays in its folder"
        draft.event("Normal", "SpecChanged", msg)
    draft.clear(st.FAILED)
    draft.condition(st.READY, "False", "SpecChanged", "preparing a new revision")
    return draft.phase(Phase.PENDING, "spec changed: preparing a new revision", "SpecChanged").outcome(
        SUPERSEDE_POLL
    )


def _start_revision(body: dict, draft: StatusDraft, spec: DatasetSpec) -> dict:
    """The next revision's ConfigMap (create-or-patch: idempotent); the last one's outputs leave
    status."""
    revision = int(draft.get("revision") or 0) + 1
    cm = kube.apply(build.build_config_map(body, spec, revision))
    draft.set(stages=[], removedByRule=[], **dict.fromkeys(REVISION_FIELDS))
    where = build.revision_uri(spec.output.uri, revision)
    draft.event("Normal", "RevisionStarted", f"revision {revision}: preparing into {where}")
    return cm


def _ready(draft: StatusDraft, run: DatasetSpec, cfg: OperatorConfig) -> Outcome:
    """Every stage complete: the manifest's statistics, or Failed when there is none."""
    uri = files.join(run.output.uri, files.MANIFEST_FILE)
    manifest = objectstore.read_json(uri, cfg, "spec.output.uri")
    if manifest is None:
        msg = f"every stage completed but {uri} is missing"
        return draft.fail("ManifestMissing", msg, st.READY).outcome()
    completed = draft.get("completionTime") or now_rfc3339()
    draft.set(**stats_to_status(manifest, run.output.uri), completionTime=completed)
    msg = f"{draft.get('documents')} documents, {draft.get('tokens')} training tokens in {draft.get('shards')} shards"
    draft.condition(st.READY, "True", "Prepared", msg)
    draft.clear(st.FAILED)
    return draft.phase(Phase.READY, msg, "Prepared").outcome(lineage.LINEAGE_POLL)
