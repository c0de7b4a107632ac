"""``lightning-to-energy profile MODULE:ATTR --input 8x3x32x32``: count one step of a model.

``MODULE:ATTR`` names an ``nn.Module`` instance, an ``nn.Module`` class (built with no
arguments) or a zero-argument factory returning a module, e.g. ``torchvision.models:resnet18``
or ``mypkg.nets:Net``. The current directory is importable, as with ``python -m``.

Each ``--input`` is one positional input of ``forward``: ``SHAPE[:DTYPE[:HIGH]]`` with SHAPE
like ``8x3x32x32``, or a keyword input ``NAME=SHAPE[:DTYPE[:HIGH]]`` (``labels=8x64:int64:1000``).
Floating inputs are standard normal; integer inputs (``8x128:int64`` for token ids) are uniform
in ``[0, HIGH)``, HIGH defaulting to 2 (valid indices for any embedding); bool inputs are random.

``--target KEY`` counts the step as that hardware runs it, without running it: the model is
built under ``torch.device("meta")`` and counted on meta tensors with the target's dispatch
rules (``profile(hardware=...)``).
"""

from __future__ import annotations

import argparse
import importlib
import inspect
import json
import os
import sys
from typing import Any

from lightning_to_energy.cli._common import (
    CliError,
    check_hardware_arg,
    cli_device,
    count_arg,
    make_input,
    precision_context,
)

__all__ = [
    "PRECISIONS",
    "TRACEBACK_HINT",
    "add_parser",
    "add_traceback_flag",
    "build_model_and_inputs",
    "load_module",
    "parse_input",
    "resolve_target_arg",
    "run",
]

_HELP = "count the transistor operations, FLOPs, bytes and kernels of one step of a model"

