"""Turn a validated TrainingRun spec into what the trainer runs: model shape, data sources and
batch arithmetic. Everything here runs before any process group exists, and every problem is a
`ConfigError` (exit code 3) whose message starts with the field it is about."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass

from capstan_api import modelshape
from capstan_api.common import InvalidResource
from capstan_api.lora import LoraSpec
from capstan_api.objective import DpoSpec, Objective
from capstan_api.training import FsdpSpec, OptimizerSpec
from capstan_api.trainingrun import CheckpointSpec, EvalSpec, MetricsSpec, ResourcesSpec, TrainingRunSpec
from capstan_trainer import checkpoint, shards, storage
from capstan_trainer.model import ModelConfig
from capstan_trainer.train import hfinit, loader


class ConfigError(InvalidResource):
    """A TrainingRun the trainer cannot run; permanent (exit code 3)."""


@dataclass
class Source:
    uri: str
    """uri: the manifest file URI."""
    weight: float
    manifest: shards.Manifest
    train: loader.Split
    validation: loader.Split
    train_mask: loader.Split | None = None
    """train_mask: the loss-mask files over the same tokens (objective sft); None otherwise."""
    validation_mask: loader.Split | None = None

    @property
    def fingerprint(self) -> str:
        """Identity of the data for the order's permutation keys."""
        if self.manifest.fingerprint:
            return self.manifest.fingerprint
        return hashlib.sha256(
            "".join(s.sha256 for s in self.manifest.splits["train"].shards).encode()
        ).hexdigest()


@dataclass
class TrainConfig:
    """A checked TrainingRun: the spec sections the trainer reads, and what `resolve` derived
    (the model shape, the opened sources, the initial checkpoint, the tokenizer)."""

    name: str
    """name: the TrainingRun's name, recorded in each checkpoint's capstan.json."""
    model: ModelConfig
    """model: the architecture: the preset with spec.model's overrides, or the init checkpoint's."""
    optimizer: OptimizerSpec
    """optimizer: spec.optimizer: AdamW, the schedule, batch sizes in tokens, seed, precision."""
    fsdp: FsdpSpec
    """fsdp: spec.fsdp: resharding, activation checkpointing, torch.compile."""
    checkpoint: CheckpointSpec
    """checkpoint: spec.checkpoint: the root URI (never empty here), interval and keepLast."""
    eval: EvalSpec
    """eval: spec.eval: interval (0 = no evaluations), batches and early stopping."""
    metrics: MetricsSpec
    """metrics: spec.metrics: steps between metrics lines and progress.json updates."""
    resources: ResourcesSpec
    """resources: spec.resources as written; the world size running is torchrun's WORLD_SIZE."""
    sources: list[Source]
    """sources: spec.datasets opened, in the spec's order."""
    init_checkpoint: str = ""
    """init_checkpoint: a committed step folder to take the initial weights from ("" = scratch)."""
    replay_from: str = ""
    """replay_from: checkpoint root of a run to replay without removed documents ("" = no replay)."""
    tokenizer_uri: str = ""
    """tokenizer_uri: the first source's tokenizer.json (the HF model's with init_hf), copied into
    each checkpoint."""
    init_hf: str = ""
    """init_hf: a Hugging Face directory to take the initial weights from ("" = none)."""
    stop_ids: list[int] | None = None
    """stop_ids: the HF model's end tokens (generation_config.json), for the export; None without one."""
    uid: str = ""
    """uid: the TrainingRun's metadata.uid ("" without a cluster), recorded as each checkpoint's owner."""
    objective: Objective = "pretrain"
    """objective: spec.objective: pretrain, sft (masked loss, document-masked attention) or dpo."""
    dpo: DpoSpec | None = None
    """dpo: spec.dpo when objective is dpo."""
    planned_gpu_hours: float | None = None
    """planned_gpu_hours: the operator's capacity-plan estimate (None without one, or on CPU)."""
    lora: LoraSpec | None = None
    """lora: spec.lora, adapters on the frozen init weights; None trains every weight."""

    @property
    def fingerprint(self) -> str:
        """The settings that shape training (not its length, schedule or cadence): checkpoints
        made with other ones are another run's."""
        o = self.optimizer
        shape = {
            "model": self.model.to_dict(),
            "data": self.dataset_meta(),
            "batch": [o.global_batch_tokens, o.seq_len],
            "seed": o.seed,
            "init": self.init_checkpoint,
        }
        if self.init_hf:  # only then: the fingerprints of other runs stay what they were
            shape["initHuggingFace"] = self.init_hf
        if self.replay_from:  # only when set: existing runs keep their fingerprint
            shape["replay"] = self.replay_from
        if self.objective != "pretrain":  # absent for pretraining: older checkpoints stay this run's
            shape["objective"] = self.objective
        if self.lora is not None:  # the checkpoints hold adapters of this shape
            shape["lora"] = self.lora.to_wire()
        return hashlib.sha256(json.dumps(shape, sort_keys=True).encode()).hexdigest()[:16]

    @property
    def batch_seqs(self) -> int:
        """Sequences per optimizer step over all processes."""
        return self.optimizer.global_batch_sequences

    def accumulation(self, world: int) -> int:
        """Micro-batches per process per step; checks divisibility with the numbers in the message."""
        o = self.optimizer
        if self.batch_seqs % (o.micro_batch * world):
            raise ConfigError(
                f"spec.optimizer.globalBatchTokens: global batch of {self.batch_seqs} sequences "
                f"({o.global_batch_tokens} tokens / seqLen {o.seq_len}) is not divisible by "
                f"microBatch {o.micro_batch} x world size {world}"
            )
        return self.batch_seqs // (o.micro_batch * world)

    def dataset_meta(self) -> list[dict]:
        return [{"uri": s.uri, "weight": s.weight, "fingerprint": s.fingerprint} for s in self.sources]


