from capstan_operator.config import OperatorConfig
from capstan_operator.identity import needs_service_account, service_account

CFG = OperatorConfig(
    workload_service_account="capstan-workload",
    workload_service_account_create=True,
    workload_service_account_annotations={"eks.amazonaws.com/role-arn": "arn:aws:iam::1:role/w"},
)


def body(spec: dict) -> dict:
    return {"metadata": {"name": "r", "namespace": "team-a"}, "spec": spec}


def test_the_default_workload_service_account_is_made_with_its_annotations():
    sa = service_account("team-a", CFG)
    assert sa["metadata"]["name"] == "capstan-workload" and sa["metadata"]["namespace"] == "team-a"
    assert sa["metadata"]["annotations"] == {"eks.amazonaws.com/role-arn": "arn:aws:iam::1:role/w"}
    assert "ownerReferences" not in sa["metadata"]  # shared by the namespace: outlives any resource


def test_only_when_asked_and_only_for_pods_that_run_as_it():
    assert needs_service_account(body({}), CFG)
    assert not needs_service_account(body({"serviceAccountName": "mine"}), CFG)
    assert not needs_service_account(body({}), OperatorConfig(workload_service_account="capstan-workload"))
    off = OperatorConfig(workload_service_account="", workload_service_account_create=True)
    assert not needs_service_account(body({}), off)  # the namespace's default needs no making


def test_config_from_the_chart_environment():
    cfg = OperatorConfig.from_env(
        {
            "CAPSTAN_WORKLOAD_SERVICE_ACCOUNT": "w",
            "CAPSTAN_WORKLOAD_SERVICE_ACCOUNT_CREATE": "true",
            "CAPSTAN_WORKLOAD_SERVICE_ACCOUNT_ANNOTATIONS": '{"a": "b"}',
        }
    )
    assert (cfg.workload_service_account_create, cfg.workload_service_account_annotations) == (
        True,
        {"a": "b"},
    )
