"""Import the shared H100 training-step measurements as physical-model samples.

``h100-training-steps.json`` (``../shared/data/``) holds 54 MLP, CNN and transformer training
steps measured on one H100 80GB HBM3, with the exact model definitions, batch, optimizer and
step. This module builds each model exactly as described there, counts one training step as
the target device runs it (CUDA's TF32 convolutions, foreach SGD) without running it (on the
``meta`` device), and pairs the count with the measured joules and seconds per step.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from lightning_to_energy.counting import StepProfile, profile
from lightning_to_energy.counting.cost_model import NumberFormat, Unit
from lightning_to_energy.counting.registry import CONV, MATMUL, OpCost
from lightning_to_energy.model.physical_fit import Sample

__all__ = [
    "ACTIVATIONS",
    "TARGET",
    "SharedConfig",
    "SharedData",
    "build_model",
    "count_step",
    "is_shared_data",
    "load_shared_data",
    "microbenchmark_samples",
    "shapes",
    "shared_samples",
]

TARGET = "h100-sxm"
"""The hardware key the shared data was measured on."""

ACTIVATIONS: Mapping[str, type[nn.Module]] = {
    "relu": nn.ReLU,
    "sigmoid": nn.Sigmoid,
    "tanh": nn.Tanh,
    "gelu": nn.GELU,  # the exact erf form, nn.GELU's default
}


@dataclass(frozen=True)
class SharedConfig:
    """One measured configuration of the shared data.

    Args:
        id: ``"mlp-d2-s512-relu"``.
        family: ``"mlp"``, ``"cnn"`` or ``"tfm"``.
        depth, width: the family's knobs.
        activation: a key of :data:`ACTIVATIONS`.
        input_shape: the batch's shape.
        energy_j: measured energy per step, J (whole GPU, base power included).
        time_s: measured wall time per step, s.
        repeat_energy_j, repeat_time_s: the same configuration measured again (None if not).
        flops_fcm: FLOPs per step as ``FlopCounterMode`` counted them on CUDA.
    """

    id: str
    family: str
    depth: int
    width: int
    activation: str
    input_shape: tuple[int, ...]
    energy_j: float
    time_s: float
    repeat_energy_j: float | None = None
    repeat_time_s: float | None = None
    flops_fcm: float = 0.0

    @property
    def shape(self) -> str:
        """The configuration without its activation: ``"mlp-d2-s512"`` (family x depth x width)."""
        return f"{self.family}-d{self.depth}-s{self.width}"


@dataclass(frozen=True)
class SharedData:
    """The shared measurements: configurations plus the format microbenchmarks, as read."""

    configs: tuple[SharedConfig, ...]
    microbenchmarks: Mapping[str, Any] = field(default_factory=dict)
    source: str = ""
    hardware: Mapping[str, Any] = field(default_factory=dict)


def load_shared_data(path: str | os.PathLike[str]) -> SharedData:
    """Read ``h100-training-steps.json``.

    Raises:
        ValueError: no file at ``path``, or it is not that data set (no ``configs`` list with
            the fields above).
    """
    try:
        with open(path, encoding="utf-8") as f:
            raw = json.load(f)
    except FileNotFoundError:
        # a relative default (../shared/data) misses from any other directory: say where
        where = "" if os.path.isabs(path) else f" (relative to {os.getcwd()})"
        raise ValueError(
            f"shared data {os.fspath(path)!r}{where}: expected the shared H100 training steps "
            "(h100-training-steps.json) there, found no file there; fix: pass its path (it "
            "lives in shared/data beside the repository)"
        ) from None
    if not isinstance(raw, dict) or not isinstance(raw.get("configs"), list):
        raise ValueError(
            f"shared data {os.fspath(path)!r}: expected a JSON object with a 'configs' list "
            "(the shared h100-training-steps.json); found something else; fix: pass that file"
        )
    configs = []
    for i, c in enumerate(raw["configs"]):
        try:
            configs.append(
                SharedConfig(
                    id=str(c["id"]),
                    family=str(c["family"]),
                    depth=int(c["depth"]),
                    width=int(c["width"]),
                    activation=str(c["activation"]),
                    input_shape=tuple(int(n) for n in c["input_shape"]),
                    energy_j=float(c["J_per_step"]),
                    time_s=float(c["s_per_step"]),
                    repeat_energy_j=_opt(c.get("repeat_J_per_step")),
                    repeat_time_s=_opt(c.get("repeat_s_per_step")),
                    flops_fcm=float(c.get("flops_per_step_FlopCounterMode", 0.0)),
                )
            )
        except (KeyError, TypeError, ValueError) as e:
            raise ValueError(
                f"shared data {os.fspath(path)!r}: config #{i} lacks or mangles {e}; expected "
                "id, family, depth, width, activation, input_shape, J_per_step, s_per_step; "
                "fix: pass the unmodified shared file"
            ) from None
    return SharedData(
        configs=tuple(configs),
        microbenchmarks=raw.get("format_microbenchmarks", {}),
        source=f"{os.path.basename(os.fspath(path))}: {raw.get('what', '')}",
        hardware=raw.get("hardware", {}),
    )


def is_shared_data(raw: Any) -> bool:
    """Whether a parsed JSON document is the shared training-step data set."""
    return (
        isinstance(raw, dict)
        and isinstance(raw.get("configs"), list)
        and bool(raw["configs"])
        and isinstance(raw["configs"][0], dict)
        and "J_per_step" in raw["configs"][0]
    )


def _opt(x: Any) -> float | None:
    return None if x is None else float(x)


# --- the models, as the data's `models` field describes them ---------------------------------


class _Block(nn.Module):
    """A pre-norm transformer block: attention then a 4x feed-forward, both residual."""

    def __init__(self, width: int, act: type[nn.Module]) -> None:
        super().__init__()
        self.ln1 = nn.LayerNorm(width)
        self.attn = nn.MultiheadAttention(width, 8, batch_first=True)
        self.ln2 = nn.LayerNorm(width)
        self.ff = nn.Sequential(nn.Linear(width, 4 * width), act(), nn.Linear(4 * width, width))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.ln1(x)
        x = x + self.attn(h, h, h, need_weights=False)[0]
        return x + self.ff(self.ln2(x))


def build_model(config: SharedConfig) -> nn.Module:
    """The configuration's model, as the shared data's ``models`` field describes it.

    Raises:
        ValueError: an unknown family or activation.
    """
    act = ACTIVATIONS.get(config.activation)
    if act is None:
        raise ValueError(
            f"shared config {config.id!r}: expected activation in {sorted(ACTIVATIONS)}; "
            f"found {config.activation!r}; fix: add it to ACTIVATIONS"
        )
    layers: list[nn.Module] = []
    if config.family == "mlp":
        layers.append(nn.Flatten())
        d_in = math.prod(config.input_shape[1:])
        for _ in range(config.depth):
            layers += [nn.Linear(d_in, config.width), act()]
            d_in = config.width
        layers.append(nn.Linear(config.width, 10))
    elif config.family == "cnn":
        c_in = config.input_shape[1]
        for i in range(config.depth):
            layers += [nn.Conv2d(c_in, config.width, 3, padding=1), act()]
            c_in = config.width
            if i % 2 == 1:  # after the 2nd and 4th convolution
                layers.append(nn.MaxPool2d(2))
        layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(config.width, 10)]
    elif config.family == "tfm":
        layers += [_Block(config.width, act) for _ in range(config.depth)]
        layers += [nn.Flatten(), nn.Linear(config.input_shape[1] * config.width, 10)]
    else:
        raise ValueError(
            f"shared config {config.id!r}: expected family mlp, cnn or tfm; found "
            f"{config.family!r}; fix: extend build_model"
        )
    return nn.Sequential(*layers)


def count_step(config: SharedConfig, hardware: str = TARGET) -> StepProfile:
    """Count one training step of ``config`` as ``hardware`` runs it, without running it.

    The step is the data's: ``CrossEntropyLoss`` on 10 random classes, backward, and
    ``SGD(lr=1e-3)`` with the device's default path (foreach on CUDA), counted on the ``meta``
    device by ``profile(..., hardware=...)``, which applies CUDA's choices: fp32 convolutions
    in TF32 (``cudnn.allow_tf32``, confirmed by the data's ``software`` field), fp32 matmuls in
    fp32.
    """
    torch.manual_seed(0)
    with torch.device("meta"):
        model = build_model(config)
        x = torch.randn(config.input_shape)
        y = torch.randint(0, 10, (config.input_shape[0],))
    opt = torch.optim.SGD(model.parameters(), lr=1e-3)
    return profile(
        model,
        x,
        train=True,
        optimizer=opt,
        loss_fn=nn.CrossEntropyLoss(),
        target=y,
        hardware=hardware,
    )


def shared_samples(
    data: SharedData | str | os.PathLike[str],
    hardware: str = TARGET,
    ids: Iterable[str] | None = None,
) -> list[tuple[SharedConfig, Sample]]:
    """Each configuration (or those in ``ids``) with its counted step as a :class:`Sample`."""
    if not isinstance(data, SharedData):
        data = load_shared_data(data)
    wanted = None if ids is None else set(ids)
    out = []
    for c in data.configs:
        if wanted is not None and c.id not in wanted:
            continue
        out.append((c, Sample(count_step(c, hardware), c.energy_j, c.time_s, label=c.id)))
    return out


def shapes(configs: Sequence[SharedConfig]) -> list[str]:
    """The shape group (family x depth x width) of each configuration."""
    return [c.shape for c in configs]


_MATMUL_N = 8192  # the microbenchmarks' square matmul
_MATMUL_FORMATS: Mapping[str, tuple[NumberFormat, int]] = {
    "fp32": (NumberFormat.FP32, 4),  # CUDA matmul TF32 off: the vector units' fp32 rate
    "tf32": (NumberFormat.TF32, 4),
    "bf16": (NumberFormat.BF16, 2),
    "fp16": (NumberFormat.FP16, 2),
}


# the 3x3 convolution microbenchmark: input [64, 256, 56, 56], 256 output channels
_CONV_N, _CONV_C, _CONV_HW, _CONV_K = 64, 256, 56, 3
_CONV_FORMATS: Mapping[str, tuple[NumberFormat, int]] = {
    "fp32": (NumberFormat.FP32, 4),  # cuDNN TF32 off
    "tf32": (NumberFormat.TF32, 4),
    "bf16": (NumberFormat.BF16, 2),
}


def microbenchmark_samples(data: SharedData) -> list[Sample]:
    """The format microbenchmarks as samples: 8192^3 matmuls and 3x3 convolutions.

    A matmul iteration is one kernel (``kind="matmul"``) of 8192^3 FMAs reading two and
    writing one 8192^2 matrix. A convolution iteration is one cuDNN kernel (``kind="conv"``)
    of 64 x 56 x 56 x 256 x 256 x 9 FMAs (a 64x256x56x56 input, 256 output channels, "same"
    padding) reading the input and the weight and writing the output. Each one's time is its
    FLOPs over the measured rate and its energy the measured mean power times that time. The
    matmuls pin each format's rate and energy per FLOP, bf16 and fp16 included, which no
    training step of the data runs; the convolutions pin the convolutions' share of that rate
    (``conv_share``) for fp32, TF32 and bf16.
    """
    from lightning_to_energy.counting.cost_model import AluOp

    out = []
    n = _MATMUL_N
    for name, entry in data.microbenchmarks.get("matmul", {}).items():
        if name not in _MATMUL_FORMATS:
            continue
        fmt, size = _MATMUL_FORMATS[name]
        cost = OpCost(
            {(AluOp.FMA, fmt, Unit.MATRIX): float(n**3)},
            bytes_read=2 * n * n * size,
            bytes_written=n * n * size,
            kernels=1,
            flops=2 * n**3,
            kind=MATMUL,
        )
        time_s = 2 * n**3 / (float(entry["TFLOP_per_s"]) * 1e12)
        step = StepProfile(flops=2 * n**3, kernels=1, op_costs=((cost, 1),))
        out.append(Sample(step, float(entry["mean_W"]) * time_s, time_s, f"matmul-{name}"))
    b, c, hw, k = _CONV_N, _CONV_C, _CONV_HW, _CONV_K
    fma = b * hw * hw * c * c * k * k
    for name, entry in data.microbenchmarks.get("conv3x3", {}).items():
        if name not in _CONV_FORMATS:
            continue
        fmt, size = _CONV_FORMATS[name]
        # NB: counted without a bias (one kernel): a bias would add one read and write of
        # the output, 0.2 % of the work's time at these sizes.
        cost = OpCost(
            {(AluOp.FMA, fmt, Unit.MATRIX): float(fma)},
            bytes_read=(b * c * hw * hw + c * c * k * k) * size,
            bytes_written=b * c * hw * hw * size,
            kernels=1,
            flops=2 * fma,
            kind=CONV,
        )
        time_s = 2 * fma / (float(entry["TFLOP_per_s"]) * 1e12)
        step = StepProfile(flops=2 * fma, kernels=1, op_costs=((cost, 1),))
        out.append(Sample(step, float(entry["mean_W"]) * time_s, time_s, f"conv3x3-{name}"))
    return out
