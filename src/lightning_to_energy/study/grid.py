"""The study grid: which configurations the scaling study trains, and their identifiers.

A configuration is a feed-forward network, a CNN or a stack of transformer blocks, on
scikit-learn's bundled digits or on a synthetic CIFAR-shaped set, in fp32 or bf16 autocast.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    pass

__all__ = [
    "ACTIVATIONS",
    "DATASETS",
    "DTYPES",
    "FAMILIES",
    "GRIDS",
    "SAMPLE_SHAPES",
    "StudyConfig",
    "config_id",
    "default_grid",
    "make_config",
]

FAMILIES = ("mlp", "cnn", "transformer")
DATASETS = ("digits", "cifar-synthetic")
DTYPES = ("fp32", "bf16")
ACTIVATIONS = ("relu", "sigmoid", "tanh", "gelu")
GRIDS = ("full", "small", "tiny")
SAMPLE_SHAPES: Mapping[str, tuple[int, int, int]] = {
    "digits": (1, 8, 8),
    "cifar-synthetic": (3, 32, 32),
}
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
