"""Level-based reconcile of a Deployment (deployments.capstan.dev).

Recipe: choose the model (Evaluation that passed, TrainingRun, newest passing Evaluation, URI);
with runtime vllm, a model without its Hugging Face export -> its export Job first (export.py);
nothing served yet -> the first revision at full size; a canary in progress -> hold its step,
analyse it from its pods' metrics, then step up, promote or roll back; a new model -> a new
revision as a canary; otherwise keep the stable revision at its size and remove strays.

Everything needed to continue lives in status (revision, canaryRevision, canaryWeight, history)
and on the canary's apps/v1 Deployment (its step timing annotation), so an operator restart
resumes where it was."""

from __future__ import annotations

import json
from dataclasses import dataclass

from capstan_api import files
from capstan_api import status as st
from capstan_api.common import now_rfc3339
from capstan_api.deployment import DeploymentSpec
from capstan_api.drift import score
from capstan_api.status import Phase
from capstan_operator import identity, kube, objectstore
from capstan_operator.config import OperatorConfig
from capstan_operator.deployment import analysis, canary, drift, export, promql, regression, resolve
from capstan_operator.deployment import build as bd
from capstan_operator.jobs import (
    blocked,
    cannot_start,
    job_condition,
    job_failure,
    not_ready,
    pod_failure,
    terminated_containers,
)
from capstan_operator.status import Outcome, StatusDraft, read_spec, seconds_since

ROLLOUT_POLL_SECONDS = 2.0
STEADY_POLL_SECONDS = 15.0
WAIT_SECONDS = 10.0
EXPORT_POLL_SECONDS = 5.0
CANARY_READY_DEADLINE_S = 600  # a canary whose pods are not Ready by then is rolled back
HISTORY_LIMIT = 20


@dataclass
class Ctx:
    body: dict
    spec: DeploymentSpec
    cfg: OperatorConfig
    draft: StatusDraft
    live: dict[int, dict]
    """live maps revision -> its apps/v1 Deployment as stored."""
    history: list[dict]
    note: str = ""
    """note says why the named model is not rolled out (it was rolled back before)."""

    @property
    def ns(self) -> str:
        return self.body["metadata"]["namespace"]

    @property
    def name(self) -> str:
        return self.body["metadata"]["name"]

    def ready(self, revision: int | None) -> int:
        dep = self.live.get(revision) if revision is not None else None
        return int(((dep or {}).get("status") or {}).get("readyReplicas") or 0)

    def apply_revision(self, revision: int, uri: str, replicas: int, annotations: dict | None = None) -> None:
        identity.ensure_service_account(self.body, self.cfg)
        kube.apply(bd.deployment(self.body, self.spec, self.cfg, revision, uri, replicas, annotations))

    def delete_revision(self, revision: int) -> None:
        kube.delete("apps/v1", "Deployment", self.ns, bd.deployment_name(self.name, revision))
        self.live.pop(revision, None)

    def autoscale(self, revision: int | None) -> None:
        """The HPA follows the stable revision; none while a canary runs (the operator owns the
        replica counts then) or when autoscaling is off."""
        if revision is not None and self.spec.autoscaling.enabled:
            kube.apply(bd.hpa(self.body, self.spec, revision))
        else:
            kube.delete("autoscaling/v2", "HorizontalPodAutoscaler", self.ns, bd.hpa_name(self.name))

    def record(self, revision: int) -> dict | None:
        return next((r for r in reversed(self.history) if r["revision"] == revision), None)

    def add_record(self, revision: int, uri: str, reason: str) -> None:
        self.history.append(
            {
                "revision": revision,
                "modelUri": uri,
                "outcome": "InProgress",
                "reason": reason,
                "time": now_rfc3339(),
            }
        )
        del self.history[:-HISTORY_LIMIT]

    def close_record(self, revision: int, outcome: str, reason: str) -> None:
        rec = self.record(revision)
        if rec is not None and rec["outcome"] == "InProgress":
            rec.update(outcome=outcome, reason=reason, time=now_rfc3339())

    def next_revision(self) -> int:
        seen = [r["revision"] for r in self.history] + list(self.live)
        seen += [self.draft.old.get("revision") or 0, self.draft.old.get("canaryRevision") or 0]
        return max(seen, default=0) + 1

    def finish(self, requeue: float | None) -> Outcome:
        d = self.draft
        d.set(
            history=self.history,
            readyReplicas=sum(self.ready(r) for r in self.live),
            url=bd.url(self.name, self.ns),
        )
        return d.outcome(requeue)


