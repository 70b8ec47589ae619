"""Staged preparation at three corpus sizes: throughput per core and peak memory per worker.

    .venv/bin/python bench/prepare_scale.py [--sizes 16 64 256] [--workers 2] [--baseline-rev 0a40fef] [--s3]

For each size (MB of generated JSONL) runs every stage's indexes as separate processes, as the
Indexed Jobs do (`--stage S --index I`), and reads each process's CPU time and peak RSS from
wait4(). Baseline in the same run: the floor, reading, decompressing and parsing the same corpus
and nothing else. Prints JSON: per stage docs/s and MB/s per core, share of CPU, peak RSS per
worker; end to end MB/s per core and its ratio to the floor; the scale-out cost (CPU of N
workers against one, same input, the second size); storage traffic per stage; the load average;
with --baseline-rev, the speed-up over that revision's preparation on the first size; with --s3,
each size again with the corpus and the output in a bucket on SeaweedFS (loopback), its wall and
CPU seconds against the local run's.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.prepare_common import resource, write_corpus  # noqa: E402
from bench.trainer_common import s3_server_and_bucket  # noqa: E402
from capstan_api import preparation  # noqa: E402
from capstan_api.dataset import DatasetSpec  # noqa: E402
from capstan_trainer import storage  # noqa: E402

FLOOR = """
import sys
from capstan_api.dataset import Source
from capstan_trainer.prepare import read
src = Source(uri=sys.argv[1], licence="CC-BY-4.0")
stats = read.ReadStats()
for f in read.list_files([src]):
    for _ in read.read_documents(f, src, stats):
        pass
"""


def waited(procs: list[subprocess.Popen]) -> tuple[float, int]:
    """(CPU seconds of all, the largest peak RSS in bytes) of finished children."""
    cpu, peak = 0.0, 0
    for p in procs:
        _, status, ru = os.wait4(p.pid, 0)
        p.returncode = os.waitstatus_to_exitcode(status)
        if p.returncode != 0:
            raise SystemExit(f"{p.args} exited {p.returncode}")
        cpu += ru.ru_utime + ru.ru_stime
        peak = max(peak, ru.ru_maxrss * 1024)
    return cpu, peak


def floor(src: str) -> float:
    cpu, _ = waited([subprocess.Popen([sys.executable, "-c", FLOOR, src])])
    return cpu


# What each stage reads, by the files of earlier stages it consumes (besides markers).
READS = {
    "dedup": ("map/runs-", "map/sample-", "map/hist-"),
    "cluster": ("dedup/pairs-", "dedup/sample-"),
    "tokenize": ("map/docs-",),
    "shard": ("tokenize/tokens-",),
    "finish": ("tokenize/meta-",),
}


def sizes(uri: str) -> dict[str, int]:
    """Files under the output folder (any storage) by path relative to it (markers and progress
    left out)."""
    fs, root = storage.filesystem(uri)
    fs.invalidate_cache()
    if not fs.exists(root):
        return {}
    return {
        p[len(root) :].lstrip("/").removeprefix("_work/"): int(info["size"])
        for p, info in fs.find(root, detail=True).items()
        if info["type"] == "file" and not p.rsplit("/", 1)[-1].startswith(("done-", "progress-"))
    }


def prepare(path: Path, workers: int, input_bytes: int) -> dict[str, dict]:
    res = yaml.safe_load(path.read_text())
    spec = DatasetSpec.model_validate({**res["spec"], "workers": workers})
    folder = spec.output.uri
    out = {}
    before = sizes(folder)
    for stage in preparation.plan(spec):
        cmd = [sys.executable, "-m", "capstan_trainer.prepare", "-f", str(path), "--workers", str(workers)]
        t0 = time.perf_counter()
        procs = [
            subprocess.Popen([*cmd, "--stage", stage.name, "--index", str(i)], stdout=subprocess.DEVNULL)
            for i in range(stage.workers)
        ]
        cpu, peak = waited(procs)
        after = sizes(folder)
        written = sum(n for p, n in after.items() if p not in before)
        read = (
            input_bytes
            if stage.name == "map"
            else sum(n for p, n in before.items() if p.startswith(READS[stage.name]))
        )
        out[stage.name] = {
            "workers": stage.workers,
            "cpu": cpu,
            "wall": time.perf_counter() - t0,
            "peakRss": peak,
            "read": read,
            "written": written,
        }
        before = {**before, **after}
    return out


def baseline_cpu(rev: str, src: str, root: Path) -> float:
    """CPU seconds of the whole preparation at git revision `rev` (e.g. the single-process code
    before the stages), one process, on the same corpus: the speed-up's denominator."""
    tree = root / "baseline-tree"
    subprocess.run(["git", "worktree", "add", "--detach", str(tree), rev], check=True, capture_output=True)
    try:
        pypath = root / "baseline-pypath"
        pypath.mkdir()
        for name, folder in (
            ("capstan_api", "api"),
            ("capstan_operator", "operator"),
            ("capstan_trainer", "trainer"),
        ):
            (pypath / name).symlink_to(tree / folder)
        path = root / "baseline.yaml"
        path.write_text(yaml.safe_dump(resource(src, f"file://{root}/baseline-out")))
        env = {**os.environ, "PYTHONPATH": str(pypath)}
        cmd = [sys.executable, "-m", "capstan_trainer.prepare", "-f", str(path)]
        cpu, _ = waited([subprocess.Popen(cmd, env=env, cwd=root, stdout=subprocess.DEVNULL)])
        return cpu
    finally:
        subprocess.run(["git", "worktree", "remove", "--force", str(tree)], check=True, capture_output=True)


