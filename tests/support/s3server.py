"""A real S3 endpoint on loopback: SeaweedFS (`weed mini`, built by `make install`) in a subprocess."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from hack.localcluster import s3

REPO = Path(__file__).resolve().parents[2]


@dataclass
class S3Server:
    endpoint: str
    process: subprocess.Popen
    data_dir: Path
    owns_data_dir: bool = False
    access_key: str = s3.ACCESS_KEY
    secret_key: str = s3.SECRET_KEY
    region: str = s3.REGION

    @property
    def env(self) -> dict[str, str]:
        return {
            "AWS_ENDPOINT_URL": self.endpoint,
            "AWS_ACCESS_KEY_ID": self.access_key,
            "AWS_SECRET_ACCESS_KEY": self.secret_key,
            "AWS_REGION": self.region,
        }

    def stop(self) -> None:
        s3.stop(self.process)
        if self.owns_data_dir:
            shutil.rmtree(self.data_dir, ignore_errors=True)


def weed_binary() -> Path:
    path = REPO / ".capstan" / "bin" / "weed"
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing: run `make install` (hack/build-seaweedfs.sh)")
    return path


def start_s3(data_dir: Path | None = None, deadline_s: float = 60.0) -> S3Server:
    """A SeaweedFS server whose data (and log, weed.log) lives in `data_dir`; without one, in a
    temporary folder removed by `stop`."""
    owns = data_dir is None
    data_dir = Path(tempfile.mkdtemp(prefix="capstan-s3-")) if owns else data_dir
    try:
        proc, port = s3.start(str(weed_binary()), data_dir / "data", data_dir / "weed.log", deadline_s)
    except BaseException:
        if owns:
            shutil.rmtree(data_dir, ignore_errors=True)
        raise
    return S3Server(endpoint=f"http://127.0.0.1:{port}", process=proc, data_dir=data_dir, owns_data_dir=owns)