def _manifest_uri(uri: str) -> str:
    return uri if uri.endswith(".json") else storage.join(uri, "manifest.json")


def model_config(spec: TrainingRunSpec, vocab_size: int) -> ModelConfig:
    try:
        return modelshape.from_spec(spec.model, vocab_size)
    except ValueError as exc:
        raise ConfigError(f"spec.model: {exc}") from exc


def _open_source(
    i: int,
    entry,
    need_validation: bool,
    check_storage: bool,
    checksums: bool = False,
    objective: Objective = "pretrain",
) -> Source:
    where = f"spec.datasets[{i}]"
    if entry.dataset_ref and not entry.uri:
        raise ConfigError(
            f"{where}.datasetRef: {entry.dataset_ref!r} is not resolved to a manifest URI; the operator "
            "does that, or set uri to run without a cluster"
        )
    uri = _manifest_uri(entry.uri)
    try:
        manifest = shards.read_manifest(uri)
    except (OSError, ValueError) as exc:  # missing object, unreachable endpoint, bad JSON
        raise ConfigError(f"{where}.uri: cannot read the manifest {uri}: {exc}") from exc
    train = loader.open_split(uri, manifest, "train")
    validation = loader.open_split(uri, manifest, "validation")
    if need_validation and validation.total < 2:
        raise ConfigError(f"{where}.uri: {uri} has no validation split, but spec.eval.intervalSteps is set")
    if check_storage:
        for split in (train, validation):
            try:
                loader.check_shards(split)
            except (OSError, ValueError) as exc:
                raise ConfigError(f"{where}.uri: {exc}") from exc
    if checksums:
        try:
            shards.verify_checksums(uri, manifest)
        except (OSError, ValueError) as exc:
            raise ConfigError(f"{where}.uri: {exc}") from exc
    src = Source(uri, entry.weight, manifest, train, validation)
    if objective == "sft" and manifest.loss_mask in ("", "pairs"):
        raise ConfigError(
            f"{where}.uri: objective sft needs a chat Dataset (format: chat), whose shards carry a "
            f"loss mask; {uri} has {'preference pairs' if manifest.loss_mask else 'none'}"
        )
    if objective == "dpo" and manifest.loss_mask != "pairs":
        raise ConfigError(
            f"{where}.uri: objective dpo needs a preference Dataset (format: preference); {uri} is not one"
        )
    if objective != "pretrain":
        src.train_mask = loader.open_split(uri, manifest, "train", mask=True)
        src.validation_mask = loader.open_split(uri, manifest, "validation", mask=True)
        if check_storage:
            for split in (src.train_mask, src.validation_mask):
                try:
                    loader.check_shards(split)
                except (OSError, ValueError) as exc:
                    raise ConfigError(f"{where}.uri: {exc}") from exc
    return src


def _check_writable(uri: str) -> None:
    """The checkpoint root's bucket (or local parent) exists and answers."""
    fs, path = storage.filesystem(uri)
    probe = path.split("/", 1)[0] if uri.startswith(("s3://", "s3a://")) else path
    try:
        if uri.startswith(("s3://", "s3a://")):
            fs.ls(probe)
        else:
            fs.makedirs(probe, exist_ok=True)
    except (OSError, ValueError) as exc:
        raise ConfigError(f"spec.checkpoint.uri: cannot reach {uri}: {exc}") from exc


