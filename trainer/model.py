"""Llama-style decoder: RMSNorm, rotary embeddings (Hugging Face rotate-half layout, so the HF
export needs no permutation), SwiGLU MLP and grouped-query attention through
scaled_dot_product_attention. Model only: no distributed code here."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

# The shape lives in the API package (no torch) so the operator can size runs; re-exported here.
from capstan_api.modelshape import PRESETS, ModelConfig, RopeScaling, preset  # noqa: F401


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Normalise in fp32 as HF Llama does, then cast back.
        h = x.float()
        h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * h.to(x.dtype)

    def reset_parameters(self) -> None:
        nn.init.ones_(self.weight)


def rope_tables(
    head_dim: int, seq_len: int, theta: float, device=None, scaling: RopeScaling | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    inv_freq = 1.0 / (theta ** (torch.arange(0, head_dim, 2, device=device, dtype=torch.float32) / head_dim))
    if scaling is not None:
        inv_freq = llama3_scaled(inv_freq, scaling)
    t = torch.arange(seq_len, device=device, dtype=torch.float32)
    freqs = torch.outer(t, inv_freq)  # (T, hd/2)
    emb = torch.cat([freqs, freqs], dim=-1)  # (T, hd) in rotate-half layout
    return emb.cos(), emb.sin()


def llama3_scaled(inv_freq: torch.Tensor, s: RopeScaling) -> torch.Tensor:
    """Llama 3 RoPE scaling: frequencies whose wavelength exceeds the pre-training context / low
    factor are divided by `factor`; those below context / high factor are kept; in between, a
    linear blend in context / wavelength."""
    ctx = s.original_max_position_embeddings
    wavelen = 2 * math.pi / inv_freq
    slow = wavelen > ctx / s.low_freq_factor
    fast = wavelen < ctx / s.high_freq_factor
    smooth = (ctx / wavelen - s.low_freq_factor) / (s.high_freq_factor - s.low_freq_factor)
    blended = (1 - smooth) * inv_freq / s.factor + smooth * inv_freq
    return torch.where(slow, inv_freq / s.factor, torch.where(fast, inv_freq, blended))


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat([-x2, x1], dim=-1)


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    # x: (B, H, T, hd); cos/sin: (T, hd)
    return (x * cos + rotate_half(x) * sin).to(x.dtype)


class Attention(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.n_heads, self.n_kv_heads, self.head_dim = cfg.n_heads, cfg.n_kv_heads, cfg.head_dim
        self.q_proj = nn.Linear(cfg.dim, cfg.n_heads * cfg.head_dim, bias=False)
        self.k_proj = nn.Linear(cfg.dim, cfg.n_kv_heads * cfg.head_dim, bias=False)
        self.v_proj = nn.Linear(cfg.dim, cfg.n_kv_heads * cfg.head_dim, bias=False)
        self.o_proj = nn.Linear(cfg.n_heads * cfg.head_dim, cfg.dim, bias=False)

    def forward(
        self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        B, T, _ = x.shape
        q = self.q_proj(x).view(B, T, self.n_heads, self.head_dim).transpose(1, 2)  # (B, H, T, hd)
        k = self.k_proj(x).view(B, T, self.n_kv_heads, self.head_dim).transpose(1, 2)  # (B, Hkv, T, hd)
        v = self.v_proj(x).view(B, T, self.n_kv_heads, self.head_dim).transpose(1, 2)
        q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        gqa = self.n_kv_heads != self.n_heads
        if mask is None:
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=gqa)
        else:  # mask: (B, 1, T, T), True where attention is allowed
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, enable_gqa=gqa)
        return self.o_proj(y.transpose(1, 2).reshape(B, T, -1))  # (B, T, C)


class MLP(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.gate_proj = nn.Linear(cfg.dim, cfg.ffn_dim, bias=False)
        self.up_proj = nn.Linear(cfg.dim, cfg.ffn_dim, bias=False)
        self.down_proj = nn.Linear(cfg.ffn_dim, cfg.dim, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class Block(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.input_layernorm = RMSNorm(cfg.dim, cfg.norm_eps)
        self.self_attn = Attention(cfg)
        self.post_attention_layernorm = RMSNorm(cfg.dim, cfg.norm_eps)
        self.mlp = MLP(cfg)

    def forward(
        self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        x = x + self.self_attn(self.input_layernorm(x), cos, sin, mask)
        return x + self.mlp(self.post_attention_layernorm(x))


class Transformer(nn.Module):
    """Parameter names follow HF's LlamaForCausalLM minus the `model.` prefix."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        cfg.validate()
        self.cfg = cfg
        self.embed_tokens = nn.Embedding(cfg.vocab_size, cfg.dim)
        self.layers = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layers))
        self.norm = RMSNorm(cfg.dim, cfg.norm_eps)
        self.lm_head = nn.Linear(cfg.dim, cfg.vocab_size, bias=False)
        self.tie_weights()
        # Rotary tables are buffers, not parameters, and are rebuilt after meta init.
        self.register_buffer("rope_cos", torch.empty(0), persistent=False)
        self.register_buffer("rope_sin", torch.empty(0), persistent=False)

    def tie_weights(self) -> None:
        """Share the output projection with the embedding. `to_empty` unties them (it replaces each
        module's parameters separately), so call this again after it on an unsharded model."""
        if self.cfg.tie_embeddings:
            self.lm_head.weight = self.embed_tokens.weight

    @torch.no_grad()
    def init_weights(self, seed: int | None = None) -> None:
        """Initialise in place (after `to_empty` when built on the meta device)."""
        gen = torch.Generator().manual_seed(seed) if seed is not None else None
        std = self.cfg.init_std
        out_std = std / math.sqrt(2 * self.cfg.n_layers)  # scaled residual projections (GPT-2)
        for name, p in self.named_parameters():
            if name.endswith("norm.weight") or name.endswith("layernorm.weight"):
                p.fill_(1.0)
            elif name.endswith(("o_proj.weight", "down_proj.weight")):
                _normal_(p, out_std, gen)
            else:
                _normal_(p, std, gen)
        self.init_rope()

    def init_rope(self, device=None) -> None:
        device = device or self.embed_tokens.weight.device
        c = self.cfg
        cos, sin = rope_tables(c.head_dim, c.max_seq_len, c.rope_theta, device=device, scaling=c.rope_scaling)
        self.rope_cos, self.rope_sin = cos, sin

    def forward(self, tokens: torch.Tensor, docs: torch.Tensor | None = None) -> torch.Tensor:
        """Logits (B, T, V). With `docs` ((B, T) document index per token) a token attends only to
        earlier tokens of its own document, so packed documents never see each other. Positions
        are not reset: RoPE makes attention depend only on the distance between tokens, which
        the document mask keeps inside one document, so a document scores the same anywhere."""
        T = tokens.shape[1]
        if self.cfg.max_seq_len < T:
            raise ValueError(f"sequence length {T} exceeds model.maxSeqLen {self.cfg.max_seq_len}")
        if self.rope_cos.numel() == 0 or self.rope_cos.device != tokens.device:
            self.init_rope(tokens.device)
        cos, sin = self.rope_cos[:T], self.rope_sin[:T]
        mask = None
        if docs is not None:
            causal = torch.ones(T, T, dtype=torch.bool, device=tokens.device).tril()
            mask = (docs[:, :, None] == docs[:, None, :]) & causal  # (B, T, T)
            mask = mask[:, None]  # (B, 1, T, T): the same for every head
        h = self.embed_tokens(tokens)  # (B, T, C)
        for layer in self.layers:
            h = layer(h, cos, sin, mask)
        return self.lm_head(self.norm(h))  # (B, T, V)


def _normal_(p: torch.Tensor, std: float, gen: torch.Generator | None) -> None:
    if gen is None or p.device.type != "cpu" or hasattr(p, "placements"):
        nn.init.normal_(p, 0.0, std)
    else:
        p.copy_(torch.randn(p.shape, generator=gen, dtype=torch.float32).mul_(std).to(p.dtype))
