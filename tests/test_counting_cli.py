"""``lightning-to-energy profile``: JSON and table output, and one-line errors (exit 2)."""

from __future__ import annotations

import json

import pytest
import torch

from lightning_to_energy import cli


@pytest.fixture(autouse=True)
def _only_profile(monkeypatch: pytest.MonkeyPatch) -> None:
    # isolate the profile subcommand from the other subcommands' imports
    monkeypatch.setattr(cli, "_SUBCOMMANDS", ("profile",))


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = cli.main(["profile", *argv])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize("target", ["_models:TinyMLP", "_models:tiny_mlp", "_models:TINY_MLP"])
def test_json_for_a_class_a_factory_and_an_instance(
    capsys: pytest.CaptureFixture[str], target: str
) -> None:
    code, out, err = run(capsys, target, "--input", "8x16", "--json")
    assert (code, err) == (0, "")
    d = json.loads(out)
    for key in ("tos", "flops", "bytes", "by_phase", "by_module", "unmodelled_ops"):
        assert key in d
    # forward only: fc1 2 * 8 * 32 * 16 = 8192 plus fc2 2 * 8 * 4 * 32 = 2048
    assert d["flops"] == 10240
    assert d["by_phase"]["backward"]["calls"] == 0
    assert set(d["by_module"]) == {"fc1", "act", "fc2"}
    assert d["unmodelled_ops"] == {}


def test_forward_only_counts_inference_and_train_counts_training(
    capsys: pytest.CaptureFixture[str],
) -> None:
    code, out, _ = run(capsys, "_models:DropoutMLP", "--input", "8x16", "--json")
    assert code == 0
    inference = json.loads(out)
    # eval mode: dropout is the identity, no kernel runs for it
    assert not any("dropout" in op or "bernoulli" in op for op in inference["by_op"])
    code, out, _ = run(capsys, "_models:DropoutMLP", "--input", "8x16", "--train", "--json")
    assert code == 0
    training = json.loads(out)
    assert any("dropout" in op or "bernoulli" in op for op in training["by_op"])


def test_json_for_a_train_step_in_bf16(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(
        capsys, "_models:TinyGPT", "--input", "2x16:int64:64", "--train",
        "--optimizer", "adamw", "--dtype", "bf16", "--json",
    )  # fmt: skip
    assert code == 0
    d = json.loads(out)
    assert (d["precision"], d["train"], d["optimizer"]) == ("autocast", True, "adamw")
    assert all(d["by_phase"][p]["tos"] > 0 for p in ("forward", "backward", "optimizer"))
    assert d["by_format"]["bf16"] > 0
    assert d["tos_matrix_full"] == 0


def test_table_output(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "_models:TinyCNN", "--input", "2x3x16x16", "--train")
    assert code == 0
    for text in ("Totals", "By phase", "backward", "conv2", "Every op had a formula"):
        assert text in out


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["_models", "--input", "8x16"], "expected MODULE:ATTR"),
        (["no_such_module_xyz:Net", "--input", "8x16"], "importable module"),
        (["_models:Nope", "--input", "8x16"], "define 'Nope'"),
        (["_models:Attention.heads", "--input", "8x16"], "define 'Attention.heads'"),
        (["json:dumps", "--input", "8x16"], "build with no arguments"),
        (["_models:TinyMLP"], "at least one --input"),
        (["_models:TinyMLP", "--input", "8xq"], "positive integers joined by 'x'"),
        (["_models:TinyMLP", "--input", "8x0"], "positive integers joined by 'x'"),
        (["_models:TinyMLP", "--input", "8x16:complex"], "input dtype"),
        (["_models:TinyMLP", "--input", "8x16:int64:0"], "HIGH"),
        (["_models:TinyMLP", "--input", "8x16:float32:5"], "only for integer inputs"),
        (["_models:TinyMLP", "--input", "8x15"], "to run on inputs [8x15]"),
        (["_models:TinyMLP", "--input", "8x16", "--optimizer", "sgd"], "with --optimizer"),
        (["_models:TinyMLP", "--input", "8x16", "--device", "cuda:7"], "CUDA device"),
        # a model that raises something other than RuntimeError/TypeError/ValueError/IndexError
        # printed a traceback
        (["_models:ShapeCheckedMLP", "--input", "8x2x16"], "AssertionError: expected [batch"),
        # profile()'s own checks were reported as a bad input shape
        (["torch.nn:ReLU", "--input", "8x16", "--train"], "trainable parameters for --train"),
        (["_models:ArgmaxMLP", "--input", "8x16", "--train"], "require grad"),
        # a device type this PyTorch build lacks printed a traceback from model.to(device)
        pytest.param(
            ["_models:TinyMLP", "--input", "8x16", "--device", "mps"],
            "--device mps to be usable",
            marks=pytest.mark.skipif(torch.backends.mps.is_available(), reason="MPS is usable"),
        ),
        (["_models:TinyMLP", "--input", "8x16", "--top", "-1"], "--top"),
        # a file path for MODULE said "No module named 'x/_models.py'", or, with './', told
        # the user to run `python -c 'import ./_models.py'`
        (
            ["tests/_models.py:TinyMLP", "--input", "8x16"],
            "found the file path 'tests/_models.py'. Fix: run from the folder that holds the "
            "file and name the module without '.py': `cd tests && lightning-to-energy ... "
            "_models:TinyMLP`",
        ),
        (["./_models.py:TinyMLP", "--input", "8x16"], "`lightning-to-energy ... _models:TinyMLP`"),
        (["_models.py:TinyMLP", "--input", "8x16"], "found the file path '_models.py'"),
    ],
)
def test_errors_are_one_line_with_exit_2(
    capsys: pytest.CaptureFixture[str], argv: list[str], expected: str
) -> None:
    code, out, err = run(capsys, *argv)
    assert code == 2
    assert out == ""
    assert err.startswith("lightning-to-energy profile: error: expected")
    assert expected in err
    assert "Fix:" in err
    assert err.count("\n") == 1
    assert "Traceback" not in err


