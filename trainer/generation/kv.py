"""Forward passes with a key/value cache for generation, built from the trainer model's own modules
(the model file stays training-only). Prefill runs exactly the model's forward while storing keys
and values; decode runs one token per sequence against the cached ones.

The cache is one pre-allocated tensor per layer, (slots, kv_heads, max_len, head_dim). The running
batch always occupies slots [0, B) in batch order, so decode attends over a view of the cache
(`k[:B, :, :span]`) and writes each new key/value in place: no gather or concatenation per step.
When a sequence leaves, the engine moves the last sequence into its slot (`move`), one copy per
departure instead of one per step.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from capstan_trainer.model import Transformer, apply_rope


class KVCache:
    def __init__(self, model: Transformer, slots: int, max_len: int):
        cfg = model.cfg
        w = model.embed_tokens.weight
        shape = (slots, cfg.n_kv_heads, max_len, cfg.head_dim)
        self.k = [torch.zeros(shape, device=w.device, dtype=w.dtype) for _ in range(cfg.n_layers)]
        self.v = [torch.zeros(shape, device=w.device, dtype=w.dtype) for _ in range(cfg.n_layers)]
        self.slots, self.max_len = slots, max_len

    def move(self, src: int, dst: int, length: int) -> None:
        """Copy positions [0, length) of slot `src` into slot `dst`."""
        for k, v in zip(self.k, self.v, strict=True):
            k[dst, :, :length] = k[src, :, :length]
            v[dst, :, :length] = v[src, :, :length]


def _qkv(attn, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    B, T, _ = x.shape
    q = attn.q_proj(x).view(B, T, attn.n_heads, attn.head_dim).transpose(1, 2)  # (B, H, T, hd)
    k = attn.k_proj(x).view(B, T, attn.n_kv_heads, attn.head_dim).transpose(1, 2)  # (B, Hkv, T, hd)
    v = attn.v_proj(x).view(B, T, attn.n_kv_heads, attn.head_dim).transpose(1, 2)
    return q, k, v


@torch.inference_mode()
def prefill(model: Transformer, cache: KVCache, tokens: torch.Tensor, first_slot: int) -> torch.Tensor:
    """tokens (B, T), right-padded; fills cache positions [0, T) of slots [first_slot, first_slot+B).
    Returns the final normed hidden states (B, T, C); padding positions hold junk that nothing
    reads (causal)."""
    B, T = tokens.shape
    if model.rope_cos.numel() == 0 or model.rope_cos.device != tokens.device:
        model.init_rope(tokens.device)
    cos, sin = model.rope_cos[:T], model.rope_sin[:T]
    rows = slice(first_slot, first_slot + B)
    h = model.embed_tokens(tokens)  # (B, T, C)
    for i, layer in enumerate(model.layers):
        attn = layer.self_attn
        q, k, v = _qkv(attn, layer.input_layernorm(h))
        q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        cache.k[i][rows, :, :T] = k
        cache.v[i][rows, :, :T] = v
        y = F.scaled_dot_product_attention(
            q, k, v, is_causal=True, enable_gqa=attn.n_kv_heads != attn.n_heads
        )
        h = h + attn.o_proj(y.transpose(1, 2).reshape(B, T, -1))
        h = h + layer.mlp(layer.post_attention_layernorm(h))
    return model.norm(h)


@torch.inference_mode()
def decode(model: Transformer, cache: KVCache, tokens: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
    """One new token for each sequence of the batch in slots [0, B): tokens and pos are (B,); pos
    is where each token sits. Returns logits (B, V)."""
    B = tokens.shape[0]
    span = int(pos.max()) + 1
    rows = torch.arange(B, device=tokens.device)
    cos = model.rope_cos[pos][:, None, None, :]  # (B, 1, 1, hd)
    sin = model.rope_sin[pos][:, None, None, :]
    # Each sequence attends to its own prefix [0, pos]; shorter ones mask the rest of the span.
    mask = (torch.arange(span, device=tokens.device)[None, :] <= pos[:, None])[:, None, None, :]
    h = model.embed_tokens(tokens)[:, None, :]  # (B, 1, C)
    for i, layer in enumerate(model.layers):
        attn = layer.self_attn
        q, k, v = _qkv(attn, layer.input_layernorm(h))
        q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        cache.k[i][rows, :, pos] = k[:, :, 0]  # (B, Hkv, hd) written in place
        cache.v[i][rows, :, pos] = v[:, :, 0]
        y = F.scaled_dot_product_attention(
            q,
            cache.k[i][:B, :, :span],  # (B, Hkv, span, hd): a view, not a copy
            cache.v[i][:B, :, :span],
            attn_mask=mask,
            enable_gqa=attn.n_kv_heads != attn.n_heads,
        )
        h = h + attn.o_proj(y.transpose(1, 2).reshape(B, 1, -1))
        h = h + layer.mlp(layer.post_attention_layernorm(h))
    return model.lm_head(model.norm(h))[:, 0]  # (B, V)