def reconcile(body: dict, cfg: OperatorConfig) -> Outcome:
    draft = StatusDraft(body)
    ns, name = body["metadata"]["namespace"], body["metadata"]["name"]
    spec, problem = read_spec(body, DeploymentSpec)
    if problem:
        return draft.fail("InvalidSpec", problem, finished=False).outcome()
    live = {
        int(d["metadata"]["labels"][bd.LABEL_REVISION]): d
        for d in kube.list_("apps/v1", "Deployment", ns, bd.revision_selector(body))
    }
    ctx = Ctx(body, spec, cfg, draft, live, [dict(r) for r in draft.old.get("history") or []])
    stable, stable_uri = draft.old.get("revision"), draft.old.get("modelUri")
    # ---- which model should be served
    choice = _choose(ns, spec)
    if choice.uri:
        draft.clear(st.WAITING, st.FAILED)
    else:
        reason, why = (
            ("DependencyFailed", choice.failure)
            if choice.failure
            else ("EvaluationNotPassed", choice.blocked)
            if choice.blocked
            else ("DependencyNotReady", choice.waiting)
        )
        draft.condition(st.WAITING, "True", reason, why)
        if stable is None:
            if choice.failure:
                return draft.fail(reason, why, finished=False).outcome(WAIT_SECONDS)
            return draft.phase(Phase.WAITING, why, reason).outcome(WAIT_SECONDS)
    target = choice.uri or stable_uri
    if target != stable_uri and _rolled_back(ctx.history, target):
        rec = next(r for r in reversed(ctx.history) if r["modelUri"] == target)
        ctx.note = (
            f"{target} was rolled back at revision {rec['revision']} ({rec['reason']}); "
            "name a different model to roll out again"
        )
        draft.condition(st.PROGRESSING, "False", "RolledBack", ctx.note)
        target = stable_uri
    target = _regressions(ctx, target)
    if kube.get("v1", "Service", ns, bd.service_name(name)) is None:
        kube.apply(bd.service(body))
    # ---- first revision: nothing to compare a canary with
    if stable is None:
        ex = _export(ctx, target)
        if ex.failure:
            return draft.fail("ExportFailed", ex.failure, finished=False).outcome(WAIT_SECONDS)
        if not ex.ready:
            draft.condition(st.WAITING, "True", "Exporting", ex.waiting)
            return draft.phase(Phase.WAITING, ex.waiting, "Exporting").outcome(EXPORT_POLL_SECONDS)
        draft.clear(st.WAITING)
        return _first_revision(ctx, target, choice.source)
    # ---- a canary in progress
    canary_rev = draft.old.get("canaryRevision")
    if canary_rev is not None:
        rec = ctx.record(canary_rev)
        if rec is not None and rec["modelUri"] == target:
            return _progress_canary(ctx, canary_rev, rec)
        why = "the spec returned to the stable model" if target == stable_uri else f"superseded by {target}"
        ctx.delete_revision(canary_rev)
        ctx.close_record(canary_rev, "Superseded", why)
        draft.set(canaryRevision=None, canaryWeight=0)
        draft.event("Normal", "Superseded", f"canary revision {canary_rev}: {why}")
    # ---- a new model: start a canary (once vLLM has its export; the stable keeps serving)
    if target != stable_uri:
        ex = _export(ctx, target)
        if ex.ready:
            return _start_canary(ctx, target, choice.source)
        ctx.note = f"{target} is not rolled out yet: {ex.failure or ex.waiting}"
        if ex.started:  # the phase stays: say it in an Event (a first revision's phase change does)
            draft.event("Normal", "Exporting", ex.waiting)
        draft.condition(
            st.PROGRESSING, *(("False", "ExportFailed") if ex.failure else ("True", "Exporting")), ctx.note
        )
    return _steady(ctx)


