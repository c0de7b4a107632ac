"""Small models shared by the counting tests and the benchmark (CPU, a few ms per step)."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F


class TinyMLP(nn.Module):
    """16 -> 32 -> 4 with a ReLU; takes [batch, 16]."""

    def __init__(self, d_in: int = 16, d_hidden: int = 32, d_out: int = 4) -> None:
        super().__init__()
        self.fc1 = nn.Linear(d_in, d_hidden)
        self.act = nn.ReLU()
        self.fc2 = nn.Linear(d_hidden, d_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class TinyCNN(nn.Module):
    """conv-bn-relu-pool twice, then a linear head; takes [batch, 3, 16, 16]."""

    def __init__(self, channels: int = 8, classes: int = 10) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, channels, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(channels)
        self.conv2 = nn.Conv2d(channels, 2 * channels, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(2 * channels)
        self.pool = nn.MaxPool2d(2)
        self.head = nn.Linear(2 * channels * 4 * 4, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool(F.relu(self.bn1(self.conv1(x))))
        x = self.pool(F.relu(self.bn2(self.conv2(x))))
        return self.head(x.flatten(1))


class Attention(nn.Module):
    """Multi-head self-attention through ``F.scaled_dot_product_attention``."""

    def __init__(self, dim: int = 32, heads: int = 4, causal: bool = True) -> None:
        super().__init__()
        self.heads = heads
        self.causal = causal
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, d = x.shape
        q, k, v = self.qkv(x).view(b, t, 3, self.heads, d // self.heads).unbind(2)
        y = F.scaled_dot_product_attention(
            q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), is_causal=self.causal
        )
        return self.proj(y.transpose(1, 2).reshape(b, t, d))


class Block(nn.Module):
    """A pre-norm transformer block: attention and a GELU MLP, each with a residual."""

    def __init__(self, dim: int = 32, heads: int = 4) -> None:
        super().__init__()
        self.ln1 = nn.LayerNorm(dim)
        self.attn = Attention(dim, heads)
        self.ln2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, 4 * dim), nn.GELU(), nn.Linear(4 * dim, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.ln1(x))
        return x + self.mlp(self.ln2(x))


class TinyGPT(nn.Module):
    """Token and position embeddings, ``layers`` blocks, a final norm and an LM head.

    Takes int64 token ids [batch, seq] (seq <= 64) and returns logits [batch, seq, vocab].
    """

    def __init__(self, vocab: int = 64, dim: int = 32, heads: int = 4, layers: int = 2) -> None:
        super().__init__()
        self.tok = nn.Embedding(vocab, dim)
        self.pos = nn.Embedding(64, dim)
        self.blocks = nn.ModuleList(Block(dim, heads) for _ in range(layers))
        self.ln = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, vocab, bias=False)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        x = self.tok(idx) + self.pos(torch.arange(idx.shape[1], device=idx.device))
        for block in self.blocks:
            x = block(x)
        return self.head(self.ln(x))


class DropoutMLP(nn.Module):
    """16 -> 32 -> 4 with a ReLU and dropout; takes [batch, 16]."""

    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Dropout(0.5), nn.Linear(32, 4))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def tiny_mlp() -> TinyMLP:
    """A zero-argument factory, for the CLI's MODULE:ATTR form."""
    return TinyMLP()


TINY_MLP = TinyMLP()
"""A module instance, for the CLI's MODULE:ATTR form."""


class ShapeCheckedMLP(TinyMLP):
    """TinyMLP whose forward asserts a [batch, 16] input, as many user models do."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        assert x.dim() == 2, f"expected [batch, 16], got {tuple(x.shape)}"
        return super().forward(x)


class ArgmaxMLP(TinyMLP):
    """TinyMLP that returns class indices: nothing to differentiate."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x).argmax(-1)


def _reject(x: torch.Tensor) -> torch.Tensor:
    raise RuntimeError("user code says no")


class RaisingMLP(TinyMLP):
    """TinyMLP whose forward raises from a helper: the user's own code fails."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _reject(super().forward(x))
