"""Copy a Hugging Face export folder from object storage to a local directory.

    python -m capstan_trainer.fetch --uri URI --out DIR

The init container of a vLLM serving pod: vLLM loads a local folder the same way whatever the
storage, and this reads it with the credentials and endpoint every workload uses. The folder's
plain files are copied (an export is flat); a folder the operator exported must carry its EXPORTED
marker, and any folder needs config.json, or the pod fails here naming what is missing.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

from capstan_api import exitcodes, files
from capstan_trainer import storage


def fetch(uri: str, out: str) -> list[str]:
    """Copy the files of `uri` into `out`; returns their names. FileNotFoundError when the
    folder is not a whole export."""
    fs, path = storage.filesystem(uri)
    fs.invalidate_cache(path)
    entries = fs.ls(path, detail=True) if fs.exists(path) else []
    names = {e["name"].rstrip("/").rsplit("/", 1)[-1]: e["name"] for e in entries if e["type"] == "file"}
    # The operator's export of a step folder counts only whole (its marker is written last).
    from_step = files.step_of(uri.rstrip("/").removesuffix("/" + files.EXPORT_DIR)) is not None
    if from_step and files.EXPORT_MARKER not in names:
        raise FileNotFoundError(f"{uri}: no {files.EXPORT_MARKER} marker (the export is not complete)")
    if "config.json" not in names:
        raise FileNotFoundError(f"{uri}: no config.json (not a Hugging Face export)")
    os.makedirs(out, exist_ok=True)
    for name, remote in sorted(names.items()):
        fs.get_file(remote, os.path.join(out, name))  # streamed: the weights never sit in memory
    return sorted(names)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="capstan_trainer.fetch", description=__doc__.splitlines()[0])
    p.add_argument("--uri", required=True, help="export folder (path or fsspec URI)")
    p.add_argument("--out", required=True, help="local directory to copy into")
    a = p.parse_args(argv)
    start = time.monotonic()
    try:
        names = fetch(a.uri, a.out)
    except FileNotFoundError as exc:
        print(f"--uri: {exc}", file=sys.stderr)
        return exitcodes.INVALID_CONFIG
    size = sum(os.path.getsize(os.path.join(a.out, n)) for n in names)
    print(
        json.dumps(
            {"uri": a.uri, "files": names, "bytes": size, "seconds": round(time.monotonic() - start, 1)}
        )
    )
    return exitcodes.OK


if __name__ == "__main__":
    raise SystemExit(main())
