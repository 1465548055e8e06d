"""A small, faithful Falcon (new decoder architecture) in plain torch, plus bf16 safetensors I/O.

Mirrors Hugging Face `modeling_falcon.py` for the Falcon-40B/180B style that Harpia targets:
  * two LayerNorms per block (`ln_attn`, `ln_mlp`, with bias) feeding attention and MLP in parallel,
    output = attention + mlp + residual;
  * fused QKV laid out PER KV GROUP: for each of the `num_kv_heads` groups, its
    `num_attention_heads / num_kv_heads` query heads, then one key head, then one value head;
  * NeoX rotary embedding (rotate_half over the two halves of each head) with `rope_theta`;
  * exact (erf) GELU MLP with 4 * hidden, no linear biases (`bias: false`), no ALiBi;
  * final `ln_f`, LM head tied to the word embeddings.

Runs with Debian's python3-torch (1.13); no transformers / safetensors package needed: the safetensors
format (u64 little-endian header length, JSON header, raw little-endian data) is read and written here.
"""

import json
import math
import struct
from dataclasses import dataclass, asdict

import torch
import torch.nn as nn
import torch.nn.functional as F


@dataclass
class FalconConfig:
    vocab_size: int = 8192
    hidden_size: int = 256
    num_hidden_layers: int = 6
    num_attention_heads: int = 8
    num_kv_heads: int = 2
    layer_norm_epsilon: float = 1e-5
    rope_theta: float = 10000.0
    max_position_embeddings: int = 2048
    hidden_dropout: float = 0.0  # training only; HF applies it to (attention + mlp) before the residual add

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_attention_heads

    @staticmethod
    def from_hf(cfg: dict) -> "FalconConfig":
        if cfg.get("model_type") != "falcon":
            raise ValueError(f"config.json: model_type must be 'falcon', got {cfg.get('model_type')!r}")
        for key, want in (("new_decoder_architecture", True), ("parallel_attn", True), ("bias", False), ("alibi", False)):
            if cfg.get(key) != want:
                raise ValueError(f"config.json: {key} must be {want}, got {cfg.get(key)!r}")
        return FalconConfig(
            vocab_size=cfg["vocab_size"],
            hidden_size=cfg["hidden_size"],
            num_hidden_layers=cfg["num_hidden_layers"],
            num_attention_heads=cfg["num_attention_heads"],
            num_kv_heads=cfg["num_kv_heads"],
            layer_norm_epsilon=cfg.get("layer_norm_epsilon", 1e-5),
            rope_theta=cfg.get("rope_theta", 10000.0),
            max_position_embeddings=cfg.get("max_position_embeddings", 2048),
        )

    def to_hf(self) -> dict:
        return {
            "alibi": False,
            "architectures": ["FalconForCausalLM"],
            "attention_dropout": 0.0,
            "bias": False,
            "bos_token_id": 11,
            "eos_token_id": 11,
            "hidden_dropout": 0.0,
            "hidden_size": self.hidden_size,
            "initializer_range": 0.02,
            "layer_norm_epsilon": self.layer_norm_epsilon,
            "max_position_embeddings": self.max_position_embeddings,
            "model_type": "falcon",
            "multi_query": True,
            "new_decoder_architecture": True,
            "num_attention_heads": self.num_attention_heads,
            "num_hidden_layers": self.num_hidden_layers,
            "num_kv_heads": self.num_kv_heads,
            "parallel_attn": True,
            "rope_scaling": None,
            "rope_theta": self.rope_theta,
            "tie_word_embeddings": True,
            "torch_dtype": "bfloat16",
            "use_cache": True,
            "vocab_size": self.vocab_size,
        }


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


class FalconRotary(nn.Module):
    """NeoX-style rotary: angle(pos, i) = pos * theta^(-2i/d), applied to halves [0, d/2) and [d/2, d)."""

    def __init__(self, head_dim: int, theta: float):
        super().__init__()
        inv_freq = 1.0 / (theta ** (torch.arange(0, head_dim, 2, dtype=torch.float64) / head_dim))
        self.register_buffer("inv_freq", inv_freq, persistent=False)

    def forward(self, q: torch.Tensor, k: torch.Tensor, positions: torch.Tensor):
        # q, k: [B, heads, T, d]; positions: [T]
        freqs = positions.to(torch.float64)[:, None] * self.inv_freq[None, :]
        emb = torch.cat((freqs, freqs), dim=-1)
        cos, sin = emb.cos().to(q.dtype), emb.sin().to(q.dtype)
        return q * cos + rotate_half(q) * sin, k * cos + rotate_half(k) * sin


