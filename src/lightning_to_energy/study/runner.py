"""The energy scaling study: train a grid of configurations and write one run JSON per config.

Each configuration (a feed-forward network, a CNN or a stack of transformer blocks, on
scikit-learn's bundled digits or on a synthetic CIFAR-shaped set, in fp32 or bf16 autocast) is
trained with :class:`~lightning_to_energy.callbacks.to_energy.TOEnergy` until it has several
trustworthy energy windows. One training step of it is counted separately with
:func:`~lightning_to_energy.counting.profile` (TOs, FLOPs, bytes, kernels and a roofline time
for the hardware), and both go into ``<id>.run.json`` (format in ``docs/dev/CONTRACTS.md``),
which :mod:`lightning_to_energy.study.evaluation` evaluates. :func:`run_study` is resumable: a
configuration whose run JSON already exists is skipped, and a failing configuration leaves an
``<id>.error.json`` and the study goes on.

Everything is offline: the digits ship with scikit-learn and the CIFAR-shaped set is drawn from
a seeded generator (the study measures energy, not accuracy).
"""

from __future__ import annotations

import contextlib
import copy
import datetime as _dt
import gc
import itertools
import json
import logging
import math
import os
import platform
import re
import tempfile
import time
import traceback
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from lightning.pytorch import Callback, LightningModule, Trainer
from torch import nn
from torch.nn import functional as F
from torch.utils.data import DataLoader, IterableDataset

from lightning_to_energy._files import atomic_write_text
from lightning_to_energy.reporting.records import (
    FLAG_FAULT,
    FLAG_OUTLIER,
    FLAG_SHORT,
    EnergyReport,
    WindowRecord,
)
from lightning_to_energy.sensors.base import MEASURED_KINDS, weakest_kind

if TYPE_CHECKING:
    from lightning_to_energy.hardware.specs import HardwareSpec
    from lightning_to_energy.sensors.base import Sensor

__all__ = [
    "ACTIVATIONS",
    "BATCHES_CYCLED",
    "CIFAR_SYNTHETIC_SIZE",
    "DATASETS",
    "DEFAULT_MIN_SECONDS",
    "DEFAULT_WINDOWS",
    "DTYPES",
    "ERROR_FORMAT",
    "ERROR_SUFFIX",
    "FAMILIES",
    "GRIDS",
    "LEARNING_RATE",
    "NUM_CLASSES",
    "REPORT_SUFFIX",
    "RUN_FORMAT",
    "RUN_SUFFIX",
    "RUN_VERSION",
    "SAMPLE_SHAPES",
    "SEED",
    "CyclingBatches",
    "StudyConfig",
    "StudyModel",
    "Tokens",
    "TransformerNet",
    "build_model",
    "build_net",
    "config_id",
    "count_step",
    "dataset_tensors",
    "default_grid",
    "first_config_guess_s",
    "fit_worthy_windows",
    "is_complete",
    "make_batches",
    "make_config",
    "measured_summary",
    "resolve_device",
    "resolve_hardware",
    "run_config",
    "run_path",
    "run_study",
]

FAMILIES = ("mlp", "cnn", "transformer")
DATASETS = ("digits", "cifar-synthetic")
DTYPES = ("fp32", "bf16")
ACTIVATIONS = ("relu", "sigmoid", "tanh", "gelu")
GRIDS = ("full", "small", "tiny")

RUN_FORMAT = "lightning-to-energy/study-run"
ERROR_FORMAT = "lightning-to-energy/study-error"
RUN_VERSION = 1
RUN_SUFFIX = ".run.json"
REPORT_SUFFIX = ".report.json"
ERROR_SUFFIX = ".error.json"

SEED = 0
LEARNING_RATE = 1e-3
NUM_CLASSES = 10
SAMPLE_SHAPES: Mapping[str, tuple[int, int, int]] = {
    "digits": (1, 8, 8),
    "cifar-synthetic": (3, 32, 32),
}
CIFAR_SYNTHETIC_SIZE = 2048
"""Samples in the synthetic CIFAR-shaped set."""
BATCHES_CYCLED = 8
"""Distinct batches placed on the device and cycled through (no loading cost during training)."""

DEFAULT_MIN_SECONDS = 8.0
DEFAULT_WINDOWS = 3
_MAX_STEPS = 10_000_000  # "until stopped": the data loader cycles forever
_ID_RE = re.compile(r"^[a-z0-9][a-z0-9.-]*$")

# Sequence lengths a transformer may use on each data set: digits rows are the 8 tokens of 8
# pixels; CIFAR-shaped images are cut into square patches (16 -> 8x8, 64 -> 4x4, 256 -> 2x2).
_SEQ_LENS: Mapping[str, tuple[int, ...]] = {"digits": (8,), "cifar-synthetic": (16, 64, 256)}