def test_a_train_step_of_a_classifier_counts_cross_entropy_on_random_labels(
    capsys: pytest.CaptureFixture[str],
) -> None:
    code, out, _ = run(capsys, "_models:TinyMLP", "--input", "8x16", "--train", "--json")
    assert code == 0
    ops = json.loads(out)["by_op"]
    # TinyMLP's [8, 4] logits: log_softmax and nll_loss, forward and backward, as in a real
    # classification step (the labels are made outside the counted step: no random kernel)
    for op in ("_log_softmax", "_log_softmax_backward_data", "nll_loss_forward"):
        assert any(op in name for name in ops), (op, sorted(ops))
    assert not any("random" in name or "randint" in name for name in ops)


def test_random_label_loss_reads_the_classes_and_leaves_the_model_as_it_was() -> None:
    from _models import TinyCNN
    from lightning_to_energy.counting.step import random_label_loss

    model = TinyCNN(classes=10)
    stats = model.bn1.running_mean.clone()
    loss_fn, target = random_label_loss(model, torch.randn(6, 3, 16, 16))
    # [6, 10] logits: 6 labels in [0, 10)
    assert loss_fn is not None and target.shape == (6,)
    assert int(target.min()) >= 0 and int(target.max()) < 10
    # still in train mode, and the probe (eval, no grad) moved no batch-norm statistic
    assert model.training and torch.equal(model.bn1.running_mean, stats)
    # an output with no class dimension: the default summed loss applies
    assert random_label_loss(torch.nn.Linear(4, 1), torch.randn(3, 4)) == (None, None)


def test_top_0_prints_no_module_table(capsys: pytest.CaptureFixture[str]) -> None:
    # as predict --top 0 does: no "Top 0 modules" table, the rest unchanged
    code, out, _ = run(capsys, "_models:TinyMLP", "--input", "8x16", "--top", "0")
    assert code == 0 and "modules by TOs" not in out and "Every op had a formula." in out
    code, out, _ = run(capsys, "_models:TinyMLP", "--input", "8x16", "--top", "50")
    # TinyMLP has fewer modules than 50: the title counts the rows it has
    assert "Top 50" not in out and "modules by TOs" in out
