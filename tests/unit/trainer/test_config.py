"""The TrainingRun API model and the trainer's start-up checks: bad configs fail fast (exit 3)
with a message naming the field, before any process group exists."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from pydantic import ValidationError

from capstan_api.common import describe_validation_error
from capstan_api.trainingrun import TrainingRunSpec
from capstan_trainer import synthetic
from capstan_trainer.train import train
from tests.unit.trainer.helpers import run_resource, write_resource


def errors(spec: dict) -> str:
    with pytest.raises(ValidationError) as exc:
        TrainingRunSpec.model_validate(spec)
    return describe_validation_error(exc.value, "spec")


def test_minimal_spec_gets_defaults():
    spec = TrainingRunSpec.model_validate({"datasets": [{"datasetRef": "web"}]})
    wire = spec.to_wire()
    assert wire["model"]["preset"] == "125m" and wire["optimizer"]["precision"] == "auto"
    assert wire["scheduling"]["scheduler"] == "native" and wire["suspend"] is False
    assert wire["resources"]["minNodes"] == 1 and wire["failurePolicy"]["maxRestarts"] == 3


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ({"datasets": []}, "spec.datasets: List should have at least 1 item"),
        (
            {"datasets": [{"datasetRef": "a", "uri": "s3://b/m"}]},
            "spec.datasets[0]: Value error, exactly one of",
        ),
        ({"datasets": [{}]}, "spec.datasets[0]: Value error, exactly one of"),
        ({"datasets": [{"uri": "s3://data/x", "weight": 0}]}, "spec.datasets[0].weight"),
        ({"datasets": [{"uri": "s3://data/x"}], "model": {"preset": "9b"}}, "spec.model.preset"),
        (
            {"datasets": [{"uri": "s3://data/x"}], "optimizer": {"globalBatchTokens": 1000}},
            "spec.optimizer: Value error, globalBatchTokens must be divisible",
        ),
        ({"datasets": [{"uri": "s3://data/x"}], "optimizer": {"minLr": 1}}, "minLr must not exceed lr"),
        (
            {"datasets": [{"uri": "s3://data/x"}], "optimizer": {"warmupSteps": 10, "totalSteps": 10}},
            "warmupSteps must be less",
        ),
        (
            {"datasets": [{"uri": "s3://data/x"}], "resources": {"minNodes": 3, "maxNodes": 2}},
            "spec.resources: Value error, minNodes must not exceed maxNodes",
        ),
        (
            {"datasets": [{"uri": "s3://data/x"}], "scheduling": {"scheduler": "kueue"}},
            "queueName is required",
        ),
        (
            {
                "datasets": [{"uri": "s3://data/x"}],
                "init": {"checkpointUri": "s3://ckpt/a", "fromTrainingRun": "b"},
            },
            "at most one of",
        ),
        (
            {
                "datasets": [{"uri": "s3://data/x"}],
                "init": {"fromTrainingRun": "b", "huggingFace": "s3://models/llama"},
            },
            "at most one of checkpointUri, fromTrainingRun, huggingFace, replayWithout or replayFrom may be set",
        ),
        ({"datasets": [{"uri": "s3://data/x"}], "optimizr": {}}, "spec.optimizr: unknown field"),
        (
            {
                "datasets": [{"uri": "s3://data/x"}],
                "optimizer": {"globalBatchTokens": 8 * 2048 * 6},
                "resources": {"minNodes": 1, "maxNodes": 4, "nprocPerNode": 1},
            },
            "not divisible by microBatch 8 x world size 4 at 4 nodes",
        ),
    ],
)
def test_invalid_specs_name_the_field(spec, expected):
    assert expected in errors(spec)


def test_cross_field_rules_are_also_cel():
    schema = json.dumps(TrainingRunSpec.model_json_schema())
    for message in (
        "exactly one of datasetRef or uri must be set",
        "globalBatchTokens must be divisible by microBatch x seqLen",
        "minNodes must not exceed maxNodes",
        "queueName is required when scheduler is kueue",
        "at most one of checkpointUri, fromTrainingRun, huggingFace, replayWithout or replayFrom may be set",
        "global batch sequences must be divisible by microBatch x world size at every node count",
    ):
        assert message in schema, message


@pytest.fixture(scope="module")
def local_data(tmp_path_factory) -> str:
    uri = f"file://{tmp_path_factory.mktemp('data')}"
    synthetic.write_dataset(uri, train_tokens=10_000, validation_tokens=2_000)
    return uri


def validate(tmp_path, resource, capsys) -> tuple[int, str]:
    path = write_resource(tmp_path / "run.yaml", resource)
    code = train.main(["--validate-only", "-f", str(path)])
    return code, capsys.readouterr().err


def test_valid_config_passes(tmp_path, local_data, capsys):
    code, err = validate(tmp_path, run_resource(local_data, f"file://{tmp_path}/ck"), capsys)
    assert code == 0, err


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        ({"model": {"preset": "nano"}}, "spec.model.preset"),
        ({"optimizer": {"globalBatchTokens": 200}}, "globalBatchTokens must be divisible"),
        ({"resources": {"nprocPerNode": 3}}, "world size 3"),
        (
            {"optimizer": {"seqLen": 512, "globalBatchTokens": 2048}},
            "spec.optimizer.seqLen: 512 exceeds the model's maxSeqLen 256",
        ),
        ({"datasets": [{"datasetRef": "web"}]}, "spec.datasets[0].datasetRef: 'web' is not resolved"),
        ({"init": {"fromTrainingRun": "base"}}, "spec.init.fromTrainingRun"),
        (
            {"init": {"checkpointUri": "file:///nonexistent/ck"}},
            "spec.init.checkpointUri: file:///nonexistent/ck: no committed",
        ),
        ({"checkpoint": {"uri": ""}}, "spec.checkpoint.uri: required"),
    ],
)
def test_bad_config_exits_3_naming_the_field(tmp_path, local_data, capsys, overrides, expected):
    code, err = validate(tmp_path, run_resource(local_data, f"file://{tmp_path}/ck", **overrides), capsys)
    assert code == 3
    assert expected in err


def test_missing_data_uri(tmp_path, capsys):
    code, err = validate(
        tmp_path, run_resource(f"file://{tmp_path}/nothing", f"file://{tmp_path}/ck"), capsys
    )
    assert code == 3 and "spec.datasets[0].uri: cannot read the manifest" in err


def test_truncated_shard_is_caught(tmp_path, capsys):
    synthetic.write_dataset(str(tmp_path / "d"), train_tokens=5_000, validation_tokens=1_000)
    shard = tmp_path / "d" / "train-00000.bin"
    shard.write_bytes(shard.read_bytes()[:100])
    code, err = validate(tmp_path, run_resource(f"file://{tmp_path}/d", f"file://{tmp_path}/ck"), capsys)
    assert code == 3 and "spec.datasets[0].uri:" in err and "expected 10000 bytes" in err


def test_changed_shard_fails_its_checksum_naming_the_shard(tmp_path, capsys):
    synthetic.write_dataset(str(tmp_path / "d"), train_tokens=5_000, validation_tokens=1_000)
    shard = tmp_path / "d" / "validation-00000.bin"
    data = bytearray(shard.read_bytes())
    data[10] ^= 0xFF  # same size: only the checksum can tell
    shard.write_bytes(bytes(data))
    code, err = validate(tmp_path, run_resource(f"file://{tmp_path}/d", f"file://{tmp_path}/ck"), capsys)
    assert code == 3
    assert f"spec.datasets[0].uri: file://{shard}: sha256" in err and "differs from the manifest" in err


def test_unreachable_storage(tmp_path, local_data, capsys, s3_server):
    # An S3 bucket that does not exist, on a live endpoint; and data on it.
    code, err = validate(tmp_path, run_resource(local_data, "s3://no-such-bucket-capstan/run"), capsys)
    assert code == 3 and "spec.checkpoint.uri: cannot reach s3://no-such-bucket-capstan/run" in err
    code, err = validate(
        tmp_path, run_resource("s3://no-such-bucket-capstan/d", f"file://{tmp_path}/ck"), capsys
    )
    assert code == 3 and "spec.datasets[0].uri: cannot read the manifest" in err


def test_entrypoint_exits_3_before_any_process_group(tmp_path, local_data):
    """Without --validate-only and without torchrun: the world-size check fails first."""
    resource = run_resource(
        local_data, f"file://{tmp_path}/ck", optimizer={"globalBatchTokens": 192, "microBatch": 3}
    )
    path = write_resource(tmp_path / "run.yaml", resource)
    env_free = {
        "PATH": "/usr/bin:/bin",
        **{k: v for k, v in __import__("os").environ.items() if k == "PYTHONPATH"},
    }
    proc = subprocess.run(
        [sys.executable, "-m", "capstan_trainer.train", "-f", str(path)],
        capture_output=True,
        text=True,
        timeout=120,
        env={**env_free, "WORLD_SIZE": "4", "RANK": "0"},
    )
    assert proc.returncode == 3, proc.stderr[-2000:]
    assert "spec.optimizer.globalBatchTokens: global batch of 6 sequences" in proc.stderr
    assert "world size 4" in proc.stderr and "init_process_group" not in proc.stderr
