"""status.stages from the stage Jobs and the workers' progress files: at most READS_PER_POLL reads
per poll, the stage in flight first, done files never read again, counts kept once settled."""

from __future__ import annotations

from capstan_api.preparation import Stage, StageProgress, progress_uri
from capstan_operator.dataset import progress

OUT = "s3://bucket/out"
RUNNING = {"status": {"active": 1}}
COMPLETE = {"status": {"succeeded": 100, "conditions": [{"type": "Complete", "status": "True"}]}}


class Files:
    """Progress files by (stage, index); counts every read."""

    def __init__(self, stage: str, workers: int, documents_in: int = 10, done: bool = False):
        self.docs = {
            progress_uri(OUT, stage, i): StageProgress(
                stage=stage, index=i, workers=workers, documents_in=documents_in, documents_out=1, done=done
            )
            for i in range(workers)
        }
        self.reads: list[str] = []

    def __call__(self, uri: str) -> StageProgress | None:
        self.reads.append(uri)
        return self.docs.get(uri)


def poll(stages, jobs, old, read, cache):
    return progress.stage_status("uid-1", stages, jobs, old, OUT, read, cache)


def test_more_workers_than_the_budget_are_read_in_turns_and_summed():
    cache = progress.ProgressCache()
    files = Files("map", 100)
    stages = [Stage("map", 100), Stage("dedup", 10)]
    jobs = {"map": RUNNING, "dedup": None}
    first = poll(stages, jobs, [], files, cache)
    assert len(files.reads) == progress.READS_PER_POLL == 64
    assert first[0]["documentsIn"] == 640 and first[0]["phase"] == "Running"
    assert first[1] == {
        "name": "dedup",
        "workers": 10,
        "workersDone": 0,
        "documentsIn": 0,
        "documentsOut": 0,
        "phase": "Pending",
    }
    second = poll(stages, jobs, first, files, cache)
    assert len(files.reads) == 128
    assert set(files.reads[64:100]) == set(files.reads) - set(files.reads[:64]), "never-read files first"
    assert second[0]["documentsIn"] == 1000


def test_done_files_are_final_and_a_complete_stage_settles_into_status():
    cache = progress.ProgressCache()
    files = Files("map", 3, done=True)
    stages = [Stage("map", 3)]
    first = poll(stages, {"map": RUNNING}, [], files, cache)
    poll(stages, {"map": RUNNING}, first, files, cache)
    assert len(files.reads) == 3, "a worker that says done is not read again"
    done = poll(stages, {"map": {"status": {**COMPLETE["status"], "succeeded": 3}}}, first, files, cache)
    assert (done[0]["phase"], done[0]["workersDone"], done[0]["documentsIn"]) == ("Complete", 3, 30)
    # Settled: later polls (and another operator after a restart) keep the counts status holds.
    files.docs.clear()
    again = poll(stages, {"map": COMPLETE}, done, files, progress.ProgressCache())
    assert again[0]["documentsIn"] == 30 and len(files.reads) == 3


def test_the_stage_in_flight_reads_first():
    cache = progress.ProgressCache()
    running, complete = Files("dedup", 64), Files("map", 10)
    stages = [Stage("map", 10), Stage("dedup", 64)]

    def read(uri: str):
        return (running if "/dedup/" in uri else complete)(uri)

    out = poll(stages, {"map": COMPLETE, "dedup": RUNNING}, [], read, cache)
    assert len(running.reads) == 64 and complete.reads == [], "no budget left for the finished stage"
    assert out[1]["documentsIn"] == 640