class FalconAttention(nn.Module):
    def __init__(self, cfg: FalconConfig):
        super().__init__()
        self.num_heads = cfg.num_attention_heads
        self.num_kv = cfg.num_kv_heads
        if self.num_heads % self.num_kv != 0:
            raise ValueError("num_attention_heads must be a multiple of num_kv_heads")
        self.head_dim = cfg.head_dim
        qkv_out = (self.num_heads + 2 * self.num_kv) * self.head_dim
        self.query_key_value = nn.Linear(cfg.hidden_size, qkv_out, bias=False)
        self.dense = nn.Linear(cfg.hidden_size, cfg.hidden_size, bias=False)
        self.rotary = FalconRotary(self.head_dim, cfg.rope_theta)

    def forward(self, x: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        B, T, _ = x.shape
        q_per_kv = self.num_heads // self.num_kv
        # Fused QKV, per KV group: [q_0 .. q_{g-1}, k, v] (HF new_decoder_architecture layout).
        qkv = self.query_key_value(x).view(B, T, self.num_kv, q_per_kv + 2, self.head_dim)
        q = qkv[:, :, :, :q_per_kv].reshape(B, T, self.num_heads, self.head_dim)
        k = qkv[:, :, :, q_per_kv]  # [B, T, kv, d]
        v = qkv[:, :, :, q_per_kv + 1]
        q = q.transpose(1, 2)  # [B, H, T, d]
        k = k.transpose(1, 2)  # [B, KV, T, d]
        v = v.transpose(1, 2)
        q, k = self.rotary(q, k, positions)
        # Query head h = g * q_per_kv + j reads KV group g.
        k = k.repeat_interleave(q_per_kv, dim=1)
        v = v.repeat_interleave(q_per_kv, dim=1)
        scores = (q @ k.transpose(-1, -2)) / math.sqrt(self.head_dim)
        causal = torch.ones(T, T, dtype=torch.bool, device=x.device).triu(1)
        scores = scores.masked_fill(causal, float("-inf"))
        attn = scores.softmax(dim=-1) @ v  # [B, H, T, d]
        return self.dense(attn.transpose(1, 2).reshape(B, T, -1))


class FalconMLP(nn.Module):
    def __init__(self, cfg: FalconConfig):
        super().__init__()
        self.dense_h_to_4h = nn.Linear(cfg.hidden_size, 4 * cfg.hidden_size, bias=False)
        self.dense_4h_to_h = nn.Linear(4 * cfg.hidden_size, cfg.hidden_size, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dense_4h_to_h(F.gelu(self.dense_h_to_4h(x)))  # exact erf GELU, as HF Falcon


class FalconDecoderLayer(nn.Module):
    def __init__(self, cfg: FalconConfig):
        super().__init__()
        self.ln_attn = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_epsilon)
        self.ln_mlp = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_epsilon)
        self.self_attention = FalconAttention(cfg)
        self.mlp = FalconMLP(cfg)
        self.hidden_dropout = cfg.hidden_dropout

    def forward(self, h: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        attn = self.self_attention(self.ln_attn(h), positions)
        mlp = self.mlp(self.ln_mlp(h))
        return h + F.dropout(attn + mlp, p=self.hidden_dropout, training=self.training)


class FalconModel(nn.Module):
    def __init__(self, cfg: FalconConfig):
        super().__init__()
        self.word_embeddings = nn.Embedding(cfg.vocab_size, cfg.hidden_size)
        self.h = nn.ModuleList([FalconDecoderLayer(cfg) for _ in range(cfg.num_hidden_layers)])
        self.ln_f = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_epsilon)