def _choose(ns: str, spec: DeploymentSpec) -> resolve.ModelChoice:
    m = spec.model
    ev = kube.get_custom("evaluations", ns, m.evaluation_ref.name) if m.evaluation_ref else None
    run = None
    evaluations: list[dict] = []
    if m.training_run_ref is not None:
        if m.follow_passing_evaluations:
            evaluations = kube.list_custom("evaluations", ns)
        else:
            run = kube.get_custom("trainingruns", ns, m.training_run_ref.name)
    return resolve.choose(spec, ev, run, evaluations)


def _regressions(ctx: Ctx, target: str | None) -> str | None:
    """Degraded while a scheduled Evaluation's newest run failed on the stable model; with
    onRegression: rollback, that revision is marked RolledBack and the model to roll out becomes
    the last promoted other one (a canary, as any new model). Returns the model to serve."""
    d = ctx.draft
    stable, stable_uri = d.old.get("revision"), d.old.get("modelUri")
    if stable is None:
        return target
    found = regression.find(ctx.name, stable_uri, kube.list_custom("evaluations", ctx.ns))
    if found is None:
        d.clear(st.DEGRADED)
        return target
    msg = found.message(stable_uri)
    if (d.find(st.DEGRADED) or {}).get("message") != msg:
        d.event("Warning", "Regression", msg)
    d.condition(st.DEGRADED, "True", "EvaluationFailed", msg)
    if not found.rollback:
        return target
    rec = ctx.record(stable)
    if rec is not None and rec["outcome"] != "RolledBack":
        rec.update(outcome="RolledBack", reason=msg, time=now_rfc3339())
        d.event("Warning", "RolledBack", f"revision {stable} rolled back: {msg}")
    back = regression.fallback(ctx.history, stable_uri)
    if back is None:
        ctx.note = f"{msg}; no earlier promoted revision to roll back to"
        return stable_uri
    ctx.note = f"rolling back to {back}: {msg}"
    return back


def _export(ctx: Ctx, uri: str) -> export.Export:
    """With runtime vllm: whether `uri`'s Hugging Face export is there, its Job created (once per
    checkpoint in the namespace) when it is not. Always ready for the built-in server."""
    if ctx.spec.runtime != "vllm":
        return export.Export(ready=True)
    if files.step_of(uri) is None:
        config = objectstore.read_json(files.join(uri, "config.json"), ctx.cfg, "spec.model")
        return export.given_export(uri, config)
    if objectstore.read_json(export.marker_uri(uri), ctx.cfg, "spec.model") is not None:
        return export.Export(ready=True)
    name, out = export.job_name(uri), files.export_uri(uri)
    job = kube.get("batch/v1", "Job", ctx.ns, name)
    if job is None:
        identity.ensure_service_account(ctx.body, ctx.cfg)
        kube.apply(export.job(ctx.body, ctx.spec, ctx.cfg, uri))
        return export.Export(waiting=f"Job {name} exporting {uri} to {out} for vLLM", started=True)
    if job_condition(job, "Failed"):
        why = job_failure(job, ctx.ns, name)
        return export.Export(failure=f"export of {uri} failed: {why}; delete Job {name} to try again")
    if job_condition(job, "Complete"):
        return export.Export(
            failure=f"Job {name} completed but {export.marker_uri(uri)} is missing (an image whose "
            f"capstan_trainer.export writes no marker?); delete Job {name} to try again"
        )
    stuck = blocked(ctx.ns, name)
    return export.Export(waiting=stuck[1] if stuck else f"Job {name} exporting {uri} to {out} for vLLM")


def _rolled_back(history: list[dict], uri: str) -> bool:
    """A model whose latest rollout was rolled back is not retried until the spec names another."""
    latest = next((r for r in reversed(history) if r["modelUri"] == uri), None)
    return latest is not None and latest["outcome"] == "RolledBack"


