"""A decoder-only LM cut in two at a layer: the frozen lower part, computed once per prompt and
cached (the shared service's ``hidden`` call), and the upper part, run (and LoRA-trained) where
it is needed.

Both halves call the model's own modules in the model's own order (token embedding, rotary
position table, causal mask, decoder layers, final norm), so ``upper(lower(ids))`` is the full
model's last hidden state up to float rounding. Rows are right-padded and positions count from
0 in every row, as the full model computes them; padding never changes a real token's state.
Only Llama-style decoders (``embed_tokens``, ``layers``, ``rotary_emb``, ``norm``: Llama,
SmolLM, Qwen, Mistral) can be cut; others fail with one line naming ``llm.model``.
"""

from __future__ import annotations

from typing import Any

import torch

from ..errors import ConfigError

PARTS = ("embed_tokens", "layers", "rotary_emb", "norm")


def decoder(net: Any) -> Any:
    """The transformer body of a plain or PEFT-wrapped causal LM, checked to be cuttable."""
    base = net.get_base_model() if hasattr(net, "get_base_model") else net
    body = base.get_decoder() if hasattr(base, "get_decoder") else base
    missing = [p for p in PARTS if not hasattr(body, p)]
    if missing:
        raise ConfigError(f"llm.model: {type(base).__name__} is not a Llama-style decoder "
                          f"(no {', '.join(missing)}); its layers cannot be cut and cached")
    return body


def n_layers(net: Any) -> int:
    return len(decoder(net).layers)


def check_layer(net: Any, layer: int) -> int:
    total = n_layers(net)
    if not 0 < layer < total:
        raise ConfigError(f"hidden states after layer {layer}: the model has {total} layers "
                          f"(cut between 1 and {total - 1})")
    return total


def run_layers(body: Any, hidden: torch.Tensor, mask: torch.Tensor, start: int,
               stop: int) -> torch.Tensor:
    """``hidden`` (B, T, d) through ``body.layers[start:stop]`` with the model's causal mask
    and rotary positions for right-padded rows (``mask`` (B, T), 1 = real token)."""
    from transformers.masking_utils import create_causal_mask

    pos = torch.arange(hidden.shape[1], device=hidden.device).unsqueeze(0)
    causal = create_causal_mask(config=body.config, inputs_embeds=hidden, attention_mask=mask,
                                past_key_values=None, position_ids=pos)
    rotary = body.rotary_emb(hidden, position_ids=pos)
    for layer in body.layers[start:stop]:
        hidden = layer(hidden, attention_mask=causal, position_embeddings=rotary,
                       position_ids=pos)
    return hidden


def lower(body: Any, ids: torch.Tensor, mask: torch.Tensor, layer: int) -> torch.Tensor:
    """Residual stream entering layer ``layer`` (the output of layers 0..layer-1)."""
    return run_layers(body, body.embed_tokens(ids), mask, 0, layer)


def upper(body: Any, hidden: torch.Tensor, mask: torch.Tensor, layer: int) -> torch.Tensor:
    """The last hidden state (after the final norm) from the stream entering ``layer``."""
    return body.norm(run_layers(body, hidden, mask, layer, len(body.layers)))


def upper_at(body: Any, hidden: torch.Tensor, mask: torch.Tensor, layer: int,
             cols: torch.Tensor) -> torch.Tensor:
    """``upper(...)`` at the tokens ``cols`` (B, R) only -> (B, R, d).

    Every layer but the last must run at every token (later tokens read their keys and
    values); the last layer's queries, attention output and MLP are needed only where the
    answer is read, so they run there (keys and values still at every token): the same
    numbers as ``upper`` for those tokens, at a fraction of the last layer's cost."""
    last = len(body.layers) - 1
    if layer < last:
        hidden = run_layers(body, hidden, mask, layer, last)
    pos = torch.arange(hidden.shape[1], device=hidden.device).unsqueeze(0)
    cos, sin = body.rotary_emb(hidden, position_ids=pos)  # (1, T, head_dim)
    return body.norm(_last_layer_at(body.layers[last], hidden, mask, cols, cos[0], sin[0]))


def _rotate_half(x: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


def _last_layer_at(layer: Any, hidden: torch.Tensor, mask: torch.Tensor, cols: torch.Tensor,
                   cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """A Llama decoder layer (pre-norm attention + MLP, rotary, grouped KV heads) evaluated
    at query tokens ``cols`` only; written from the layer's own modules (LoRA inside)."""
    from torch.nn import functional as F

    attn = layer.self_attn
    n, t = hidden.shape[:2]
    r = cols.shape[1]
    rows = torch.arange(n, device=hidden.device)[:, None]
    x = layer.input_layernorm(hidden)
    hd = attn.head_dim
    q = attn.q_proj(x[rows, cols]).view(n, r, -1, hd).transpose(1, 2)  # (B, H, R, hd)
    k = attn.k_proj(x).view(n, t, -1, hd).transpose(1, 2)  # (B, Hkv, T, hd)
    v = attn.v_proj(x).view(n, t, -1, hd).transpose(1, 2)
    q = q * cos[cols][:, None] + _rotate_half(q) * sin[cols][:, None]
    k = k * cos[None, None] + _rotate_half(k) * sin[None, None]
    groups = q.shape[1] // k.shape[1]
    k, v = k.repeat_interleave(groups, dim=1), v.repeat_interleave(groups, dim=1)
    keys = torch.arange(t, device=hidden.device)
    allowed = (keys[None, None, :] <= cols[:, :, None]) & mask.bool()[:, None, :]
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=allowed[:, None], scale=attn.scaling)
    h = hidden[rows, cols] + attn.o_proj(out.transpose(1, 2).reshape(n, r, -1))
    return h + layer.mlp(layer.post_attention_layernorm(h))