class FalconForCausalLM(nn.Module):
    def __init__(self, cfg: FalconConfig):
        super().__init__()
        self.cfg = cfg
        self.transformer = FalconModel(cfg)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        T = ids.shape[1]
        positions = torch.arange(T, device=ids.device)
        h = self.transformer.word_embeddings(ids)
        for layer in self.transformer.h:
            h = layer(h, positions)
        h = self.transformer.ln_f(h)
        return h @ self.transformer.word_embeddings.weight.t()  # tied lm_head

    def init_weights(self, std: float = 0.02):
        for name, p in self.named_parameters():
            if name.endswith("ln_attn.weight") or name.endswith("ln_mlp.weight") or name.endswith("ln_f.weight"):
                nn.init.ones_(p)
            elif name.endswith(".bias"):
                nn.init.zeros_(p)
            else:
                nn.init.normal_(p, mean=0.0, std=std)
        # GPT-2 style: scale the projections that write into the residual stream by depth.
        for layer in self.transformer.h:
            for lin in (layer.self_attention.dense, layer.mlp.dense_4h_to_h):
                nn.init.normal_(lin.weight, mean=0.0, std=std / math.sqrt(2 * self.cfg.num_hidden_layers))

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())


# ---------------------------------------------------------------------------------------------
# safetensors I/O (bf16 / f32 / f16), no external dependency.

_DTYPES = {"BF16": (torch.bfloat16, 2), "F16": (torch.float16, 2), "F32": (torch.float32, 4)}


def read_safetensors(path: str) -> dict:
    with open(path, "rb") as f:
        raw = f.read()
    if len(raw) < 8:
        raise ValueError(f"{path}: too short for a safetensors file")
    (n,) = struct.unpack("<Q", raw[:8])
    if n > len(raw) - 8:
        raise ValueError(f"{path}: header length {n} exceeds file size")
    header = json.loads(raw[8 : 8 + n])
    data = raw[8 + n :]
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        dtype, size = _DTYPES[info["dtype"]]
        start, end = info["data_offsets"]
        count = math.prod(info["shape"]) if info["shape"] else 1
        if end - start != count * size or end > len(data):
            raise ValueError(f"{path}: tensor {name} has inconsistent offsets")
        t = torch.frombuffer(bytearray(data[start:end]), dtype=dtype).reshape(info["shape"])
        out[name] = t
    return out


def write_safetensors(path: str, tensors: dict, metadata: dict | None = None):
    header = {}
    blobs = []
    offset = 0
    names = sorted(tensors)
    for name in names:
        t = tensors[name].contiguous()
        dt = {torch.bfloat16: "BF16", torch.float16: "F16", torch.float32: "F32"}[t.dtype]
        # bytes of the tensor in little-endian (x86 native) order
        b = t.view(torch.int16 if t.element_size() == 2 else torch.int32).numpy().tobytes()
        header[name] = {"dtype": dt, "shape": list(t.shape), "data_offsets": [offset, offset + len(b)]}
        blobs.append(b)
        offset += len(b)
    header["__metadata__"] = metadata or {"format": "pt"}
    hjson = json.dumps(header, separators=(",", ":")).encode()
    hjson += b" " * ((8 - len(hjson) % 8) % 8)  # align data to 8 bytes
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(hjson)))
        f.write(hjson)
        for b in blobs:
            f.write(b)


def load_hf_dir(model_dir: str, dtype=torch.float32) -> FalconForCausalLM:
    import os

    with open(os.path.join(model_dir, "config.json")) as f:
        cfg = FalconConfig.from_hf(json.load(f))
    index = os.path.join(model_dir, "model.safetensors.index.json")
    tensors = {}
    if os.path.exists(index):
        with open(index) as f:
            files = sorted(set(json.load(f)["weight_map"].values()))
    else:
        files = ["model.safetensors"]
    for fn in files:
        tensors.update(read_safetensors(os.path.join(model_dir, fn)))
    model = FalconForCausalLM(cfg)
    state = {k: v.to(dtype) for k, v in tensors.items() if k != "lm_head.weight"}
    missing, unexpected = model.load_state_dict(state, strict=False)
    missing = [m for m in missing]
    if missing or unexpected:
        raise ValueError(f"{model_dir}: missing tensors {missing}, unexpected tensors {unexpected}")
    return model.to(dtype)
