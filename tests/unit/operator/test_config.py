"""The operator's configuration from CAPSTAN_* variables: what the chart sets."""

from __future__ import annotations

from capstan_api.network import listen_address
from capstan_operator.config import OperatorConfig


def test_servers_listen_everywhere_in_a_pod_and_on_their_own_loopback_address_locally():
    # A pod with its own network namespace: port-forward dials localhost inside it.
    assert listen_address("10.2.3.4") == "0.0.0.0" and listen_address("fd00::5") == "0.0.0.0"
    assert listen_address(None) == listen_address("") == listen_address("not-an-ip") == "0.0.0.0"
    # The local cluster: pods share the host's network, each on its own 127.x address.
    assert listen_address("127.31.0.7") == "127.31.0.7"
    assert OperatorConfig.from_env({"POD_IP": "10.0.0.9"}).bind_address == "0.0.0.0"
    assert OperatorConfig.from_env({"POD_IP": "127.9.0.2"}).bind_address == "127.9.0.2"
    assert (
        OperatorConfig.from_env({"CAPSTAN_BIND_ADDRESS": "127.0.0.1", "POD_IP": "10.0.0.9"}).bind_address
        == "127.0.0.1"
    )


def test_the_chart_settable_workload_defaults():
    cfg = OperatorConfig.from_env(
        {
            "CAPSTAN_WORKLOAD_SERVICE_ACCOUNT": "capstan-workload",
            "CAPSTAN_S3_SECRET": "s3",
            "CAPSTAN_ARTIFACT_URI": "s3://team/capstan",
        }
    )
    assert (cfg.workload_service_account, cfg.s3_secret, cfg.artifact_uri) == (
        "capstan-workload",
        "s3",
        "s3://team/capstan",
    )