def _total(ctx: Ctx, revision: int | None) -> int:
    if ctx.spec.autoscaling.enabled and ctx.draft.old.get("canaryRevision") is not None:
        return int(
            ctx.draft.old.get("replicas") or ctx.spec.autoscaling.min_replicas
        )  # frozen during a canary
    return bd.desired_total(ctx.spec, ctx.live.get(revision) if revision is not None else None)


def _first_revision(ctx: Ctx, target: str, source: str) -> Outcome:
    rev, total = ctx.next_revision(), _total(ctx, None)
    ctx.apply_revision(rev, target, total)
    ctx.autoscale(rev)
    ctx.add_record(rev, target, f"first revision, from {source}")
    ctx.draft.set(revision=rev, modelUri=target, replicas=total)
    ctx.draft.event("Normal", "Created", f"revision {rev} serving {target} with {total} replica(s)")
    msg = f"revision {rev} starting ({target})"
    ctx.draft.condition(st.PROGRESSING, "True", "NewRevision", msg)
    ctx.draft.condition(st.READY, "False", "Starting", msg)
    ctx.draft.phase(Phase.PROGRESSING, msg, "NewRevision")
    return ctx.finish(ROLLOUT_POLL_SECONDS)


def _steady(ctx: Ctx) -> Outcome:
    d = ctx.draft
    rev, uri = d.old["revision"], d.old["modelUri"]
    total = _total(ctx, rev)
    ctx.apply_revision(rev, uri, total)
    ctx.autoscale(rev)
    for stray in [r for r in ctx.live if r != rev]:
        ctx.delete_revision(stray)
    d.set(replicas=total, canaryRevision=None, canaryWeight=0)
    ready = ctx.ready(rev)
    rec = ctx.record(rev)
    if ready >= total:
        ctx.close_record(rev, "Promoted", "first revision Available")
        _drift(ctx, rev, uri)
        msg = f"revision {rev} serving {uri}: {ready}/{total} Ready"
        d.condition(st.READY, "True", "Available", msg)
        if ctx.note:
            msg = f"{msg}; {ctx.note}"
        else:
            d.condition(st.PROGRESSING, "False", "Stable", msg)
        d.phase(Phase.AVAILABLE, msg, "Available")
        return ctx.finish(STEADY_POLL_SECONDS)
    pods = kube.list_("v1", "Pod", ctx.ns, bd.revision_selector(ctx.body, rev))
    stuck, waiting = cannot_start(pods), not_ready(pods)
    detail = stuck[1] if stuck else f"waiting for {waiting}" if waiting else ""
    msg = f"revision {rev}: {ready}/{total} Ready" + (f"; {detail}" if detail else "")
    reason = stuck[0] if stuck else "NotReady"
    d.condition(st.READY, "False", reason, msg)
    starting = rec is not None and rec["outcome"] == "InProgress" and not stuck
    d.phase(Phase.PROGRESSING if starting else Phase.DEGRADED, msg, "Starting" if starting else reason)
    return ctx.finish(ROLLOUT_POLL_SECONDS)


def _drift(ctx: Ctx, rev: int, uri: str) -> None:
    """status.drift and the Drift condition from the stable revision's Ready pods (spec.drift)."""
    d = ctx.draft
    if not ctx.spec.drift.enabled or ctx.spec.runtime != "builtin":
        d.set(drift=None)
        d.clear(st.DRIFT)
        return
    reference, why = drift.reference(uri, ctx.cfg)
    if reference is None:
        d.condition(st.DRIFT, "Unknown", "NoReference", why)
        return
    pods = kube.list_("v1", "Pod", ctx.ns, bd.revision_selector(ctx.body, rev))
    live, unreadable = drift.scrape([p["status"]["podIP"] for p in pods if _pod_ready(p)], bd.PORT)
    result = score(reference, live)
    status, reason, msg = drift.judge(result, ctx.spec.drift)
    if unreadable:
        msg = f"{msg}; metrics unreadable from {', '.join(unreadable)}"
    if status == "True" and (d.find(st.DRIFT) or {}).get("status") != "True":
        d.event("Warning", "PromptsDrifted", msg)
    d.set(drift=result.to_wire())
    d.condition(st.DRIFT, status, reason, msg)


