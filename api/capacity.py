"""A TrainingRun's capacity plan: parameters, FLOPs per token, memory per GPU under FSDP2, tokens/s,
ETA and GPU-hours, from the spec alone (no torch: the operator computes it before any pod, and
`bench/capacity_plan.py` checks the memory model against torch's measured peak).

Memory per process, in bytes, at world size W (one process per GPU), N parameters:
- sharded state: fp32 weights, fp32 gradients and AdamW's two fp32 moments, 16 N / W (FSDP2 keeps
  the fp32 weights sharded and gathers a copy in the compute dtype);
- gathered weights: with mixed precision (bf16) or W > 1 FSDP2 gathers one block at a time, two with
  prefetch, plus the root (embedding, output, final norm), and a block's unsharded fp32 gradient
  before its reduce-scatter; without reshardAfterForward every block stays gathered after forward;
- activations per token and block, a bytes per element (2 in bf16, 4 in fp32), the tensors autograd
  keeps: a (5 dim + 2 kvDim + 4 ffnDim) (norm outputs, q/k/v, attention output and its copy, four
  SwiGLU tensors) + 8 dim (each RMSNorm's fp32 input and output); no seqLen^2 term (fused attention);
  with activationCheckpointing: full, only each block's input (a dim) plus one block recomputed;
- the loss: 12 vocab bytes per token (fp32 log-probabilities, their gradient, the logits' gradient);
- with spec.lora, gradients and AdamW's moments only for the T adapter parameters (4 T / W and
  8 T / W), the frozen N and the T adapters' fp32 weights both sharded; activations as above;
- a fixed allowance on GPU for the CUDA context, NCCL buffers and allocator fragmentation.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from capstan_api import modelshape
from capstan_api.common import ApiModel
from capstan_api.modelshape import ModelConfig
from capstan_api.trainingrun import MAX_NODES, TrainingRunSpec

GIB = 2**30
# Dense bf16 peak FLOP/s per GPU (no sparsity), from the vendors' data sheets. Matched by
# substring of the device name (torch.cuda.get_device_name, or the node's nvidia.com/gpu.product
# label with dashes as spaces); the figure used is named in the metrics and the plan.
PEAK_BF16_FLOPS: dict[str, float] = {
    "H200": 989e12,
    "H100": 989e12,  # SXM; the PCIe card is 756e12 and reports "H100 PCIe"
    "H100 PCIe": 756e12,
    "GH200": 989e12,
    "B200": 2250e12,
    "A100": 312e12,
    "L40S": 362e12,
    "A10G": 70e12,
    "L4": 121e12,
}
GPU_OVERHEAD_BYTES = 1 * GIB  # CUDA context, NCCL buffers, fragmentation: outside the model's tensors
STATE_BYTES_PER_PARAM = 16  # fp32 weights + fp32 gradients + AdamW exp_avg and exp_avg_sq
LOSS_BYTES_PER_VOCAB = 12
# vocabSize 0 takes the tokenizer's size, which the operator does not read: plan with this one.
DEFAULT_VOCAB = 32000


def flops_per_token(cfg: ModelConfig, seq_len: int) -> float:
    """Training FLOPs per token: 6N for the matmuls (N without the embedding lookup) plus
    attention scores and values, 12 * layers * heads * head_dim * seq_len (as torchtitan counts)."""
    n = cfg.num_params(exclude_embeddings=True)
    if cfg.tie_embeddings:  # the tied matrix still does the output projection
        n += cfg.vocab_size * cfg.dim
    return 6 * n + 12 * cfg.n_layers * cfg.n_heads * cfg.head_dim * seq_len


def peak_for(device_name: str) -> tuple[float | None, str]:
    """(peak bf16 FLOP/s, the table entry matched) for a device or product name; (None, why)."""
    name = device_name.replace("-", " ")
    best = max((k for k in PEAK_BF16_FLOPS if k in name), key=len, default=None)
    return (PEAK_BF16_FLOPS[best], best) if best else (None, f"unknown device {device_name}")


class MemoryPlan(ApiModel):
    """Bytes per process (per GPU), in GiB."""

    parameters_gib: float = Field(
        alias="parametersGiB",
        description="parametersGiB: the fp32 weights' shard plus the gathered copies in the compute dtype.",
    )
    gradients_gib: float = Field(
        alias="gradientsGiB",
        description="gradientsGiB: the fp32 gradients' shard plus one block's unsharded gradient.",
    )
    optimizer_gib: float = Field(
        alias="optimizerGiB", description="optimizerGiB: AdamW's two fp32 moments, sharded."
    )
    activations_gib: float = Field(
        alias="activationsGiB",
        description="activationsGiB: saved activations at microBatch x seqLen with the run's "
        "activationCheckpointing, and the loss's.",
    )
    activations_checkpointed_gib: float = Field(
        alias="activationsCheckpointedGiB",
        description="activationsCheckpointedGiB: the same with activationCheckpointing: full.",
    )
    overhead_gib: float = Field(
        alias="overheadGiB",
        description="overheadGiB: CUDA context, NCCL buffers and fragmentation (0 on CPU).",
    )
    total_gib: float = Field(alias="totalGiB", description="totalGiB: what one process needs at its peak.")


class CapacityPlan(ApiModel):
    """What the run needs and how long it takes, estimated from the spec before any pod."""

    vocab_size: int = Field(description="vocabSize planned with (spec.model.vocabSize, else 32000).")
    parameters: int = Field(description="parameters of the model (a tied embedding counted once).")
    non_embedding_parameters: int = Field(
        description="nonEmbeddingParameters: parameters less the embedding (the output projection counts)."
    )
    flops_per_token: float = Field(
        description="flopsPerToken: training FLOPs per token, 6N plus attention at seqLen."
    )
    world_size: int = Field(description="worldSize: trainer processes at maxNodes (maxNodes x nprocPerNode).")
    gpus: int = Field(description="gpus: maxNodes x gpusPerNode; 0 for a CPU run.")
    precision: Literal["bf16", "fp32"] = Field(description="precision of compute (auto resolved).")
    memory: MemoryPlan = Field(description="memory per process (per GPU) at the peak of a step.")
    gpu_memory_gib: float | None = Field(
        alias="gpuMemoryGiB",
        default=None,
        description="gpuMemoryGiB of each GPU (spec.plan.gpuMemoryGiB or the nodes' "
        "nvidia.com/gpu.memory label); absent when unknown.",
    )
    fits: bool | None = Field(
        default=None, description="fits: totalGiB within gpuMemoryGiB; absent when unknown or CPU."
    )
    peak_flops: float | None = Field(
        default=None, description="peakFlops: one GPU's dense bf16 peak; absent on CPU or unknown GPU."
    )
    peak_name: str = Field(default="", description="peakName: the GPU the peak is for, or why none.")
    assumed_mfu: float = Field(description="assumedMfu the throughput is estimated with.")
    tokens: int = Field(description="tokens the run trains on: totalSteps x globalBatchTokens.")
    tokens_per_sec: float | None = Field(
        default=None, description="tokensPerSec estimated: gpus x peak x assumedMfu / flopsPerToken."
    )
    eta_seconds: float | None = Field(default=None, description="etaSeconds: tokens / tokensPerSec.")
    gpu_hours: float | None = Field(default=None, description="gpuHours: gpus x etaSeconds / 3600.")


def _gib(b: float) -> float:
    return round(b / GIB, 2)


def _model(spec: TrainingRunSpec) -> ModelConfig:
    return modelshape.from_spec(spec.model, DEFAULT_VOCAB)


def activation_bytes(cfg: ModelConfig, tokens: int, elem: int, checkpointed: bool) -> float:
    """Saved activations (and the loss's tensors) of one forward over `tokens` tokens."""
    d, kv, f = cfg.dim, cfg.n_kv_heads * cfg.head_dim, cfg.ffn_dim
    block = elem * (5 * d + 2 * kv + 4 * f) + 8 * d
    blocks = cfg.n_layers * elem * d + block if checkpointed else cfg.n_layers * block
    final = 4 * d + elem * d + LOSS_BYTES_PER_VOCAB * cfg.vocab_size
    return tokens * (blocks + final)


def memory_bytes(spec: TrainingRunSpec, cfg: ModelConfig, world: int, gpu: bool) -> dict[str, float]:
    """Bytes per process at world size `world` (see the module docstring), by MemoryPlan field."""
    bf16 = spec.optimizer.precision == "bf16" or (spec.optimizer.precision == "auto" and gpu)
    elem = 2 if bf16 else 4
    n, per_block = cfg.num_params(), cfg.block_params()
    root = n - per_block * cfg.n_layers
    fsdp = world > 1 or bf16  # parallel.fsdp_needed: plain fp32 on one process is not wrapped
    if not fsdp:
        gathered, grad_unsharded = 0.0, 0.0
    elif spec.fsdp.reshard_after_forward:
        gathered, grad_unsharded = elem * (2 * per_block + root), 4 * per_block
    else:
        gathered, grad_unsharded = elem * n, 4 * per_block
    tokens = spec.optimizer.micro_batch * spec.optimizer.seq_len
    full = spec.fsdp.activation_checkpointing == "full"
    adapters = spec.lora.adapter_params(cfg) if spec.lora else 0
    trained = adapters if spec.lora else n  # what has gradients and optimizer state
    if spec.lora and grad_unsharded:
        grad_unsharded = 4 * adapters / cfg.n_layers  # a block's adapters' gradient
    out = {
        "parameters": 4 * (n + adapters) / world + gathered,
        "gradients": 4 * trained / world + grad_unsharded,
        "optimizer": 8 * trained / world,
        "activations": activation_bytes(cfg, tokens, elem, full),
        "activations_checkpointed": activation_bytes(cfg, tokens, elem, True),
        "overhead": GPU_OVERHEAD_BYTES if gpu else 0,
    }
    out["total"] = sum(v for k, v in out.items() if k != "activations_checkpointed")
    return out


def memory(spec: TrainingRunSpec, cfg: ModelConfig, world: int, gpu: bool) -> MemoryPlan:
    """memory_bytes in GiB."""
    return MemoryPlan(**{f"{k}_gib": _gib(v) for k, v in memory_bytes(spec, cfg, world, gpu).items()})


def plan(
    spec: TrainingRunSpec,
    gpu_memory_gib: float | None = None,
    gpu_name: str = "",
    model: ModelConfig | None = None,
) -> CapacityPlan:
    """The capacity plan of `spec` at maxNodes. `gpu_memory_gib` and `gpu_name` (a product name
    such as "NVIDIA-H100-80GB-HBM3") come from spec.plan or the nodes; `model` is the shape when
    spec.model does not give it (init.huggingFace); ValueError for a model shape the trainer
    would refuse too."""
    r, o = spec.resources, spec.optimizer
    cfg = model or _model(spec)
    world, gpus = r.max_nodes * r.nproc_per_node, r.max_nodes * r.gpus_per_node
    gpu = gpus > 0
    gpu_memory_gib = spec.plan.gpu_memory_gib or gpu_memory_gib
    mem = memory(spec, cfg, world, gpu)
    fpt = flops_per_token(cfg, o.seq_len)
    peak, peak_name = (None, "cpu") if not gpu else peak_for(spec.plan.gpu_product or gpu_name or "")
    tokens = o.total_steps * o.global_batch_tokens
    tps = gpus * peak * spec.plan.assumed_mfu / fpt if peak else None
    eta = tokens / tps if tps else None
    bf16 = o.precision == "bf16" or (o.precision == "auto" and gpu)
    return CapacityPlan(
        vocab_size=cfg.vocab_size,
        parameters=cfg.num_params(),
        non_embedding_parameters=cfg.num_params(exclude_embeddings=True),
        flops_per_token=fpt,
        world_size=world,
        gpus=gpus,
        precision="bf16" if bf16 else "fp32",
        memory=mem,
        gpu_memory_gib=round(gpu_memory_gib, 2) if gpu and gpu_memory_gib else None,
        fits=mem.total_gib <= gpu_memory_gib if gpu and gpu_memory_gib else None,
        peak_flops=peak,
        peak_name=peak_name,
        assumed_mfu=spec.plan.assumed_mfu,
        tokens=tokens,
        tokens_per_sec=round(tps, 1) if tps else None,
        eta_seconds=round(eta, 1) if eta else None,
        gpu_hours=round(eta * gpus / 3600, 2) if eta else None,
    )


def refusal(spec: TrainingRunSpec, p: CapacityPlan, model: ModelConfig | None = None) -> str | None:
    """Why the run cannot fit, with the numbers and the remedy; None when it fits or is unknown."""
    if p.fits is not False or p.gpu_memory_gib is None:
        return None
    r, have = spec.resources, p.gpu_memory_gib
    cfg = model or _model(spec)
    remedies = []
    for nodes in range(r.max_nodes + 1, MAX_NODES + 1):
        if memory(spec, cfg, nodes * r.nproc_per_node, True).total_gib <= have:
            remedies.append(f"use {nodes * r.gpus_per_node} GPUs (maxNodes {nodes})")
            break
    if spec.fsdp.activation_checkpointing != "full":
        full = spec.model_copy(
            update={"fsdp": spec.fsdp.model_copy(update={"activation_checkpointing": "full"})}
        )
        if memory(full, cfg, p.world_size, True).total_gib <= have:
            remedies.append("activationCheckpointing: full")
    remedy = " or ".join(remedies) or "lower microBatch or seqLen, or use GPUs with more memory"
    return (
        f"needs {p.memory.total_gib:.1f} GiB per GPU at {p.gpus} GPUs "
        f"(parameters {p.memory.parameters_gib}, gradients {p.memory.gradients_gib}, optimizer "
        f"{p.memory.optimizer_gib}, activations {p.memory.activations_gib}); nodes have "
        f"{_fmt(have)} GiB: {remedy}"
    )


def _fmt(x: float) -> str:
    return f"{x:g}"  # 80, 79.65 (gpuMemoryGiB is rounded to 2 decimals)