def summarise(stages: dict[str, dict], docs: int, size: int, floor_cpu: float) -> dict:
    total = sum(s["cpu"] for s in stages.values())
    return {
        "stages": {
            name: {
                "workers": s["workers"],
                "docsPerSecPerCore": round(docs / s["cpu"], 1),
                "mbPerSecPerCore": round(size / 1e6 / s["cpu"], 3),
                "cpuShare": round(s["cpu"] / total, 3),
                "peakRssMbPerWorker": round(s["peakRss"] / 2**20, 1),
                "wallSeconds": round(s["wall"], 2),
                "storageReadPerInputByte": round(s["read"] / size, 4),
                "storageWrittenPerInputByte": round(s["written"] / size, 4),
            }
            for name, s in stages.items()
        },
        "endToEnd": {
            "cpuSeconds": round(total, 2),
            "wallSeconds": round(sum(s["wall"] for s in stages.values()), 2),
            "mbPerSecPerCore": round(size / 1e6 / total, 3),
            "docsPerSecPerCore": round(docs / total, 1),
            "floorMbPerSecPerCore": round(size / 1e6 / floor_cpu, 3),
            "ratioToFloor": round(total / floor_cpu, 2),
            "peakRssMbPerWorker": round(max(s["peakRss"] for s in stages.values()) / 2**20, 1),
        },
    }


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a running process (all its threads), from /proc."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def on_s3(s3, root: Path, mb: float, workers: int, size: int, local: dict) -> dict:
    """The same corpus through the same stages with the input and the output in a bucket
    (`s3`: the server and the bucket's URI): wall and CPU seconds against the local run's; the
    stage processes' CPU includes their S3 client's, the server's own is counted apart."""
    server, bucket = s3
    src = f"{bucket}/{mb}/in"
    for f in sorted((root / "in").iterdir()):
        storage.write_bytes(f"{src}/{f.name}", f.read_bytes())
    path = root / "ds-s3.yaml"
    path.write_text(yaml.safe_dump(resource(f"{src}/*.jsonl", f"{bucket}/{mb}/out")))
    server_cpu = cpu_seconds(server.process.pid)
    stages = prepare(path, workers, size)
    server_cpu = cpu_seconds(server.process.pid) - server_cpu
    wall, cpu = sum(s["wall"] for s in stages.values()), sum(s["cpu"] for s in stages.values())
    return {
        "wallSeconds": round(wall, 2),
        "cpuSeconds": round(cpu, 2),
        "serverCpuSeconds": round(server_cpu, 2),
        "wallRatio": round(wall / local["wallSeconds"], 3),
        "cpuRatio": round(cpu / local["cpuSeconds"], 3),
        "cpuRatioWithServer": round((cpu + server_cpu) / local["cpuSeconds"], 3),
        "stageWallRatio": {
            name: round(s["wall"] / local_stage["wallSeconds"], 2)
            for (name, s), local_stage in zip(stages.items(), local["stages"].values(), strict=True)
        },
    }


def main(sizes: list[float], workers: int, baseline_rev: str | None, s3: bool) -> None:
    report: dict = {"workers": workers, "loadAverage": os.getloadavg(), "cpus": os.cpu_count(), "sizes": {}}
    with (
        tempfile.TemporaryDirectory() as tmp,
        s3_server_and_bucket() if s3 else contextlib.nullcontext() as bucket,
    ):
        for i, mb in enumerate(sizes):
            root = Path(tmp) / f"{mb}"
            docs, size = write_corpus(root / "in", mb)
            src = f"file://{root}/in/*.jsonl"
            floor_cpu = floor(src)
            path = root / "ds.yaml"
            path.write_text(yaml.safe_dump(resource(src, f"file://{root}/out")))
            result = summarise(prepare(path, workers, size), docs, size, floor_cpu)
            result.update(documents=docs, megabytes=round(size / 1e6, 1))
            if (
                i == min(1, len(sizes) - 1) and workers > 1
            ):  # the scale-out's cost: the same input in one process
                path.write_text(yaml.safe_dump(resource(src, f"file://{root}/out-1")))
                one = summarise(prepare(path, 1, size), docs, size, floor_cpu)
                result["scaleOutCpuRatio"] = round(
                    result["endToEnd"]["cpuSeconds"] / one["endToEnd"]["cpuSeconds"], 3
                )
            if i == 0 and baseline_rev:
                base = baseline_cpu(baseline_rev, src, root)
                result["baseline"] = {
                    "rev": baseline_rev,
                    "mbPerSecPerCore": round(size / 1e6 / base, 3),
                    "speedUp": round(base / result["endToEnd"]["cpuSeconds"], 2),
                }
            if bucket:
                local = {"stages": result["stages"], **result["endToEnd"]}
                result["s3"] = on_s3(bucket, root, mb, workers, size, local)
            report["sizes"][str(mb)] = result
            print(f"{mb} MB done: {json.dumps(result['endToEnd'])}", file=sys.stderr, flush=True)
    peaks = [r["endToEnd"]["peakRssMbPerWorker"] for r in report["sizes"].values()]
    report["peakRssGrowth"] = round(peaks[-1] / peaks[0], 3)
    report["loadAverageAfter"] = os.getloadavg()
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", type=float, nargs="+", default=[16, 64, 256], help="corpus sizes in MB")
    ap.add_argument("--workers", type=int, default=2, help="workers per parallel stage")
    ap.add_argument("--baseline-rev", help="git revision to time end to end on the first size (one process)")
    ap.add_argument(
        "--s3", action="store_true", help="also run each size with the input and output on S3 (SeaweedFS)"
    )
    a = ap.parse_args()
    main(a.sizes, a.workers, a.baseline_rev, a.s3)