def _step_note(started: str, ready: str | None, weight: int) -> dict[str, str]:
    return {bd.ANNOTATION_CANARY_STEP: json.dumps({"weight": weight, "started": started, "ready": ready})}


def _start_canary(ctx: Ctx, target: str, source: str) -> Outcome:
    d = ctx.draft
    stable = d.old["revision"]
    rev, total = ctx.next_revision(), _total(ctx, stable)
    weight = ctx.spec.rollout.steps[0].weight
    split = canary.split(total, weight, canary_ready=0)
    ctx.autoscale(None)
    ctx.apply_revision(stable, d.old["modelUri"], split.stable)
    ctx.apply_revision(rev, target, split.canary, _step_note(now_rfc3339(), None, weight))
    ctx.add_record(rev, target, f"canary from {source}")
    d.set(canaryRevision=rev, canaryWeight=weight, replicas=total)
    msg = f"canary revision {rev} ({target}) starting at {weight}%"
    d.event("Normal", "CanaryStarted", msg)
    d.condition(st.PROGRESSING, "True", "Canary", msg)
    d.phase(Phase.PROGRESSING, msg, "Canary")
    return ctx.finish(ROLLOUT_POLL_SECONDS)


def _progress_canary(ctx: Ctx, rev: int, rec: dict) -> Outcome:
    d, spec = ctx.draft, ctx.spec
    stable = d.old["revision"]
    total = _total(ctx, stable)
    steps = spec.rollout.steps
    i = canary.step_index([s.weight for s in steps], int(d.old.get("canaryWeight") or 0))
    step = steps[i]
    dep = ctx.live.get(rev)
    note = json.loads(
        ((dep or {}).get("metadata", {}).get("annotations") or {}).get(bd.ANNOTATION_CANARY_STEP) or "{}"
    )
    if note.get("weight") != step.weight:
        note = {"weight": step.weight, "started": now_rfc3339(), "ready": None}
    pods = kube.list_("v1", "Pod", ctx.ns, bd.revision_selector(ctx.body, rev))
    crashed = [p for p in pods if terminated_containers(p)]
    if crashed:
        return _rollback(ctx, rev, f"canary pod failed: {pod_failure(crashed[0])[1]}")
    stuck = cannot_start(pods)
    if stuck:  # an image that cannot be pulled or run never becomes Ready: roll back now
        return _rollback(ctx, rev, f"canary {stuck[1]}")
    ready = ctx.ready(rev)
    split = canary.split(total, step.weight, ready)
    waiting_ready = ready < split.canary
    if not waiting_ready and not note.get("ready"):
        note["ready"] = now_rfc3339()
    ctx.apply_revision(stable, d.old["modelUri"], split.stable)
    ctx.apply_revision(
        rev, rec["modelUri"], split.canary, _step_note(note["started"], note["ready"], step.weight)
    )
    d.set(canaryWeight=step.weight, replicas=total)
    where = f"canary revision {rev} step {i + 1}/{len(steps)} at {step.weight}%"
    if waiting_ready:
        waited = seconds_since(note["started"])
        if waited > CANARY_READY_DEADLINE_S:
            return _rollback(
                ctx, rev, f"not Ready within {CANARY_READY_DEADLINE_S} s ({ready}/{split.canary} Ready)"
            )
        pending = not_ready(pods)
        return _holding(
            ctx,
            f"{where}: waiting for {ready}/{split.canary} canary pods to be Ready"
            + (f" ({pending})" if pending else ""),
        )
    if total == 0:
        return _promote(ctx, rev, "no replicas to analyse")
    verdict, unreadable = _analyse(ctx, spec, rev, stable, [p for p in pods if _pod_ready(p)], note["ready"])
    if verdict.decided and not verdict.passed:
        return _rollback(ctx, rev, f"analysis failed at {step.weight}%: {verdict.summary}")
    left = step.pause_seconds - seconds_since(note["ready"])
    if not verdict.decided or left > 0 or unreadable:
        extra = f"; metrics unreadable from {', '.join(unreadable)}" if unreadable else ""
        pause = f"; {left:.0f} s of the pause left" if left > 0 else ""
        return _holding(
            ctx, f"{where}: {verdict.summary}{pause}{extra}", min(ROLLOUT_POLL_SECONDS, max(left, 0.5))
        )
    if i + 1 < len(steps):
        nxt = steps[i + 1].weight
        ctx.apply_revision(
            rev, rec["modelUri"], canary.split(total, nxt, ready).canary, _step_note(now_rfc3339(), None, nxt)
        )
        d.set(canaryWeight=nxt)
        d.event("Normal", "CanaryStep", f"{where} passed ({verdict.summary}); stepping to {nxt}%")
        return _holding(ctx, f"canary revision {rev} stepping to {nxt}%", 0.5)
    return _promote(ctx, rev, f"analysis passed: {verdict.summary}")


