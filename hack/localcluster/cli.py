"""`python -m hack.localcluster up|down|status` (what `make cluster-up/-down` run)."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from hack.localcluster.cluster import Cluster, ClusterOptions

ROOT = Path(__file__).resolve().parents[2]


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
    p.add_argument("--no-s3", action="store_true", help="do not start the moto S3 server")
    args = p.parse_args(argv)
    cluster = Cluster(
        ClusterOptions(
            root=args.root,
            bin_dir=ROOT / ".capstan" / "bin",
            nodes=args.nodes,
            gpus_per_node=args.gpus_per_node,
            simulate=args.simulate,
            s3=not args.no_s3,
        )
    )
    if args.command == "up":
        start = time.monotonic()
        cluster.up()
        print(f"cluster up in {time.monotonic() - start:.1f} s")
        print(f"  export KUBECONFIG={cluster.kubeconfig}")
        if cluster.options.s3:
            print(f"  S3 endpoint and credentials: {cluster.s3_env_file}")
    elif args.command == "down":
        stopped = cluster.down()
        print(f"cluster down: stopped {stopped} processes")
    else:
        ok = cluster.healthy()
        print("running" if ok else "not running")
        sys.exit(0 if ok else 1)
