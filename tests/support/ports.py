"""A free loopback port for a process the tests start (the S3 server, the inference server, the
operator's endpoints): the harness's own."""

from hack.localcluster.ports import free_port

__all__ = ["free_port"]
