"""The study's workload: its data sets, networks and Lightning module, and one counted step.

Everything is offline: the digits ship with scikit-learn and the CIFAR-shaped set is drawn from
a seeded generator (the study measures energy, not accuracy).
"""

from __future__ import annotations

import copy
import itertools
import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import torch
from lightning.pytorch import LightningModule
from torch import nn
from torch.nn import functional as F
from torch.utils.data import IterableDataset

if TYPE_CHECKING:
    from lightning_to_energy.hardware.specs import HardwareSpec
from lightning_to_energy.study.grid import DATASETS, SAMPLE_SHAPES, StudyConfig

__all__ = [
    "BATCHES_CYCLED",
    "CIFAR_SYNTHETIC_SIZE",
    "LEARNING_RATE",
    "NUM_CLASSES",
    "SEED",
    "CyclingBatches",
    "StudyModel",
    "Tokens",
    "TransformerNet",
    "build_model",
    "build_net",
    "count_step",
    "dataset_tensors",
    "make_batches",
]

SEED = 0
LEARNING_RATE = 1e-3
NUM_CLASSES = 10
CIFAR_SYNTHETIC_SIZE = 2048
BATCHES_CYCLED = 8


# ----------------------------------------------------------------------------------------------
# Data
# ----------------------------------------------------------------------------------------------


def dataset_tensors(name: str) -> tuple[torch.Tensor, torch.Tensor]:
    """The whole data set as float32 images ``[N, C, H, W]`` and int64 labels ``[N]``.

    ``"digits"``: scikit-learn's 1,797 bundled 8x8 digits scaled to [0, 1].
    ``"cifar-synthetic"``: 2,048 3x32x32 images, a class prototype plus noise, drawn from a
    generator seeded with :data:`SEED` (the same tensors on every call and machine).

    Raises:
        ValueError: an unknown data set.
    """
    if name == "digits":
        from sklearn.datasets import load_digits

        digits = load_digits()
        x = torch.tensor(digits.images, dtype=torch.float32).unsqueeze(1) / 16.0
        return x, torch.tensor(digits.target, dtype=torch.long)
    if name == "cifar-synthetic":
        g = torch.Generator().manual_seed(SEED)
        prototypes = torch.randn(NUM_CLASSES, *SAMPLE_SHAPES[name], generator=g)
        y = torch.randint(0, NUM_CLASSES, (CIFAR_SYNTHETIC_SIZE,), generator=g)
        noise = torch.randn(CIFAR_SYNTHETIC_SIZE, *SAMPLE_SHAPES[name], generator=g)
        return prototypes[y] + noise, y
    raise ValueError(f"expected a data set in {DATASETS}, found {name!r}.")


def make_batches(
    config: StudyConfig,
    device: torch.device | str = "cpu",
    *,
    n_batches: int = BATCHES_CYCLED,
    seed: int = SEED,
) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """``n_batches`` distinct ``(x, y)`` batches of ``config``'s shape, already on ``device``.

    Samples are drawn with replacement by a seeded generator, so any batch size works.
    """
    x, y = dataset_tensors(config.dataset)
    g = torch.Generator().manual_seed(seed)
    index = torch.randint(0, x.shape[0], (n_batches, config.batch_size), generator=g)
    return [(x[i].to(device), y[i].to(device)) for i in index]


class CyclingBatches(IterableDataset[tuple[torch.Tensor, torch.Tensor]]):
    """An endless stream over a few fixed batches (the study measures steps, not epochs)."""

    def __init__(self, batches: Sequence[tuple[torch.Tensor, torch.Tensor]]) -> None:
        super().__init__()
        self.batches = list(batches)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        return itertools.cycle(self.batches)


# ----------------------------------------------------------------------------------------------
# Models
# ----------------------------------------------------------------------------------------------