# ----------------------------------------------------------------------------------------------
# Configurations and grids
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class StudyConfig:
    """One configuration of the study.

    Args:
        id: a stable, file-name-safe identifier (``config_id`` builds the usual one).
        family: ``"mlp"``, ``"cnn"`` or ``"transformer"``.
        dataset: ``"digits"`` (8x8 grey-scale) or ``"cifar-synthetic"`` (3x32x32).
        dtype: ``"fp32"`` or ``"bf16"`` (bf16 autocast, Lightning's ``"bf16-mixed"``).
        width: hidden units (MLP), channels (CNN) or model dimension (transformer).
        depth: hidden layers (MLP), convolutions (CNN) or transformer blocks.
        activation: ``"relu"``, ``"sigmoid"``, ``"tanh"`` or ``"gelu"``.
        batch_size: samples per training step.
        heads: attention heads (transformers only; must divide ``width``).
        seq_len: tokens per sample (transformers only): 8 on digits (one per row), 16, 64 or
            256 on cifar-synthetic (square patches).

    Raises:
        ValueError: a field is outside its allowed values.
    """

    id: str
    family: str
    dataset: str
    dtype: str
    width: int
    depth: int
    activation: str = "relu"
    batch_size: int = 64
    heads: int | None = None
    seq_len: int | None = None

    def __post_init__(self) -> None:
        def bad(name: str, allowed: str) -> ValueError:
            return ValueError(
                f"StudyConfig {self.id!r}: expected {name} {allowed}, found "
                f"{getattr(self, name)!r}. Fix the configuration."
            )

        if not isinstance(self.id, str) or not _ID_RE.match(self.id):
            raise bad("id", "of lower-case letters, digits, '.' and '-'")
        for name, allowed in (
            ("family", FAMILIES),
            ("dataset", DATASETS),
            ("dtype", DTYPES),
            ("activation", ACTIVATIONS),
        ):
            if getattr(self, name) not in allowed:
                raise bad(name, f"in {allowed}")
        for name in ("width", "depth", "batch_size"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise bad(name, "a positive int")
        if self.family == "transformer":
            if not isinstance(self.heads, int) or self.heads < 1 or self.width % self.heads:
                raise bad("heads", f"a positive int dividing width {self.width}")
            if self.seq_len not in _SEQ_LENS[self.dataset]:
                raise bad("seq_len", f"in {_SEQ_LENS[self.dataset]} for {self.dataset}")
        elif self.heads is not None or self.seq_len is not None:
            raise bad("heads", f"None with seq_len None for family {self.family}")

    @property
    def input_shape(self) -> tuple[int, ...]:
        """The shape of one input batch: ``(batch_size, channels, height, width)``."""
        return (self.batch_size, *SAMPLE_SHAPES[self.dataset])

    def to_dict(self) -> dict[str, Any]:
        """The JSON form: every field, ``heads`` and ``seq_len`` only for transformers."""
        d = asdict(self)
        if self.family != "transformer":
            d.pop("heads")
            d.pop("seq_len")
        return d

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> StudyConfig:
        """Inverse of :meth:`to_dict`; unknown keys are ignored.

        Raises:
            ValueError: a field is missing or invalid.
        """
        names = {f.name for f in fields(cls)}
        missing = {"id", "family", "dataset", "dtype", "width", "depth"} - set(data)
        if missing:
            raise ValueError(
                f"study config: expected the keys {sorted(missing)}, found only {sorted(data)}."
            )
        return cls(**{k: v for k, v in data.items() if k in names})


def config_id(
    family: str,
    dataset: str,
    dtype: str,
    *,
    width: int,
    depth: int,
    activation: str,
    batch_size: int,
    heads: int | None = None,
    seq_len: int | None = None,
) -> str:
    """The usual id: ``mlp-digits-w256-d4-relu-fp32-b512``; transformers add ``-h8-s64``."""
    attention = f"-h{heads}-s{seq_len}" if family == "transformer" else ""
    return f"{family}-{dataset}-w{width}-d{depth}{attention}-{activation}-{dtype}-b{batch_size}"


def make_config(
    family: str,
    dataset: str,
    dtype: str,
    *,
    width: int,
    depth: int,
    activation: str = "relu",
    batch_size: int = 64,
    heads: int | None = None,
    seq_len: int | None = None,
) -> StudyConfig:
    """A :class:`StudyConfig` with its usual id; transformers default to 64-wide heads and to
    8 tokens on digits, 64 on cifar-synthetic."""
    if family == "transformer":
        heads = heads if heads is not None else max(width // 64, 1)
        if seq_len is None:
            seq_len = 8 if dataset == "digits" else 64
    knobs: dict[str, Any] = {
        "width": width,
        "depth": depth,
        "activation": activation,
        "batch_size": batch_size,
        "heads": heads,
        "seq_len": seq_len,
    }
    return StudyConfig(
        id=config_id(family, dataset, dtype, **knobs),
        family=family,
        dataset=dataset,
        dtype=dtype,
        **knobs,
    )


def default_grid(scale: str = "full") -> list[StudyConfig]:
    """The study's configurations.

    Args:
        scale: ``"full"``: the paper-like grid for a GPU (86 configurations: MLPs and CNNs
            varying width, depth and activation, transformer blocks varying width, depth and
            activation, each on both data sets in fp32 and bf16, sized so that one H100 step
            takes about 1 to 50 ms). ``"small"``: 13 small configurations for a CPU.
            ``"tiny"``: 4 configurations (one per family, both data sets, both dtypes) for tests.

    Raises:
        ValueError: an unknown scale.
    """
    if scale == "full":
        return _full_grid()
    if scale == "small":
        return _small_grid()
    if scale == "tiny":
        return [
            make_config("mlp", "digits", "fp32", width=16, depth=1, batch_size=16),
            make_config("cnn", "cifar-synthetic", "fp32", width=4, depth=1, batch_size=4),
            make_config(
                "transformer",
                "digits",
                "fp32",
                width=16,
                depth=1,
                heads=2,
                activation="gelu",
                batch_size=8,
            ),
            make_config(
                "mlp",
                "cifar-synthetic",
                "bf16",
                width=16,
                depth=1,
                activation="tanh",
                batch_size=8,
            ),
        ]
    raise ValueError(f"expected a grid scale in {GRIDS}, found {scale!r}. Fix: use one of those.")


def _full_grid() -> list[StudyConfig]:
    grid: list[StudyConfig] = []
    for dataset in DATASETS:
        cifar = dataset == "cifar-synthetic"
        for dtype in DTYPES:
            mlp_batch = 512
            for width, depth in itertools.product((512, 2048, 4096), (2, 6)):
                grid.append(
                    make_config(
                        "mlp", dataset, dtype, width=width, depth=depth, batch_size=mlp_batch
                    )
                )
            for act in ("sigmoid", "tanh", "gelu"):
                grid.append(
                    make_config(
                        "mlp",
                        dataset,
                        dtype,
                        width=4096,
                        depth=6,
                        activation=act,
                        batch_size=mlp_batch,
                    )
                )
            cnn_batch = 128 if cifar else 256
            for width, depth in itertools.product((64, 256), (2, 6)):
                grid.append(
                    make_config(
                        "cnn", dataset, dtype, width=width, depth=depth, batch_size=cnn_batch
                    )
                )
            for act in ("sigmoid", "tanh", "gelu"):
                grid.append(
                    make_config(
                        "cnn",
                        dataset,
                        dtype,
                        width=256,
                        depth=6,
                        activation=act,
                        batch_size=cnn_batch,
                    )
                )
            tfm_batch = 64 if cifar else 256
            for width, depth in itertools.product((256, 512), (2, 6)):
                grid.append(
                    make_config(
                        "transformer",
                        dataset,
                        dtype,
                        width=width,
                        depth=depth,
                        activation="gelu",
                        batch_size=tfm_batch,
                    )
                )
            grid.append(
                make_config(
                    "transformer",
                    dataset,
                    dtype,
                    width=512,
                    depth=6,
                    activation="relu",
                    batch_size=tfm_batch,
                )
            )
            if cifar:
                grid.append(
                    make_config(
                        "transformer",
                        dataset,
                        dtype,
                        width=256,
                        depth=4,
                        activation="gelu",
                        seq_len=256,
                        batch_size=tfm_batch,
                    )
                )
    return grid


def _small_grid() -> list[StudyConfig]:
    return [
        make_config("mlp", "digits", "fp32", width=64, depth=2, batch_size=64),
        make_config("mlp", "digits", "fp32", width=256, depth=2, batch_size=64),
        make_config("mlp", "digits", "fp32", width=256, depth=4, activation="gelu", batch_size=64),
        make_config(
            "mlp", "digits", "fp32", width=256, depth=4, activation="sigmoid", batch_size=64
        ),
        make_config("mlp", "digits", "bf16", width=256, depth=4, batch_size=64),
        make_config("cnn", "digits", "fp32", width=16, depth=2, batch_size=64),
        make_config("cnn", "digits", "fp32", width=32, depth=3, activation="tanh", batch_size=64),
        make_config("cnn", "digits", "bf16", width=32, depth=3, batch_size=64),
        make_config(
            "transformer", "digits", "fp32", width=64, depth=2, activation="gelu", batch_size=64
        ),
        make_config("transformer", "digits", "bf16", width=64, depth=2, batch_size=64),
        make_config("mlp", "cifar-synthetic", "fp32", width=128, depth=2, batch_size=64),
        make_config("cnn", "cifar-synthetic", "fp32", width=8, depth=2, batch_size=16),
        make_config(
            "transformer",
            "cifar-synthetic",
            "fp32",
            width=64,
            depth=1,
            seq_len=16,
            activation="gelu",
            batch_size=16,
        ),
    ]


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


# ----------------------------------------------------------------------------------------------
# Measured windows
# ----------------------------------------------------------------------------------------------

_NOT_FIT = frozenset({FLAG_SHORT, FLAG_FAULT, FLAG_OUTLIER})


def fit_worthy_windows(windows: Sequence[WindowRecord]) -> list[WindowRecord]:
    """The train windows a study sums: measured (> 0 J), not short, no fault, not flagged
    ``not-fitted``, and not the first train window (it holds the counted step and warm-up)."""
    train = sorted((w for w in windows if w.loop == "train"), key=lambda w: w.index)
    return [
        w
        for w in train[1:]
        if w.measured_j is not None and w.measured_j > 0 and not _NOT_FIT & set(w.flags)
    ]


def measured_summary(report: EnergyReport) -> dict[str, Any]:
    """The run JSON's ``measured``: the fit-worthy train windows of ``report`` summed.

    Energy is summed over the domains that were measured (an energy counter or integrated
    power): a CPU-time estimate riding along (passed by name beside a GPU's sensor)
    would mix a model into the measurement, so it is left out and listed in
    ``excluded_j``. Where a GPU (``gpu:N``) was measured, only GPU domains are summed: the
    study's law is then the GPU's, and RAPL zones measure the whole socket, shared with data
    loading, other processes and, on a rented machine, other tenants; they are listed in
    ``excluded_j`` too. With no measured domain at all, every domain is summed and ``kind``
    says ``estimate`` (or ``fake``...). ``kind`` is the weakest kind among the summed domains.

    Raises:
        ValueError: the report has no fit-worthy train window.
    """
    chosen = fit_worthy_windows(report.windows)
    if not chosen:
        train = [w for w in report.windows if w.loop == "train"]
        raise ValueError(
            f"expected at least one fit-worthy train window after the first, found none among "
            f"{len(train)} train windows (flags: {[list(w.flags) for w in train]}). Fix: train "
            "longer (raise min_seconds or steps), or use a sensor that measures."
        )
    steps = sum(w.steps for w in chosen)
    duration_s = math.fsum(w.duration_s for w in chosen)
    by_domain: dict[str, float] = {}
    for w in chosen:
        for domain, joules in w.energy_j.items():
            by_domain[domain] = by_domain.get(domain, 0.0) + joules
    kinds = {s.domain: s.kind for s in report.sensors}
    measured = [d for d in by_domain if kinds.get(d) in MEASURED_KINDS]
    gpus = [d for d in measured if d.startswith("gpu:")]
    summed = gpus or measured or list(by_domain)
    energy_j = math.fsum(by_domain[d] for d in summed)
    return {
        "steps": steps,
        "energy_j": energy_j,
        "duration_s": duration_s,
        "windows": len(chosen),
        "kind": weakest_kind([kinds.get(d, "none") for d in summed]),
        "energy_per_step_j": energy_j / steps,
        "duration_per_step_s": duration_s / steps,
        "power_w": energy_j / duration_s if duration_s > 0 else None,
        "domains": sorted(summed),
        "excluded_j": {d: j for d, j in by_domain.items() if d not in summed},
        "energy_by_domain_j": by_domain,
        "train_windows": sum(1 for w in report.windows if w.loop == "train"),
    }


class _StopWhenMeasured(Callback):
    """Stops training right after a window closes once enough windows and time have passed,
    or at ``max_seconds`` whatever happened (a sensor that never gives a fit-worthy window)."""

    def __init__(
        self,
        energy: Any,
        windows: int,
        min_seconds: float,
        max_seconds: float,
        clock: Callable[[], float],
    ) -> None:
        self.energy = energy
        self.windows = windows
        self.min_seconds = min_seconds
        self.max_seconds = max_seconds
        self.clock = clock
        self._t0 = 0.0
        self._seen = 0

    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._t0 = self.clock()

    def on_train_batch_end(self, trainer: Trainer, *args: Any) -> None:
        elapsed = self.clock() - self._t0
        if elapsed >= self.max_seconds:
            trainer.should_stop = True
            return
        tracker = self.energy.tracker
        if tracker is None or len(tracker.windows) == self._seen:
            return
        # a window just closed: stopping now leaves no partial window behind
        self._seen = len(tracker.windows)
        if elapsed >= self.min_seconds and len(fit_worthy_windows(tracker.windows)) >= self.windows:
            trainer.should_stop = True


# ----------------------------------------------------------------------------------------------
# One configuration
# ----------------------------------------------------------------------------------------------


def resolve_device(device: torch.device | str) -> torch.device:
    """``device`` as a torch device, checked to exist.

    Raises:
        ValueError: not a device name, or a CUDA device that this machine lacks.
    """
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise ValueError(
            f"expected a device such as 'cpu', 'cuda' or 'cuda:1', found {device!r}."
        ) from None
    if dev.type == "cuda":
        available = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if (dev.index or 0) >= available:
            raise ValueError(
                f"expected CUDA device {dev.index or 0}, found {available} CUDA device(s). "
                "Fix: run on a machine with an NVIDIA GPU and a CUDA build of torch, or use "
                "device 'cpu'."
            )
        if dev.index is None:
            dev = torch.device("cuda", torch.cuda.current_device())
    elif dev.type != "cpu":
        raise ValueError(f"expected a 'cpu' or 'cuda' device, found {device!r}.")
    return dev


def resolve_hardware(
    hardware: HardwareSpec | str | None, device: torch.device
) -> HardwareSpec | None:
    """A hardware spec from a spec, a table key (``"h100-sxm"``) or, with None, the device.

    Detection is best effort: a device the table does not know gives None (the run JSON's
    ``roofline_s`` is then null, with a warning saying how to add the hardware); an explicit
    key that the table does not know is an error.

    Raises:
        ValueError: ``hardware`` is a key or name the table does not know.
    """
    from lightning_to_energy.hardware.detect import detect_hardware
    from lightning_to_energy.hardware.specs import find_hardware

    if isinstance(hardware, str):
        return find_hardware(hardware)
    if hardware is not None:
        return hardware
    try:
        return detect_hardware(device)
    except ValueError as exc:
        warnings.warn(
            f"lightning-to-energy study: no roofline for this device ({exc}); roofline_s will "
            "be null, so the 'ours' model cannot use these runs. Fix: pass hardware=KEY "
            "(--hardware KEY), or register the device with roofline.load_hardware().",
            RuntimeWarning,
            stacklevel=2,
        )
        return None


def _device_name(device: torch.device, info: Any) -> str:
    if device.type == "cuda":
        return str(torch.cuda.get_device_name(device))
    return str(info.cpu)


def _unknown_key(name: str) -> str:
    slug = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")[:40] or "device"
    return f"unknown-{slug}"


def _environment(device: torch.device) -> dict[str, Any]:
    import lightning

    import lightning_to_energy

    now = _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0)
    return {
        "torch": torch.__version__,
        "lightning": lightning.__version__,
        "lightning_to_energy": lightning_to_energy.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cuda": torch.version.cuda,
        "device": str(device),
        "date": now.strftime("%Y-%m-%dT%H:%M:%SZ"),
        # the number formats fp32 work really runs in (see docs/counting.md)
        "float32_matmul_precision": torch.get_float32_matmul_precision(),
        "tf32_matmul": bool(torch.backends.cuda.matmul.allow_tf32),
        "tf32_cudnn": bool(torch.backends.cudnn.allow_tf32),
    }


def _atomic_write_json(path: Path, data: Any) -> None:
    atomic_write_text(path, json.dumps(data, indent=2, allow_nan=False) + "\n")


@contextlib.contextmanager
def _quiet_lightning() -> Iterator[None]:
    """Hush Lightning's per-Trainer banners and data-loader hints for the length of a run."""
    loggers = [logging.getLogger(n) for n in ("lightning.pytorch", "lightning.fabric")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.WARNING)
    try:
        with warnings.catch_warnings():
            for pattern in (
                ".*does not have many workers.*",
                ".*Tensor Cores.*",
                ".*`IterableDataset`.*",
                ".*torch.cuda.amp.*",
                ".*enable_nested_tensor.*",
                ".*LeafSpec.*",
            ):
                warnings.filterwarnings("ignore", message=pattern)
            yield
    finally:
        for lg, level in zip(loggers, levels, strict=True):
            lg.setLevel(level)


def run_path(out_dir: str | os.PathLike[str], config: StudyConfig) -> Path:
    """Where ``config``'s run JSON goes."""
    return Path(out_dir) / f"{config.id}{RUN_SUFFIX}"


def run_config(
    config: StudyConfig,
    out_dir: str | os.PathLike[str],
    *,
    device: torch.device | str = "cpu",
    steps: int | None = None,
    min_seconds: float = DEFAULT_MIN_SECONDS,
    windows: int = DEFAULT_WINDOWS,
    max_seconds: float | None = None,
    sensors: str | Sequence[Sensor] = "auto",
    window_s: float | None = None,
    clock: Callable[[], float] | None = None,
    hardware: HardwareSpec | str | None = None,
    callbacks: Sequence[Callback] = (),
    seed: int = SEED,
) -> Path:
    """Train one configuration under ``TOEnergy`` and write ``<id>.run.json``.

    Training runs until ``windows`` fit-worthy train windows beyond the first exist and at
    least ``min_seconds`` have passed (stopping right after a window closes), or for exactly
    ``steps`` steps when given. One step is counted separately (:func:`count_step`). The
    energy report is copied to ``<id>.report.json``; the run JSON is written last and
    atomically, so its presence means the configuration is done.

    Args:
        config: the configuration.
        out_dir: where the files go (created).
        device: ``"cpu"``, ``"cuda"`` or ``"cuda:N"``.
        steps: train exactly this many steps instead of stopping on time and windows.
        min_seconds: the least training time (by ``clock``) before stopping.
        windows: fit-worthy windows wanted beyond the first.
        max_seconds: stop here whatever the windows (default ``max(3 * min_seconds, 60)``).
        sensors: ``"auto"`` or a sequence of sensors (given to ``TOEnergy``).
        window_s: the window length (default: the sensors' minimum trustworthy window).
        clock: seconds (default ``time.perf_counter``); shared by ``TOEnergy`` and the stop rule.
        hardware: the roofline's hardware: a spec, a key of the table, or None to detect it.
        callbacks: extra callbacks, placed before ``TOEnergy`` (tests advance a fake clock).
        seed: weights and batches are drawn from it.

    Returns:
        The run JSON's path.

    Raises:
        ValueError: a bad device or hardware key, or no fit-worthy window was measured.
    """
    from lightning_to_energy.callbacks.to_energy import TOEnergy
    from lightning_to_energy.hardware.identity import HardwareInfo, hardware_fingerprint
    from lightning_to_energy.reporting.codec import report_to_dict

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    dev = resolve_device(device)
    spec = resolve_hardware(hardware, dev)
    clock = clock or time.perf_counter
    if steps is not None and steps < 1:
        raise ValueError(f"expected steps >= 1 or None, found {steps!r}.")
    if windows < 1 or not min_seconds >= 0:
        raise ValueError(
            f"expected windows >= 1 and min_seconds >= 0, found {windows!r} and {min_seconds!r}."
        )
    max_seconds = max_seconds if max_seconds is not None else max(3.0 * min_seconds, 60.0)

    model = build_model(config, seed=seed)
    batches = make_batches(config, dev, seed=seed)
    per_step = count_step(config, model, batches[0], spec)

    with tempfile.TemporaryDirectory(prefix=f"lte-study-{config.id}-") as scratch:
        energy = TOEnergy(
            sensors,
            window_s=window_s,
            calibration=None,
            clock=clock,
            report_dir=scratch,
            print_report=False,
            plot=False,  # the study keeps the report's JSON; a PNG per configuration costs ~0.5 s
            # NB: a re-count inside a measured window would slow one step by about 2x; the
            # step never changes here, so count it once.
            recheck_every=2**31,
        )
        stop: list[Callback] = []
        if steps is None:
            stop.append(_StopWhenMeasured(energy, windows, min_seconds, max_seconds, clock))
        loader = DataLoader(CyclingBatches(batches), batch_size=None)
        with _quiet_lightning():
            trainer = Trainer(
                accelerator="gpu" if dev.type == "cuda" else "cpu",
                devices=[dev.index] if dev.type == "cuda" else 1,
                precision="bf16-mixed" if config.dtype == "bf16" else "32-true",
                max_steps=steps if steps is not None else _MAX_STEPS,
                max_epochs=1,  # one endless epoch: no epoch boundary cuts a window short
                num_sanity_val_steps=0,
                logger=False,
                enable_checkpointing=False,
                enable_progress_bar=False,
                enable_model_summary=False,
                default_root_dir=scratch,
                callbacks=[*callbacks, energy, *stop],
            )
            trainer.fit(model, train_dataloaders=loader)
    report = energy.report
    if report is None:
        raise RuntimeError(
            f"{config.id}: TOEnergy produced no report after training; see the warnings above."
        )
    measured = measured_summary(report)

    info = HardwareInfo.detect()
    name = _device_name(dev, info)
    report_file = out / f"{config.id}{REPORT_SUFFIX}"
    _atomic_write_json(report_file, report_to_dict(report))
    doc = {
        "format": RUN_FORMAT,
        "version": RUN_VERSION,
        "config": config.to_dict(),
        "hardware": {
            "key": spec.key if spec is not None else _unknown_key(name),
            "name": name,
            "spec_name": spec.name if spec is not None else None,
            "kind": spec.kind if spec is not None else ("gpu" if dev.type == "cuda" else "cpu"),
            "fingerprint": {"id": hardware_fingerprint(info), **info.to_dict()},
        },
        "sensors": [
            {"domain": s.domain, "kind": s.kind, "source": s.source} for s in report.sensors
        ],
        "environment": _environment(dev),
        "per_step": per_step,
        "measured": measured,
        "report": report_file.name,
    }
    path = run_path(out, config)
    _atomic_write_json(path, doc)
    return path


def first_config_guess_s(min_seconds: float) -> float:
    """How long :func:`run_study` expects a configuration to take before one has run in the
    call (``2 * min_seconds + 30`` s: training, the counted step and the Trainer's set-up)."""
    return 2.0 * min_seconds + 30.0


def _hardware_key(spec: HardwareSpec | None, device: torch.device) -> str:
    """The ``hardware.key`` a run JSON measured on ``device`` with ``spec`` gets."""
    if spec is not None:
        return spec.key
    from lightning_to_energy.hardware.identity import HardwareInfo

    return _unknown_key(_device_name(device, HardwareInfo.detect()))


def _check_same_hardware(out: Path, key: str) -> None:
    """Refuse to add runs of ``key`` to a directory holding runs of other hardware.

    ``study eval`` fits one energy law per machine and refuses such a mix; resuming a study on
    another machine (an H200 where an H100 began it) would otherwise skip the done
    configurations, measure the rest elsewhere, and leave a directory no evaluation can read.
    """
    if not out.is_dir():
        return
    others: dict[str, str] = {}
    for path in sorted(out.glob(f"*{RUN_SUFFIX}")):
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue  # unreadable: is_complete() reruns it
        hw = data.get("hardware") if isinstance(data, dict) else None
        found = hw.get("key") if isinstance(hw, dict) else None
        if isinstance(found, str) and found != key:
            others.setdefault(found, path.name)
    if others:
        listed = ", ".join(f"{k} (e.g. {name})" for k, name in sorted(others.items()))
        raise ValueError(
            f"expected {out} to hold runs of this hardware ({key}) only, found runs of {listed}. "
            "Fix: give each hardware its own output directory (e.g. study-" + key + "), move "
            "those runs away to measure them again here, or pass --hardware with their key if "
            "this is the same device."
        )


def _release_memory() -> None:
    """Free what the last configuration left (a failed one may hold its GPU tensors)."""
    gc.collect()
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.empty_cache()


def is_complete(path: str | os.PathLike[str], config: StudyConfig) -> bool:
    """True if ``path`` is a readable run JSON of this very configuration with a measurement."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return (
        isinstance(data, dict)
        and data.get("format") == RUN_FORMAT
        and data.get("version") == RUN_VERSION
        and data.get("config") == config.to_dict()
        and isinstance(data.get("per_step"), dict)
        and isinstance(data.get("measured"), dict)
        and isinstance(data["measured"].get("energy_j"), (int, float))
    )


# ----------------------------------------------------------------------------------------------
# The grid
# ----------------------------------------------------------------------------------------------


def _write_error(out: Path, config: StudyConfig, exc: BaseException) -> Path:
    path = out / f"{config.id}{ERROR_SUFFIX}"
    now = _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0)
    _atomic_write_json(
        path,
        {
            "format": ERROR_FORMAT,
            "version": RUN_VERSION,
            "config": config.to_dict(),
            "error": type(exc).__name__,
            "message": str(exc),
            "traceback": traceback.format_exc(),
            "date": now.strftime("%Y-%m-%dT%H:%M:%SZ"),
        },
    )
    return path


def run_study(
    configs: Sequence[StudyConfig],
    out_dir: str | os.PathLike[str],
    *,
    device: torch.device | str = "cpu",
    steps: int | None = None,
    min_seconds: float = DEFAULT_MIN_SECONDS,
    windows: int = DEFAULT_WINDOWS,
    sensors: str | Sequence[Sensor] = "auto",
    window_s: float | None = None,
    clock: Callable[[], float] | None = None,
    hardware: HardwareSpec | str | None = None,
    callbacks: Sequence[Callback] = (),
    budget_s: float | None = None,
    progress: bool = True,
    runner: Callable[..., Path] | None = None,
    console: Any = None,
) -> list[Path]:
    """Run every configuration not done yet; resumable, and a failure does not stop the rest.

    A configuration whose run JSON exists and is complete (:func:`is_complete`) is skipped. A
    failing one leaves ``<id>.error.json`` (error, message, traceback) and the study goes on;
    a later success removes the stale error file. With ``budget_s``, no configuration is
    started that would likely end past the budget (judged by the slowest one so far), so a
    study can be split over several time-limited calls: run the same command again to resume.
    A rich progress bar shows configurations done / total, the current id and the time spent.

    Args:
        configs: the grid (ids must be unique).
        out_dir: where the run files go (created).
        device, steps, min_seconds, windows, sensors, window_s, clock, hardware, callbacks:
            passed to :func:`run_config`.
        budget_s: wall-time budget of this call in seconds (None: no limit).
        progress: show the progress bar and the closing summary.
        runner: the function that runs one configuration (default :func:`run_config`).
        console: a ``rich.console.Console`` to print to (default: a new one).

    Returns:
        The run JSON paths of the configurations done, in grid order (skipped ones included).

    Raises:
        ValueError: duplicate configuration ids, a bad ``steps``, ``windows``, ``min_seconds``
            or ``budget_s``, an ``out_dir`` that is a file, a bad device or hardware key, or an
            ``out_dir`` already holding runs of other hardware (one energy law per machine).
    """
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
    )

    ids = [c.id for c in configs]
    duplicates = sorted({i for i in ids if ids.count(i) > 1})
    if duplicates:
        raise ValueError(f"expected unique configuration ids, found duplicates: {duplicates}.")
    # Checked here, not only in run_config: a bad value would otherwise fail every
    # configuration one by one and leave an error file for each.
    if steps is not None and steps < 1:
        raise ValueError(f"expected steps >= 1 or None, found {steps!r}.")
    if windows < 1 or not min_seconds >= 0:
        raise ValueError(
            f"expected windows >= 1 and min_seconds >= 0, found {windows!r} and {min_seconds!r}."
        )
    if budget_s is not None and not budget_s > 0:
        raise ValueError(f"expected budget_s > 0 or None, found {budget_s!r}.")
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise ValueError(
            f"expected out_dir to be a directory, found a file at {out}. Fix: pick another path."
        )
    dev = resolve_device(device)
    spec = resolve_hardware(hardware, dev)
    _check_same_hardware(out, _hardware_key(spec, dev))
    out.mkdir(parents=True, exist_ok=True)
    run_one = runner or run_config
    console = console or Console()
    kwargs: dict[str, Any] = {
        "device": device,
        "steps": steps,
        "min_seconds": min_seconds,
        "windows": windows,
        "sensors": sensors,
        "window_s": window_s,
        "clock": clock,
        # resolved once above: every configuration gets the same spec
        "hardware": spec if spec is not None else hardware,
        "callbacks": callbacks,
    }
    started = time.monotonic()
    first_guess_s = first_config_guess_s(min_seconds)  # until a configuration has run
    durations: list[float] = []
    done: dict[str, Path] = {}
    failed: dict[str, str] = {}
    left: list[str] = []
    columns = (
        TextColumn("[bold]study"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("{task.fields[current]}"),
    )
    with Progress(*columns, console=console, disable=not progress, transient=False) as bar:
        task = bar.add_task("study", total=len(configs), current="")
        for i, config in enumerate(configs):
            path = run_path(out, config)
            if is_complete(path, config):
                done[config.id] = path
                bar.update(task, advance=1, current=f"{config.id} (done before)")
                continue
            elapsed = time.monotonic() - started
            expected_s = max(durations) if durations else first_guess_s
            if budget_s is not None and elapsed + expected_s > budget_s:
                left = [c.id for c in configs[i:] if not is_complete(run_path(out, c), c)]
                break
            bar.update(task, current=config.id)
            t0 = time.monotonic()
            try:
                result = run_one(config, out, **kwargs)
            except Exception as exc:  # one configuration must not end a study of a hundred
                _write_error(out, config, exc)
                failed[config.id] = f"{type(exc).__name__}: {exc}"
            else:
                done[config.id] = Path(result)
                (out / f"{config.id}{ERROR_SUFFIX}").unlink(missing_ok=True)
            finally:
                _release_memory()
            durations.append(time.monotonic() - t0)
            bar.update(task, advance=1)
    if progress:
        total = len(configs)
        console.print(f"study: {len(done)} of {total} configurations done in {out}")
        for cid, text in failed.items():
            console.print(f"[red]failed[/red] {cid}: {text} (details in {cid}{ERROR_SUFFIX})")
        if left and not durations:
            # nothing started in this call: running it again would not get any further
            console.print(
                f"[red]time budget too short[/red]: {budget_s:.0f} s is less than one "
                f"configuration is expected to take ({first_guess_s:.0f} s), so none of the "
                f"{len(left)} left was started. Fix: raise the budget (--budget-min)."
            )
        elif left:
            console.print(
                f"[yellow]time budget reached[/yellow]: {len(left)} configuration(s) not run "
                "yet; run the same command again to resume."
            )
    return [done[c.id] for c in configs if c.id in done]