_DTYPES = {
    "fp32": "float32",
    "float32": "float32",
    "float": "float32",
    "fp64": "float64",
    "float64": "float64",
    "double": "float64",
    "bf16": "bfloat16",
    "bfloat16": "bfloat16",
    "fp16": "float16",
    "float16": "float16",
    "half": "float16",
    "int64": "int64",
    "long": "int64",
    "int32": "int32",
    "int": "int32",
    "int16": "int16",
    "int8": "int8",
    "uint8": "uint8",
    "bool": "bool",
}
# The formats a step can be run in. The cost model also weighs fp8 and int8, but only where the
# model itself computes in them (no autocast exists for them): `profile` counts what it sees.
PRECISIONS = ("fp32", "tf32", "bf16", "fp16")


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register the ``profile`` subcommand on ``subparsers`` and set its ``func``.

    Args:
        subparsers: the object returned by ``ArgumentParser.add_subparsers()``.

    Returns:
        The new subparser.
    """
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "profile",
        help=_HELP,
        description=(
            "Run one forward pass (or, with --train, one training step) of a model on random "
            "inputs under the op counter, and print its transistor operations (TOs), FLOPs, "
            "bytes moved and kernels, by phase and by module, plus any op without a formula."
        ),
    )
    parser.add_argument(
        "target",
        metavar="MODULE:ATTR",
        help="an nn.Module instance, nn.Module class or zero-argument factory, e.g. pkg.nets:Net",
    )
    parser.add_argument(
        "--input",
        action="append",
        default=[],
        metavar="[NAME=]SHAPE[:DTYPE[:HIGH]]",
        help=(
            "one forward input, e.g. 8x3x32x32 or 8x128:int64 (token ids in [0, HIGH), "
            "HIGH default 2); NAME= makes it a keyword input (labels=8x64:int64:1000); "
            "repeat for several inputs"
        ),
    )
    parser.add_argument(
        "--dtype",
        default="fp32",
        choices=PRECISIONS,
        help="compute precision: bf16/fp16 run under autocast (or a cast where unsupported)",
    )
    parser.add_argument("--train", action="store_true", help="count a whole training step")
    parser.add_argument(
        "--optimizer",
        choices=("sgd", "adam", "adamw"),
        help="with --train: also count this optimizer's step",
    )
    parser.add_argument("--device", default="cpu", help="torch device (default: cpu)")
    parser.add_argument(
        "--target",
        dest="hardware",
        default=None,
        metavar="KEY",
        help=(
            "count the step as this hardware runs it, without running it (e.g. h100-sxm; "
            "'cuda' for the local GPU): the model is built on the meta device"
        ),
    )
    parser.add_argument("--top", type=count_arg, default=10, help="modules to list (default: 10)")
    parser.add_argument("--json", action="store_true", help="print a JSON object instead")
    add_traceback_flag(parser)
    parser.set_defaults(func=run)
    return parser


def run(args: argparse.Namespace) -> int:
    """Build the model and its inputs, count one step and print the result.

    Raises:
        CliError: a bad import path, attribute, input shape or dtype, an optimizer without
            --train, an unavailable device, a negative --top, a model without trainable
            parameters or without a differentiable output for --train, or a model that fails
            on the inputs.
    """
    from lightning_to_energy.counting import profile
    from lightning_to_energy.counting.step import DefaultLossError, random_label_loss

    if args.optimizer and not args.train:
        raise CliError(
            f"expected --train with --optimizer {args.optimizer}, found a forward-only run. "
            "Fix: add --train, or drop --optimizer."
        )
    if not args.input:
        raise CliError(
            "expected at least one --input SHAPE (e.g. --input 8x3x32x32), found none. "
            "Fix: pass one --input per positional argument of the model's forward."
        )
    if args.top < 0:
        raise CliError(
            f"expected --top as a number of modules >= 0, found {args.top}. Fix: e.g. --top 10."
        )
    if args.hardware is not None and args.device != "cpu":
        raise CliError(
            f"expected either --target (count for that hardware, on meta tensors) or --device "
            f"(run here), found both (--target {args.hardware} --device {args.device}). Fix: "
            "drop one of them."
        )
    check_hardware_arg(args.hardware, "--target")
    hardware = resolve_target_arg(args.hardware)
    device = cli_device(args.device, any_type=True)
    model, inputs, kwargs = build_model_and_inputs(
        args.target, args.input, device, hardware=args.hardware
    )
    if args.train and not any(p.requires_grad for p in model.parameters()):
        raise CliError(
            f"expected {args.target} to have trainable parameters for --train, found none. "
            "Fix: drop --train to count a forward pass."
        )
    # Forward only counts inference: dropout off, batch norm on its running statistics.
    model.train(args.train)
    precision, how = precision_context(args.dtype, device, model, inputs)
    try:
        with precision:
            loss_fn, target = (
                random_label_loss(model, *inputs, kwargs=kwargs) if args.train else (None, None)
            )
            result = profile(
                model,
                *inputs,
                train=args.train,
                optimizer=args.optimizer,
                loss_fn=loss_fn,
                target=target,
                hardware=hardware,
                kwargs=kwargs,
                fallback="cpu",  # an op without a meta kernel: count on the CPU, warning
            )
    except DefaultLossError:
        raise CliError(
            f"expected {args.target}'s output to hold floating-point tensors that require grad "
            "(--train sums them into its loss), found none. Fix: drop --train, or point at a "
            "model whose forward returns a differentiable output such as logits."
        ) from None
    except Exception as exc:  # the user's model may raise anything (asserts, KeyError...)
        shapes = ", ".join(args.input)
        raise CliError(
            f"expected {args.target} to run on inputs [{shapes}], found "
            f"{type(exc).__name__}: {_first_line(exc)}. Fix: give --input shapes and dtypes "
            f"that the model's forward accepts{TRACEBACK_HINT}"
        ) from exc
    meta = {
        "model": args.target,
        "inputs": list(args.input),
        "dtype": args.dtype,
        "precision": how,
        "train": args.train,
        "optimizer": args.optimizer,
        "device": str(device) if hardware is None else "meta",
        "counted_for": args.hardware,
    }
    if args.json:
        print(json.dumps({**meta, **result.to_dict()}, indent=2))
    else:
        _render(result, meta, args.top)
    return 0


# Appended to errors raised by the user's own code: the flag prints where it failed.
TRACEBACK_HINT = " (--traceback shows where it failed)."


def add_traceback_flag(parser: argparse.ArgumentParser) -> None:
    """Add ``--traceback``: print the traceback of an error raised by the user's own code.

    :func:`lightning_to_energy.cli.main` prints the ``__cause__`` of the ``CliError`` it
    catches: a command raises ``CliError(...) from exc`` for errors of the user's code.
    """
    parser.add_argument(
        "--traceback",
        action="store_true",
        help="print the traceback of an error raised by the model's own code",
    )


def _first_line(exc: BaseException) -> str:
    """The first line of ``exc``'s message without a closing period, or its type's name."""
    text = str(exc).strip()
    return text.splitlines()[0].rstrip(".") if text else type(exc).__name__


def resolve_target_arg(key: str | None) -> Any:
    """The count target of ``--target KEY``, checked against the hardware table.

    Raises:
        CliError: an unknown key (the message lists the known keys).
    """
    import torch

    from lightning_to_energy.counting.target import resolve_target

    if key is not None and key.strip().lower() == "cuda" and not torch.cuda.is_available():
        # resolve_target's own fix names its Python arguments (hardware=..., None)
        raise CliError(
            f"expected a CUDA device for --target cuda, found none (torch {torch.__version__}). "
            "Fix: name the target GPU instead (e.g. --target h100-sxm), or drop --target to "
            "count on this machine."
        )
    try:
        return resolve_target(key)
    except ValueError as exc:
        raise CliError(f"--target: {_first_line(exc)}.") from None


def build_model_and_inputs(
    target: str, texts: list[str], device: Any, *, hardware: str | None = None
) -> tuple[Any, list[Any], dict[str, Any]]:
    """The model of ``MODULE:ATTR`` and random inputs for ``--input`` texts.

    With ``hardware`` (a ``--target``) the model is built under ``torch.device("meta")`` and
    the inputs are meta tensors: nothing is allocated, whatever the model's size (an instance
    that already exists at import time stays where it is; ``profile`` counts it on meta
    stand-ins). Without it, the model is moved to ``device`` and the inputs made there.

    Returns:
        ``(model, positional inputs, keyword inputs)``.

    Raises:
        CliError: a bad target, input or unusable device.
    """
    import torch

    named: dict[str, tuple[tuple[int, ...], str, int]] = {}
    specs = []
    for text in texts:
        name, sep, rest = text.partition("=")
        if not sep:
            specs.append(parse_input(text))
        elif not name.isidentifier() or name in named:
            raise CliError(
                f"expected --input NAME=SHAPE with NAME a new Python identifier, found "
                f"{text!r}. Fix: e.g. --input labels=8x64:int64:1000, once per name."
            )
        else:
            named[name] = parse_input(rest)
    if hardware is not None:
        with torch.device("meta"):
            model = load_module(target)
        device = torch.device("meta")
    else:
        model = load_module(target)
    try:
        if hardware is None:
            model.to(device)
        inputs = [make_input(shape, dtype, high, device) for shape, dtype, high in specs]
        kwargs = {
            k: make_input(shape, dtype, high, device) for k, (shape, dtype, high) in named.items()
        }
    except RuntimeError as exc:
        raise CliError(
            f"expected --device {device} to be usable, found {type(exc).__name__}: "
            f"{_first_line(exc)}. Fix: use --device cpu, or a device this PyTorch build has."
        ) from None
    return model, inputs, kwargs


# --- parsing --------------------------------------------------------------------------------


def parse_input(text: str) -> tuple[tuple[int, ...], str, int]:
    """Parse ``SHAPE[:DTYPE[:HIGH]]`` into (shape, torch dtype name, high).

    Raises:
        CliError: a malformed shape, an unknown dtype or a bad HIGH.
    """
    parts = text.strip().split(":")
    if len(parts) > 3:
        raise CliError(
            f"expected --input SHAPE[:DTYPE[:HIGH]] (e.g. 8x128:int64:1000), found {text!r}. "
            "Fix: use at most two ':' separators."
        )
    try:
        shape = tuple(int(d) for d in parts[0].lower().split("x"))
        if any(d <= 0 for d in shape):
            raise ValueError
    except ValueError:
        raise CliError(
            f"expected --input SHAPE as positive integers joined by 'x' (e.g. 8x3x32x32), "
            f"found {parts[0]!r}. Fix: write the shape like 8x3x32x32."
        ) from None
    dtype = "float32"
    if len(parts) > 1:
        name = parts[1].lower()
        if name not in _DTYPES:
            raise CliError(
                f"expected an input dtype in {sorted(set(_DTYPES))}, found {parts[1]!r} in "
                f"--input {text!r}. Fix: use e.g. {parts[0]}:int64 for token ids."
            )
        dtype = _DTYPES[name]
    high = 2
    if len(parts) > 2:
        try:
            high = int(parts[2])
            if high < 1:
                raise ValueError
        except ValueError:
            raise CliError(
                f"expected HIGH, the exclusive upper bound of integer inputs, as an integer "
                f">= 1, found {parts[2]!r} in --input {text!r}. Fix: e.g. {parts[0]}:int64:1000."
            ) from None
        if not (dtype.startswith(("int", "uint"))):
            raise CliError(
                f"expected HIGH only for integer inputs, found it with dtype {dtype} in "
                f"--input {text!r}. Fix: drop ':{parts[2]}' or use an integer dtype."
            )
    return shape, dtype, high


def load_module(target: str) -> Any:
    """Import ``MODULE:ATTR`` and return an ``nn.Module`` built from it.

    Raises:
        CliError: the target is malformed, cannot be imported, lacks ATTR, or is neither a
            module, a module class nor a zero-argument factory of one.
    """
    import torch

    module_name, sep, attr = target.partition(":")
    if not sep or not module_name or not attr:
        raise CliError(
            f"expected MODULE:ATTR (e.g. mypkg.nets:Net), found {target!r}. Fix: separate the "
            "import path and the attribute with ':'."
        )
    if module_name.endswith(".py") or "/" in module_name or os.sep in module_name:
        # A file path (examples/net.py:Net) is what users type first; importlib answers it
        # with "No module named" or a relative-import TypeError that says nothing useful.
        path = module_name.removesuffix(".py")
        folder, _, stem = path.replace(os.sep, "/").rpartition("/")
        run_from = f"cd {folder} && " if folder not in ("", ".") else ""
        raise CliError(
            f"expected MODULE as a dotted import path (e.g. mypkg.nets), found the file path "
            f"{module_name!r}. Fix: run from the folder that holds the file and name the "
            f"module without '.py': `{run_from}lightning-to-energy ... {stem}:{attr}`."
        )
    if os.getcwd() not in sys.path and "" not in sys.path:
        sys.path.insert(0, os.getcwd())  # as `python -m` does
    try:
        mod = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        raise CliError(
            f"expected an importable module {module_name!r}, found none ({exc}). Fix: check "
            "the spelling, install the package, or run from the directory that holds it."
        ) from None
    except Exception as exc:
        raise CliError(
            f"expected {module_name!r} to import cleanly, found {type(exc).__name__}: "
            f"{_first_line(exc)}. Fix: run `python -c 'import {module_name}'` and fix the error "
            f"it shows{TRACEBACK_HINT}"
        ) from exc
    obj: Any = mod
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise CliError(
                f"expected {module_name!r} to define {attr!r}, found no {part!r}. Fix: check "
                "the attribute name after ':'."
            )
        obj = getattr(obj, part)
    if isinstance(obj, torch.nn.Module):
        return obj
    if not callable(obj):
        raise CliError(
            f"expected {target} to be an nn.Module, an nn.Module class or a zero-argument "
            f"factory, found a {type(obj).__name__}. Fix: point at the model or its class."
        )
    try:
        inspect.signature(obj).bind()
    except TypeError as exc:  # it needs arguments: not the user's code failing
        raise CliError(
            f"expected {target} to build with no arguments, found that it needs some ({exc}). "
            "Fix: point at a module instance or a zero-argument factory function."
        ) from None
    except ValueError:
        pass  # no signature to read (a builtin): calling it will tell
    try:
        built = obj()
    except Exception as exc:  # the user's own constructor or factory failed
        raise CliError(
            f"expected {target}() to build the model, found {type(exc).__name__}: "
            f"{_first_line(exc)}. Fix: correct the constructor or factory{TRACEBACK_HINT}"
        ) from exc
    if not isinstance(built, torch.nn.Module):
        raise CliError(
            f"expected {target}() to return an nn.Module, found a {type(built).__name__}. "
            "Fix: point at a factory that returns the model."
        )
    return built


# --- rendering ------------------------------------------------------------------------------


def _si(x: float) -> str:
    for unit, scale in (("P", 1e15), ("T", 1e12), ("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(x) >= scale:
            return f"{x / scale:.3g} {unit}"
    return f"{x:.3g}"


def _render(result: Any, meta: dict[str, Any], top: int) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    step = "training step" if meta["train"] else "forward pass"
    if meta["optimizer"]:
        step += f" + {meta['optimizer']}"
    console.print(
        f"[bold]{meta['model']}[/bold]: one {step}, inputs {', '.join(meta['inputs'])}, "
        f"{meta['dtype']} ({meta['precision']}), {meta['device']}"
    )
    totals = Table(title="Totals", show_header=False)
    totals.add_column("figure")
    totals.add_column("value", justify="right")
    totals.add_row("transistor operations (TOs)", _si(result.tos))
    totals.add_row("  matrix units, fp64/fp32", _si(result.tos_matrix_full))
    totals.add_row("  matrix units, reduced formats", _si(result.tos_matrix_reduced))
    totals.add_row("  vector units", _si(result.tos_vector))
    totals.add_row("FLOPs (as FlopCounterMode counts)", _si(result.flops))
    totals.add_row("bytes read + written", f"{_si(result.bytes)}B")
    totals.add_row("kernels", f"{result.kernels:,.0f}")
    console.print(totals)

    phases = Table(title="By phase")
    for col in ("phase", "TOs", "share", "FLOPs", "bytes", "kernels"):
        phases.add_column(col, justify="left" if col == "phase" else "right")
    for name, t in result.by_phase.items():
        if t.calls:
            share = t.tos / result.tos if result.tos else 0.0
            phases.add_row(
                name, _si(t.tos), f"{share:.1%}", _si(t.flops), f"{_si(t.bytes)}B", f"{t.kernels:,}"
            )
    console.print(phases)

    ranked = sorted(result.by_module.items(), key=lambda kv: kv[1].tos, reverse=True)[:top]
    if ranked:  # --top 0 asks for no table, as predict --top 0 prints none
        modules = Table(title=f"Top {len(ranked)} modules by TOs (own ops, children excluded)")
        for col in ("module", "TOs", "share", "FLOPs", "calls"):
            modules.add_column(col, justify="left" if col == "module" else "right")
        for name, t in ranked:
            share = t.tos / result.tos if result.tos else 0.0
            modules.add_row(name, _si(t.tos), f"{share:.1%}", _si(t.flops), f"{t.calls:,}")
        console.print(modules)

    if result.unmodelled_ops:
        ops = ", ".join(
            f"{name} x{calls}"
            for name, calls in sorted(result.unmodelled_ops.items(), key=lambda kv: -kv[1])
        )
        console.print(
            f"[yellow]Unmodelled ops (estimated as one add per output element):[/yellow] {ops}"
        )
    else:
        console.print("Every op had a formula.")
