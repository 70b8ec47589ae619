"""objective dpo on a generated preference set (which colour each thing is): held-out preference
accuracy rises to >= 0.9, the frozen reference is untouched, and the trainer reports DPO's
figures (TRL's rewards/chosen, rejected, margins, accuracies) in its lines and progress.json."""

from __future__ import annotations

import json
import math

import pytest
import torch
import torch.distributed as dist
from torch.distributed.device_mesh import init_device_mesh

from capstan_api import exitcodes
from capstan_api.common import parse_spec
from capstan_api.trainingrun import TrainingRunSpec
from capstan_trainer import shards, storage
from capstan_trainer.train import dpo, pairs
from capstan_trainer.train.config import ConfigError, resolve
from capstan_trainer.train.step import build_model, build_optimizer
from capstan_trainer.train.train import open_loader
from tests.unit.trainer.chat_data import prepare_chat
from tests.unit.trainer.helpers import run_resource, single_process, torchrun, write_resource

# 16 pairs a step of 32-token sequences; lr and beta high enough for a tiny model to learn fast.
OPTIMIZER = {
    "globalBatchTokens": 512,
    "seqLen": 32,
    "microBatch": 8,
    "lr": 1e-2,
    "minLr": 1e-3,
    "warmupSteps": 2,
}


@pytest.fixture(scope="module")
def prefs(tmp_path_factory) -> str:
    return prepare_chat(tmp_path_factory.mktemp("pref"), n=400, fmt="preference")


def dpo_resource(data: str, ckpt: str, steps: int, **over) -> dict:
    res = run_resource(data, ckpt, optimizer={**OPTIMIZER, "totalSteps": steps}, **over)
    res["spec"].update(objective="dpo", dpo={"beta": 0.5}, resources={"nprocPerNode": 1})
    return res


def test_preference_dataset_holds_pairs_with_loss_on_the_answers(prefs):
    m = shards.read_manifest(prefs)
    assert m.loss_mask == "pairs" and m.splits["train"].documents == 360
    folder = prefs.removeprefix("file://")
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(f"{folder}/tokenizer.json")
    src_uri = f"{prefs}/manifest.json"
    from capstan_trainer.train import loader

    pset = pairs.PairSet.open(
        loader.open_split(src_uri, m, "train"), loader.open_split(src_uri, m, "train", mask=True)
    )
    b = pset.batch([0], 32, m.eos_id)
    answers = [tok.decode(b.y[r][b.weight[r] > 0].tolist(), skip_special_tokens=False) for r in (0, 1)]
    colours = {"red", "blue", "green", "white"}
    assert all(
        a.endswith("<|end_of_text|>") and a.removesuffix("<|end_of_text|>") in colours for a in answers
    )
    assert answers[0] != answers[1]  # chosen, then rejected


def test_objectives_refuse_the_other_kind_of_dataset(prefs, tmp_path):
    res = dpo_resource(prefs, f"file://{tmp_path}/ck", 4)
    res["spec"]["objective"] = "sft"
    with pytest.raises(
        ConfigError, match=r"spec.datasets\[0\].uri: objective sft needs a chat Dataset .* preference pairs"
    ):
        resolve(parse_spec(TrainingRunSpec, res, "TrainingRun"))


@pytest.fixture
def one_process_group():
    dist.init_process_group("gloo", store=dist.HashStore(), rank=0, world_size=1)
    yield init_device_mesh("cpu", (1,))
    dist.destroy_process_group()