def resolve(
    spec: TrainingRunSpec,
    name: str = "trainingrun",
    check_storage: bool = True,
    checksums: bool = False,
    uid: str = "",
) -> TrainConfig:
    """Everything the trainer needs, checked; raises ConfigError naming the field. `checksums`
    also reads every shard against the manifest's sha256 (`--validate-only` does)."""
    if not spec.checkpoint.uri:
        raise ConfigError(
            "spec.checkpoint.uri: required to run the trainer (checkpoints and progress.json go there)"
        )
    if spec.init.from_training_run and not spec.init.checkpoint_uri:
        raise ConfigError(
            f"spec.init.fromTrainingRun: {spec.init.from_training_run!r} is not resolved to a checkpoint URI; "
            "the operator does that, or set init.checkpointUri"
        )
    if spec.init.replay_without and not spec.init.replay_from:
        raise ConfigError(
            f"spec.init.replayWithout: {spec.init.replay_without!r} is not resolved to a checkpoint root; "
            "the operator does that, or set init.replayFrom"
        )
    need_val = spec.eval.interval_steps > 0
    if spec.objective == "dpo" and len(spec.datasets) > 1:
        raise ConfigError(
            f"spec.datasets: objective dpo takes one preference Dataset, got {len(spec.datasets)}"
        )
    sources = [
        _open_source(i, e, need_val, check_storage, checksums, spec.objective)
        for i, e in enumerate(spec.datasets)
    ]
    toks = {s.manifest.tokenizer.get("sha256", "") for s in sources}
    if len(toks) > 1:
        raise ConfigError(
            "spec.datasets: the sources were tokenized with different tokenizers (sha256 differ)"
        )
    vocab = max(s.manifest.vocab_size for s in sources)
    seq_len = spec.optimizer.seq_len
    init = ""
    if spec.init.hugging_face:
        try:
            model = hfinit.model_config(spec)
        except hfinit.HfInitError as exc:
            raise ConfigError(str(exc)) from exc
    elif spec.init.checkpoint_uri:
        try:
            folder = checkpoint.resolve(spec.init.checkpoint_uri)
            model = checkpoint.model_config_from_meta(checkpoint.read_meta(folder.uri))
        except (OSError, ValueError, KeyError) as exc:
            raise ConfigError(f"spec.init.checkpointUri: {exc}") from exc
        init = folder.uri
    elif spec.init.replay_from:  # the replayed run's shape: its checkpoints load into no other
        try:
            meta = checkpoint.read_meta(checkpoint.resolve(spec.init.replay_from).uri)
            model = checkpoint.model_config_from_meta(meta)
        except (OSError, ValueError, KeyError) as exc:
            raise ConfigError(f"spec.init.replayFrom: {exc}") from exc
    else:
        model = model_config(spec, vocab)
    if model.vocab_size < vocab:
        where = (
            f"{hfinit.FIELD}: config.json vocab_size" if spec.init.hugging_face else "spec.model.vocabSize:"
        )
        raise ConfigError(f"{where} {model.vocab_size} is smaller than the datasets' vocabulary {vocab}")
    if seq_len > model.max_seq_len:
        raise ConfigError(
            f"spec.optimizer.seqLen: {seq_len} exceeds the model's maxSeqLen {model.max_seq_len}"
        )
    windows = [s.train.windows(seq_len) for s in sources]
    for i, n in enumerate(windows):
        if n < 1:
            raise ConfigError(
                f"spec.datasets[{i}].uri: fewer than seqLen + 1 = {seq_len + 1} training tokens"
            )
    try:
        loader.SequenceOrder(windows, [s.weight for s in sources], [s.fingerprint for s in sources], 0)
    except ValueError as exc:
        raise ConfigError(f"spec.datasets: {exc}") from exc
    if check_storage:
        _check_writable(spec.checkpoint.uri)
    tok_path = sources[0].manifest.tokenizer.get("path", "tokenizer.json")
    tok_uri = storage.join(sources[0].uri.rsplit("/", 1)[0], tok_path)
    stops = None
    if spec.init.hugging_face:
        first = sources[0]
        try:
            tok_uri = hfinit.tokenizer_uri(spec, first.manifest.tokenizer.get("sha256", ""), first.uri)
            if check_storage:
                hfinit.check_weights(spec.init.hugging_face)
        except hfinit.HfInitError as exc:
            raise ConfigError(str(exc)) from exc
        stops = hfinit.stop_ids(spec.init.hugging_face)
    return TrainConfig(
        name=name,
        model=model,
        optimizer=spec.optimizer,
        fsdp=spec.fsdp,
        checkpoint=spec.checkpoint,
        eval=spec.eval,
        metrics=spec.metrics,
        resources=spec.resources,
        sources=sources,
        init_checkpoint=init,
        replay_from=spec.init.replay_from or "",
        tokenizer_uri=tok_uri,
        init_hf=spec.init.hugging_face,
        stop_ids=stops,
        uid=uid,
        objective=spec.objective,
        dpo=spec.dpo if spec.objective == "dpo" else None,
        lora=spec.lora,
    )