def _analyse(
    ctx: Ctx, spec: DeploymentSpec, rev: int, stable: int, ready_pods: list[dict], ready_since: str
) -> tuple[analysis.Verdict, list[str]]:
    """From Prometheus when the operator has its URL (canary against stable over the step so far),
    else from the canary pods' own /metrics; also the pods whose metrics could not be read."""
    a = spec.rollout.analysis
    if ctx.cfg.prometheus_url:
        name, since = ctx.body["metadata"]["name"], seconds_since(ready_since)
        return promql.judge(ctx.cfg.prometheus_url, a, ctx.ns, name, rev, stable, since), []
    sample, unreadable = analysis.scrape([p["status"]["podIP"] for p in ready_pods], bd.PORT, spec.runtime)
    return analysis.judge(sample, a), unreadable


def _pod_ready(pod: dict) -> bool:
    status = pod.get("status") or {}
    conds = {c["type"]: c["status"] for c in status.get("conditions") or []}
    return bool(status.get("podIP")) and conds.get("Ready") == "True"


def _holding(ctx: Ctx, msg: str, requeue: float = ROLLOUT_POLL_SECONDS) -> Outcome:
    ctx.draft.condition(st.PROGRESSING, "True", "Canary", msg)
    ctx.draft.phase(Phase.PROGRESSING, msg, "Canary")
    return ctx.finish(requeue)


def _rollback(ctx: Ctx, rev: int, why: str) -> Outcome:
    d = ctx.draft
    stable = d.old["revision"]
    total = _total(ctx, stable)
    ctx.delete_revision(rev)
    ctx.apply_revision(stable, d.old["modelUri"], total)
    ctx.autoscale(stable)
    ctx.close_record(rev, "RolledBack", why)
    d.set(canaryRevision=None, canaryWeight=0, replicas=total)
    msg = f"serving revision {stable}; revision {rev} rolled back: {why}"
    d.event("Warning", "RolledBack", f"revision {rev} rolled back: {why}")
    d.condition(st.PROGRESSING, "False", "RolledBack", msg)
    ready = ctx.ready(stable) >= total
    d.condition(
        st.READY, "True" if ready else "False", "Available" if ready else "NotReady", msg.split(":")[0]
    )
    d.phase(Phase.AVAILABLE if ready else Phase.DEGRADED, msg, "RolledBack")
    return ctx.finish(ROLLOUT_POLL_SECONDS)


def _promote(ctx: Ctx, rev: int, why: str) -> Outcome:
    d = ctx.draft
    old = d.old["revision"]
    rec = ctx.record(rev) or {}
    total = _total(ctx, old)
    ctx.apply_revision(rev, rec["modelUri"], total)
    ctx.delete_revision(old)
    ctx.autoscale(rev)
    ctx.close_record(rev, "Promoted", why)
    d.set(revision=rev, modelUri=rec["modelUri"], previousRevision=old, canaryRevision=None, canaryWeight=0)
    msg = f"revision {rev} promoted ({rec['modelUri']}); {why}"
    d.event("Normal", "Promoted", msg)
    d.condition(st.PROGRESSING, "False", "Promoted", msg)
    d.condition(st.READY, "True", "Available", f"revision {rev} serving")
    d.phase(Phase.AVAILABLE, msg, "Promoted")
    return ctx.finish(ROLLOUT_POLL_SECONDS)