_ACTIVATION_MODULES: Mapping[str, Callable[[], nn.Module]] = {
    "relu": nn.ReLU,
    "sigmoid": nn.Sigmoid,
    "tanh": nn.Tanh,
    "gelu": nn.GELU,
}
_ACTIVATION_FNS: Mapping[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "relu": F.relu,
    "sigmoid": torch.sigmoid,
    "tanh": torch.tanh,
    "gelu": F.gelu,
}


class Tokens(nn.Module):
    """Images ``[B, C, H, W]`` to token sequences ``[B, seq_len, C * H * W / seq_len]``.

    One channel: one token per row when ``seq_len == H`` (digits). Otherwise square patches of
    side ``p = H / sqrt(seq_len)``: ``[B, C, H/p, p, W/p, p] -> [B, (H/p)(W/p), C p p]``.
    """

    def __init__(self, shape: tuple[int, int, int], seq_len: int) -> None:
        super().__init__()
        channels, height, width = shape
        self.rows = channels == 1 and seq_len == height
        side = math.isqrt(seq_len)
        if not self.rows and (side * side != seq_len or height % side or width % side):
            raise ValueError(
                f"expected seq_len a square number of patches dividing {height}x{width}, "
                f"found {seq_len}."
            )
        self.patch = height // side if not self.rows else 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        if self.rows:
            return x.reshape(b, h, w)
        p = self.patch
        x = x.reshape(b, c, h // p, p, w // p, p).permute(0, 2, 4, 1, 3, 5)
        return x.reshape(b, (h // p) * (w // p), c * p * p)


class TransformerNet(nn.Module):
    """Token embedding, learned positions, pre-norm transformer blocks, mean pool, classifier."""

    def __init__(self, config: StudyConfig) -> None:
        super().__init__()
        assert config.seq_len is not None and config.heads is not None
        shape = SAMPLE_SHAPES[config.dataset]
        features = shape[0] * shape[1] * shape[2] // config.seq_len
        self.tokens = Tokens(shape, config.seq_len)
        self.embed = nn.Linear(features, config.width)
        self.position = nn.Parameter(torch.zeros(1, config.seq_len, config.width))
        nn.init.normal_(self.position, std=0.02)
        self.blocks = nn.Sequential(
            *(
                nn.TransformerEncoderLayer(
                    config.width,
                    config.heads,
                    dim_feedforward=4 * config.width,
                    dropout=0.0,
                    activation=_ACTIVATION_FNS[config.activation],
                    batch_first=True,
                    norm_first=True,
                )
                for _ in range(config.depth)
            )
        )
        self.norm = nn.LayerNorm(config.width)
        self.head = nn.Linear(config.width, NUM_CLASSES)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.embed(self.tokens(x)) + self.position
        h = self.norm(self.blocks(h))
        return self.head(h.mean(dim=1))


def build_net(config: StudyConfig) -> nn.Module:
    """The plain ``nn.Module`` of ``config`` (logits ``[B, 10]`` from images ``[B, C, H, W]``).

    MLP: flatten, ``depth`` hidden ``Linear(width) + activation`` layers, a classifier.
    CNN: ``depth`` 3x3 convolutions with ``width`` channels (padding 1, full resolution), each
    followed by the activation, global average pooling, a classifier.
    Transformer: see :class:`TransformerNet`. No dropout anywhere, no normalisation in the MLP
    and CNN (the paper's plain networks).
    """
    act = _ACTIVATION_MODULES[config.activation]
    channels, height, width = SAMPLE_SHAPES[config.dataset]
    if config.family == "mlp":
        layers: list[nn.Module] = [nn.Flatten()]
        fan_in = channels * height * width
        for _ in range(config.depth):
            layers += [nn.Linear(fan_in, config.width), act()]
            fan_in = config.width
        layers.append(nn.Linear(fan_in, NUM_CLASSES))
        return nn.Sequential(*layers)
    if config.family == "cnn":
        layers = []
        fan_in = channels
        for _ in range(config.depth):
            layers += [nn.Conv2d(fan_in, config.width, 3, padding=1), act()]
            fan_in = config.width
        layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(fan_in, NUM_CLASSES)]
        return nn.Sequential(*layers)
    return TransformerNet(config)


class StudyModel(LightningModule):
    """A study network trained with cross-entropy and AdamW (lr :data:`LEARNING_RATE`)."""

    def __init__(self, net: nn.Module, lr: float = LEARNING_RATE) -> None:
        super().__init__()
        self.net = net
        self.lr = lr

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def training_step(
        self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int
    ) -> torch.Tensor:
        x, y = batch
        return F.cross_entropy(self(x), y)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.AdamW(self.parameters(), lr=self.lr)


def build_model(config: StudyConfig, *, seed: int = SEED) -> StudyModel:
    """``config``'s LightningModule, its weights drawn after seeding torch with ``seed``."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return StudyModel(build_net(config))


# ----------------------------------------------------------------------------------------------
# One counted step
# ----------------------------------------------------------------------------------------------


class _TrainStep(nn.Module):
    """The Lightning training step as a module: forward and loss, autocast as the Trainer does."""

    def __init__(self, model: StudyModel, autocast: torch.dtype | None) -> None:
        super().__init__()
        self.model = model
        self.autocast = autocast

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        if self.autocast is None:
            return self.model.training_step((x, y), 0)
        with torch.autocast(x.device.type, dtype=self.autocast):
            return self.model.training_step((x, y), 0)


def _the_loss(loss: torch.Tensor) -> torch.Tensor:
    return loss


def count_step(
    config: StudyConfig,
    model: StudyModel,
    batch: tuple[torch.Tensor, torch.Tensor],
    spec: HardwareSpec | None,
) -> dict[str, Any]:
    """Count one training step of ``model`` on ``batch``: the run JSON's ``per_step``.

    The step is the Trainer's: forward and cross-entropy (under bf16 autocast for ``bf16``),
    backward, AdamW step, on a copy of ``model`` on the batch's device (the model is untouched).

    Returns:
        ``tos``, ``flops``, ``tos_matrix_full``, ``tos_matrix_reduced`` (split into
        ``tos_matrix_tf32`` and ``tos_matrix_low``), ``tos_vector``, ``bytes``, ``bytes_read``,
        ``bytes_written``, ``kernels``, ``roofline_s`` (the step's roofline time on ``spec``;
        None without a spec), ``tos_by_class``, ``tos_by_format``, ``tos_by_unit`` and
        ``unmodelled_ops`` (aten op -> calls that had no formula).
    """
    from lightning_to_energy.counting import profile
    from lightning_to_energy.hardware.roofline import roofline_s

    x, y = batch
    work = copy.deepcopy(model).to(x.device)
    step = _TrainStep(work, torch.bfloat16 if config.dtype == "bf16" else None)
    optimizer = work.configure_optimizers()
    prof = profile(step, x, y, train=True, optimizer=optimizer, loss_fn=_the_loss)
    return {
        "tos": float(prof.tos),
        "flops": float(prof.flops),
        "tos_matrix_full": float(prof.tos_matrix_full),
        "tos_matrix_reduced": float(prof.tos_matrix_reduced),
        "tos_matrix_tf32": float(prof.tos_matrix_tf32),
        "tos_matrix_low": float(prof.tos_matrix_low),
        "tos_vector": float(prof.tos_vector),
        "bytes": float(prof.bytes),
        "bytes_read": float(prof.bytes_read),
        "bytes_written": float(prof.bytes_written),
        "kernels": float(prof.kernels),
        "roofline_s": float(roofline_s(prof, spec)) if spec is not None else None,
        "tos_by_class": {k.value: float(v) for k, v in prof.tos_by_class.items()},
        "tos_by_format": {k.value: float(v) for k, v in prof.tos_by_format.items()},
        "tos_by_unit": {k.value: float(v) for k, v in prof.tos_by_unit.items()},
        "unmodelled_ops": dict(prof.unmodelled_ops),
    }
