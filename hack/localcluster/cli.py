"""`python -m hack.localcluster up|down|status` (what `make cluster-up/-down` run)."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from hack.localcluster.cluster import Cluster, ClusterOptions

ROOT = Path(__file__).resolve().parents[2]
IMAGES = ("capstan/operator:0.1.0", "capstan/trainer:0.1.0")
"""IMAGES that `make images` pushes, pulled before the nodes are Ready."""


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m hack.localcluster")
    p.add_argument("command", choices=["up", "down", "status"])
    p.add_argument(
        "--root",
        type=Path,
        default=ROOT / ".capstan",
        help="folder for kubeconfig, s3.env and the cluster's state (default .capstan)",
    )
    p.add_argument("--nodes", type=int, default=2, help="simulated GPU nodes the node agent registers")
    p.add_argument("--gpus-per-node", type=int, default=4)
    p.add_argument("--simulate", action="store_true", help="mark pods Running without starting processes")
    p.add_argument("--no-s3", action="store_true", help="do not start the S3 server (SeaweedFS)")
    p.add_argument("--no-prometheus", action="store_true", help="do not start Prometheus")
    p.add_argument(
        "--from-venv",
        action="store_true",
        help="run pods from the project's virtualenv instead of their images (no registry)",
    )
    p.add_argument(
        "--kueue",
        action="store_true",
        help="also install Kueue (CRDs, webhooks on loopback) and run its manager (make install builds it)",
    )
    args = p.parse_args(argv)
    state = ROOT / ".capstan"
    cluster = Cluster(
        ClusterOptions(
            root=args.root,
            bin_dir=ROOT / ".capstan" / "bin",
            nodes=args.nodes,
            gpus_per_node=args.gpus_per_node,
            simulate=args.simulate,
            s3=not args.no_s3,
            prometheus=not args.no_prometheus,
            registry_storage=None if args.from_venv else state / "registry",
            image_store=None if args.from_venv else state / "nodeimages",
            prepull=() if args.from_venv else IMAGES,
        )
    )
    if args.command == "up":
        start = time.monotonic()
        cluster.up()
        print(f"cluster up in {time.monotonic() - start:.1f} s")
        print(f"  export KUBECONFIG={cluster.kubeconfig}")
        if cluster.options.s3:
            print(f"  S3 endpoint and credentials: {cluster.s3_env_file}")
        if cluster.options.prometheus and cluster.prometheus_file.exists():  # absent: started before it
            print(f"  Prometheus: {cluster.prometheus_file.read_text().strip()}")
        if args.kueue:
            print(f"  Kueue: {start_kueue(cluster)}")
        if cluster.registry_file.exists() and cluster.options.registry_storage:
            print(f"  registry (images from `make images`): {cluster.registry_file.read_text().strip()}")
    elif args.command == "down":
        stopped = cluster.down()
        print(f"cluster down: stopped {stopped} processes")
    else:
        ok = cluster.healthy()
        print("running" if ok else "not running")
        sys.exit(0 if ok else 1)


def start_kueue(cluster: Cluster) -> str:
    """Kueue's manager for this cluster (stopped by `down` with the rest); says where its log is.
    A second `up --kueue` finds it answering and leaves it."""
    from hack.localcluster.kueue import Kueue

    k = Kueue(
        binary=ROOT / ".capstan" / "bin" / "kueue",
        kubeconfig=cluster.kubeconfig,
        pki_dir=cluster.root / "pki",
        work_dir=cluster.state_dir / "kueue",
        env=cluster.marker,
    )
    return k.ensure()
