"""A temporal attention processor that materialises (or overrides) softmax(QK^T).

Used by evaluate.py to time an attack step with every temporal map in memory, and for the oracle
"what if the temporal attention were uniform" measurement (perfect Vid-Freeze-style suppression).
"""

from __future__ import annotations

import torch


class TemporalAttnProcessor:
    """Plain attention for `temporal_transformer_blocks[*].attn1`, with the maps in the open.

    mode "store": keep each map (B*HW*heads, F, F) in `self.maps` (with grad, for attacks).
    mode "uniform": replace every map by 1/F, so every frame gets the mean of the values.
    mode "identity": replace every map by the identity, so no frame sees any other.
    """

    def __init__(self, mode: str = "store"):
        if mode not in ("store", "uniform", "identity"):
            raise ValueError(f"mode must be 'store', 'uniform' or 'identity', got {mode!r}")
        self.mode = mode
        self.maps: list[torch.Tensor] = []

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, temb=None):
        # hidden_states: (B*H*W, F, C): each spatial position attends over the frames
        query = attn.head_to_batch_dim(attn.to_q(hidden_states))  # (B*HW*heads, F, d)
        key = attn.head_to_batch_dim(attn.to_k(hidden_states))
        value = attn.head_to_batch_dim(attn.to_v(hidden_states))
        if self.mode == "uniform":
            n = key.shape[1]
            probs = torch.full((query.shape[0], query.shape[1], n), 1.0 / n, dtype=value.dtype, device=value.device)
        elif self.mode == "identity":
            n = key.shape[1]
            probs = torch.eye(n, dtype=value.dtype, device=value.device).expand(query.shape[0], n, n)
        else:
            probs = attn.get_attention_scores(query, key, None)  # (B*HW*heads, F, F)
            self.maps.append(probs)
        out = attn.batch_to_head_dim(torch.bmm(probs, value))
        return attn.to_out[1](attn.to_out[0](out))


def set_temporal_processor(unet, processor) -> None:
    """Swap only the temporal self-attention processors; every other key keeps its own."""
    procs = {}
    for name, proc in unet.attn_processors.items():
        procs[name] = processor if ("temporal_transformer_blocks" in name and "attn1" in name) else proc
    unet.set_attn_processor(procs)