def test_held_out_accuracy_rises_and_the_reference_stays_unchanged(prefs, tmp_path, one_process_group):
    cfg = resolve(
        parse_spec(TrainingRunSpec, dpo_resource(prefs, f"file://{tmp_path}/ck", 80), "TrainingRun")
    )
    cpu = torch.device("cpu")
    model, _ = build_model(cfg.model, cfg.optimizer, cfg.fsdp, one_process_group, cpu)
    optimizer = build_optimizer(model, cfg.optimizer)
    ref = dpo.reference_model(cfg, one_process_group, cpu)
    src = cfg.sources[0]
    held_out = pairs.PairSet.open(src.validation, src.validation_mask)
    assert held_out.pairs >= 30
    cfg.eval.batches = held_out.pairs  # every held-out pair

    def ref_logps() -> torch.Tensor:
        with torch.no_grad():
            b = held_out.batch(list(range(held_out.pairs)), cfg.optimizer.seq_len, src.manifest.eos_id)
            return dpo.sequence_logps(ref, b, cpu)

    weights_before = {k: v.clone() for k, v in ref.state_dict().items()}
    logps_before = ref_logps()
    before = dpo.evaluate(model, ref, cfg, held_out, 0, 1, cpu)
    assert (
        before["rewardsAccuracy"] == 0.0 and before["rewardsMargin"] == 0.0
    )  # the policy starts as the reference
    data = open_loader(cfg, 0, 1, 0)
    for _ in range(80):  # 25 was at the edge: 0.8-1.0 with the data order (its fingerprint has the paths)
        dpo.dpo_step(model, ref, optimizer, data.step_batches(), data.accum, 1.0, cpu, cfg.dpo.beta)
    after = dpo.evaluate(model, ref, cfg, held_out, 0, 1, cpu)
    assert after["rewardsAccuracy"] >= 0.9, after
    assert after["rewardsMargin"] > 0 and after["rewardsChosen"] > after["rewardsRejected"]
    assert all(torch.equal(v, weights_before[k]) for k, v in ref.state_dict().items())
    assert torch.equal(ref_logps(), logps_before)
    assert all(not p.requires_grad for p in ref.parameters())


def test_trainer_reports_dpo_figures(prefs, tmp_path):
    root = f"file://{tmp_path}/ck"
    res = dpo_resource(prefs, root, 12, eval={"intervalSteps": 6, "batches": 3})
    result = single_process(write_resource(tmp_path / "run.yaml", res))
    assert result.returncode == exitcodes.OK, result.stderr[-4000:]
    assert result.events("start")[0]["objective"] == "dpo"
    steps = result.events("step")
    assert [s["step"] for s in steps] == list(range(1, 13))
    first = steps[0]
    # Step 1's pairs are scored before its update: policy == reference, so every reward is 0.
    assert (
        first["rewardsChosen"],
        first["rewardsRejected"],
        first["rewardsMargin"],
        first["rewardsAccuracy"],
    ) == (0, 0, 0, 0)
    # Every step line carries TRL's figures, consistent with each other (that DPO learns is the
    # 80-step held-out test's: a single step's margin after 12 steps is noise).
    for s in steps:
        assert s["rewardsMargin"] == pytest.approx(s["rewardsChosen"] - s["rewardsRejected"], abs=1e-5), s
        assert 0 <= s["rewardsAccuracy"] <= 1, s
    evals = result.events("eval")
    assert [e["step"] for e in evals] == [6, 12] and all("evalRewardsAccuracy" in e for e in evals)
    progress = json.loads(storage.read_bytes(f"{root}/progress.json"))
    assert progress["phase"] == "Succeeded"
    figs = progress["dpo"]
    assert set(figs) == {
        "rewardsChosen",
        "rewardsRejected",
        "rewardsMargin",
        "rewardsAccuracy",
        "evalRewardsAccuracy",
    }
    assert figs["evalRewardsAccuracy"] == evals[-1]["evalRewardsAccuracy"]
    assert progress["evalLoss"] == evals[-1]["evalLoss"]


def test_two_ranks_resume_exactly_with_the_reference_rebuilt_from_the_init(prefs, tmp_path):
    """FSDP2 over 2 gloo ranks: step 1's loss is log 2 (the sharded reference equals the policy's
    init), and a worker killed after step 4 restarts from step 3 with the same losses: the
    reference is rebuilt from the init, not from the policy's checkpoint."""
    results = []
    for name, env, restarts in (("a", None, 0), ("b", {"CAPSTAN_FAULT_KILL_STEPS": "4"}, 1)):
        res = dpo_resource(prefs, f"file://{tmp_path}/{name}", 6, checkpoint={"intervalSteps": 3})
        res["spec"]["resources"] = {"nprocPerNode": 2}
        result = torchrun(
            write_resource(tmp_path / f"{name}.yaml", res), nproc=2, max_restarts=restarts, env=env
        )
        assert result.returncode == exitcodes.OK, result.stderr[-4000:]
        results.append(result)
    baseline, crashed = results
    assert abs(baseline.losses()[1] - math.log(2)) < 1e-6
    assert [s["step"] for s in crashed.events("start")] == [0, 3]
    assert crashed.losses() == baseline.losses()
