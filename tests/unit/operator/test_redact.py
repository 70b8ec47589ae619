"""Log tails copied into status and Events lose the credentials a workload printed."""

from __future__ import annotations

from capstan_operator.jobs import pod_failure
from capstan_operator.redact import scrub
from tests.unit.operator.fake_kube import FakeKube, fake_kube

__all__ = ["fake_kube"]  # fixture

LOG = """\
botocore: AWS_SECRET_ACCESS_KEY=wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY region=us-east-1
{"aws_access_key_id": "AKIAIOSFODNN7EXAMPLE", "step": 3}
GET https://admin:hunter22@minio.local/bucket -> 403
Authorization: Bearer eyJhbGciOiJIUzI1NiJ9.e30.abc
password: s3cr3t
RuntimeError: loss is nan at step 3
"""


def test_secrets_in_a_log_tail_are_masked_and_the_rest_kept():
    out = scrub(LOG)
    for secret in ("wJalrXUtnFEMI", "AKIAIOSFODNN7EXAMPLE", "hunter22", "eyJhbGci", "s3cr3t"):
        assert secret not in out, (secret, out)
    assert "AWS_SECRET_ACCESS_KEY=***" in out and "https://admin:***@minio.local/bucket -> 403" in out
    assert "region=us-east-1" in out and "RuntimeError: loss is nan at step 3" in out


def test_session_tokens_signatures_and_prefixed_tokens_are_masked():
    log = (
        "aws_session_token = IQoJb3JpZ2luX2VjEHwaCXVzLWVhc3QtMSJHMEUCIQD\n"
        "token on its own FwoGZXIvYXdzEBYaDHhZ2dEXAMPLETOKENabc\n"
        "GET https://b.s3.amazonaws.com/k?X-Amz-Credential=AKIAIOSFODNN7EXAMPLE%2F&X-Amz-Signature=0a1b2c3d4e&x=1\n"
        "gcs: ya29.a0AfH6SMBexampletokenvalue123 hf: hf_abcdefghijklmnopqrstuvwxyz12\n"
        "step 7 loss 2.31\n"
    )
    out = scrub(log)
    for secret in (
        "IQoJb3JpZ2lu",
        "FwoGZXIvYXdz",
        "0a1b2c3d4e",
        "ya29.a0",
        "hf_abcdef",
        "AKIAIOSFODNN7EXAMPLE",
    ):
        assert secret not in out, (secret, out)
    assert "X-Amz-Signature=***&x=1" in out and "step 7 loss 2.31" in out


def test_a_failed_pods_message_carries_the_scrubbed_tail(fake_kube: FakeKube):
    pod = {
        "metadata": {"name": "p", "namespace": "ns"},
        "status": {"containerStatuses": [{"name": "c", "state": {"terminated": {"exitCode": 1}}}]},
    }
    fake_kube.logs["p"] = LOG
    _, msg = pod_failure(pod)
    assert "exited with code 1" in msg and "s3cr3t" not in msg and "password: ***" in msg
