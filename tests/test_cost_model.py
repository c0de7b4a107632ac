"""Tests of the transistor cost model: building blocks by hand, sanity ratios, overrides, files."""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import pytest

from lightning_to_energy.counting.cost_model import (
    FLOAT_SPECS,
    AluOp,
    CostModel,
    FloatSpec,
    NumberFormat,
    Unit,
    adder_tos,
    comparator_tos,
    derive_tos,
    divider_tos,
    exp_degree,
    float_add_tos,
    float_cmp_tos,
    float_div_tos,
    float_fma_tos,
    float_mul_tos,
    float_sqrt_tos,
    format_from_str,
    incrementer_tos,
    int_to_float_tos,
    multiplier_tos,
    normaliser_tos,
    nr_iterations,
    op_from_str,
    or_tree_tos,
    render_markdown_table,
    seed_table_tos,
    shifter_tos,
    subtractor_tos,
)

FP32 = FloatSpec(p=24, e=8)
DOC = Path(__file__).resolve().parents[1] / "docs" / "cost-model.md"


# --- building blocks -----------------------------------------------------------------------


def test_adders_by_hand() -> None:
    # 28 * 8 = 224
    assert adder_tos(8) == 224
    # 224 + 2 * 8 = 240
    assert subtractor_tos(8) == 240
    # 18 * 24 = 432
    assert incrementer_tos(24) == 432


def test_multiplier_by_hand() -> None:
    # 6 * 24^2 + 28 * 24 * 22 + 18 * 24 = 3456 + 14784 + 432 = 18672 = 34 * 576 - 38 * 24
    assert multiplier_tos(24) == 18672
    # 2x2: 4 AND2 + 0 FA + 2 HA = 24 + 36 = 60
    assert multiplier_tos(2) == 60
    # 1x1: a single AND2
    assert multiplier_tos(1) == 6
    # the closed form 34n^2 - 38n holds for every n >= 2
    assert all(multiplier_tos(n) == 34 * n * n - 38 * n for n in range(2, 65))


def test_comparator_or_tree_divider_by_hand() -> None:
    # (2 + 12) * 31 = 434
    assert comparator_tos(31) == 434
    # (24 - 1) * 6 = 138; a single bit needs no gate
    assert or_tree_tos(24) == 138
    assert or_tree_tos(1) == 0
    # 8 rows * (8 * 12 + 28 * 8) = 8 * 320 = 2560
    assert divider_tos(8) == 2560


def test_shifters_by_hand() -> None:
    # 27 bits * ceil(log2 27) = 5 stages * 8 = 1080
    assert shifter_tos(27) == 1080
    # 8 bits, shift 0..3: ceil(log2 4) = 2 stages -> 8 * 2 * 8 = 128
    assert shifter_tos(8, max_shift=3) == 128
    # 1080 + zero tests of 1, 2, 4, 8, 16 bits: 6 * (0 + 1 + 3 + 7 + 15) + 5 * 2 = 156 + 10
    assert normaliser_tos(27) == 1080 + 156 + 10


def test_seed_iterations_degree_by_hand() -> None:
    # 4 * 16 stored bits + 16 NAND4 * 8 + 4 inverters * 2 = 64 + 128 + 8 = 200
    assert seed_table_tos(4) == 200
    # ceil(log2(24 / 4)) = ceil(2.58) = 3 (fp32), log2(53 / 4) = 3.73 -> 4 (fp64)
    assert nr_iterations(24) == 3
    assert nr_iterations(53) == 4
    # log2(11 / 4) = 1.46 -> 2 (fp16, tf32); log2(8 / 4) = 1 (bf16); the seed suffices for fp8
    assert [nr_iterations(p) for p in (11, 8, 4, 3)] == [2, 1, 0, 0]
    # ceil(24 / 4) = 6, ceil(53 / 4) = 14, at least 1
    assert [exp_degree(p) for p in (24, 53, 3)] == [6, 14, 1]


def test_float_mul_fp32_by_hand() -> None:
    # multiplier 18672 + 2 exponent adders 2 * 224 + exponent incrementer 18 * 8
    # + normalise 25 muxes * 8 + sticky 22 * 6 + round 432 + sign 12
    # = 18672 + 448 + 144 + 200 + 132 + 432 + 12 = 20040
    assert float_mul_tos(FP32) == 20040


def test_float_add_fp32_by_hand() -> None:
    # w = 27: compare 240 + swap 2 * 24 * 8 + align 1080 + sticky 23 * 6 + complement 27 * 12
    # + adder 28 * 27 + normaliser 1246 + round 432 + exponent adjust 240 + sign 12
    # = 240 + 384 + 1080 + 138 + 324 + 756 + 1246 + 432 + 240 + 12 = 4852
    assert float_add_tos(FP32) == 4852


def test_float_fma_cmp_div_sqrt_fp32_by_hand() -> None:
    # multiplier 18672 + exponent adders 2 * 224 + compare with Ec 240 + align 74 bits
    # (8 * 74 * ceil(log2 74) = 8 * 74 * 7 = 4144) + complement 74 * 12 = 888 + sticky 23 * 6
    # = 138 + adder 28 * 51 = 1428 + incrementer 432 + normaliser of 51 bits (8 * 51 * 6 = 2448
    # + zero tests 6 * (0 + 1 + 3 + 7 + 15 + 31) + 6 * 2 = 354) + round 432 + exponent adjust
    # 240 + signs 2 * 12 = 18672 + 448 + 240 + 4144 + 888 + 138 + 1428 + 432 + 2802 + 432
    # + 240 + 24 = 29888
    assert float_fma_tos(FP32) == 29888
    # comparator of 8 + 24 - 1 = 31 bits 434 + sign XOR 12 + mux 8 + select 32 * 8 = 256 -> 710
    assert float_cmp_tos(FP32) == 710
    # seed 200 + 3 iterations x (FMA 29888 + mul 20040) + final mul 20040
    # = 200 + 3 * 49928 + 20040 = 170024
    assert float_div_tos(FP32) == 170024
    # seed 200 + 3 iterations x (2 mul 40080 + FMA 29888) + final mul 20040
    # = 200 + 3 * 69968 + 20040 = 230144
    assert float_sqrt_tos(FP32) == 230144


def test_integer_compare_and_conversion_by_hand() -> None:
    # int32 compare: comparator 14 * 32 = 448 + signed XOR 12 + select 32 * 8 = 256 -> 716
    assert derive_tos(AluOp.CMP, NumberFormat.INT32) == 716.0
    # int32 -> fp32: abs 32 * 12 = 384 + incrementer 18 * 32 = 576 + normaliser of 32 bits
    # (8 * 32 * 5 = 1280 + zero tests 6 * (0 + 1 + 3 + 7 + 15) + 5 * 2 = 166) + round 432
    # + exponent 240 = 384 + 576 + 1446 + 432 + 240 = 3078
    assert int_to_float_tos(32, FP32) == 3078
    # an int32 sqrt runs in fp32 after the conversion: 3078 + 230144 = 233222
    assert derive_tos(AluOp.SQRT, NumberFormat.INT32) == 233222.0


def test_small_formats_and_bool() -> None:
    # int8 add: 28 * 8 = 224; int8 FMA: 34 * 64 - 38 * 8 + 28 * 16 = 1872 + 448 = 2320
    assert derive_tos(AluOp.ADD, NumberFormat.INT8) == 224.0
    assert derive_tos(AluOp.FMA, NumberFormat.INT8) == 2320.0
    # bool add is OR2 (6), mul AND2 (6), addcmul AND2 + OR2 (12)
    assert derive_tos(AluOp.ADD, NumberFormat.BOOL) == 6.0
    assert derive_tos(AluOp.FMA, NumberFormat.BOOL) == 12.0
    # bool exp runs in fp32 (torch promotes), with a free conversion
    assert derive_tos(AluOp.EXP, NumberFormat.BOOL) == derive_tos(AluOp.EXP, NumberFormat.FP32)


# --- sanity against Horowitz (ISSCC 2014, 45 nm) and orderings ------------------------------


def test_fp32_mul_add_ratio_matches_horowitz() -> None:
    cm = CostModel.default()
    ratio = cm.tos(AluOp.MUL, NumberFormat.FP32) / cm.tos(AluOp.ADD, NumberFormat.FP32)
    # Horowitz: 3.7 pJ / 0.9 pJ = 4.11; ours 20040 / 4852 = 4.13, within 5 %
    assert ratio == pytest.approx(3.7 / 0.9, rel=0.05)


def test_int32_mul_add_ratio() -> None:
    cm = CostModel.default()
    ratio = cm.tos(AluOp.MUL, NumberFormat.INT32) / cm.tos(AluOp.ADD, NumberFormat.INT32)
    # 33600 / 896 = 37.5: the design's "about 37" within 5 %; Horowitz's 3.1 / 0.1 = 31 within
    # 25 % (the array multiplier is larger than the Booth/Wallace one Horowitz measured)
    assert ratio == pytest.approx(37.0, rel=0.05)
    assert ratio == pytest.approx(31.0, rel=0.25)


def test_format_orderings() -> None:
    cm = CostModel.default()
    fma = {f: cm.tos(AluOp.FMA, f) for f in FLOAT_SPECS}
    assert fma[NumberFormat.FP64] > fma[NumberFormat.FP32] > fma[NumberFormat.TF32]
    assert fma[NumberFormat.TF32] > fma[NumberFormat.BF16]
    # a wider significand costs more even with a narrower exponent: fp16 (11/5) > bf16 (8/8)
    assert cm.tos(AluOp.MUL, NumberFormat.FP16) > cm.tos(AluOp.MUL, NumberFormat.BF16)
    for op in AluOp:
        fp8 = max(cm.tos(op, NumberFormat.FP8_E4M3), cm.tos(op, NumberFormat.FP8_E5M2))
        wider = [cm.tos(op, f) for f in FLOAT_SPECS if FLOAT_SPECS[f].p > 4]
        assert fp8 < min(wider), op
    # FMA costs more than its multiply, which costs more than an add, from fp16 up
    for f in (NumberFormat.FP64, NumberFormat.FP32, NumberFormat.TF32, NumberFormat.FP16):
        assert cm.tos(AluOp.FMA, f) > cm.tos(AluOp.MUL, f) > cm.tos(AluOp.ADD, f)


def test_fma_spread_fp32_tf32_bf16() -> None:
    cm = CostModel.default()
    bf16 = cm.tos(AluOp.FMA, NumberFormat.BF16)
    # about 5 : 1.5 : 1 (29888 / 5964, 9070 / 5964); far narrower than the H100's 13 : 2 : 1
    assert cm.tos(AluOp.FMA, NumberFormat.FP32) / bf16 == pytest.approx(5.0, rel=0.1)
    assert cm.tos(AluOp.FMA, NumberFormat.TF32) / bf16 == pytest.approx(1.5, rel=0.1)


# --- the CostModel object -------------------------------------------------------------------


def test_default_is_cached_complete_and_immutable() -> None:
    cm = CostModel.default()
    assert CostModel.default() is cm
    # 7 operations x 12 formats = 84 entries, all positive
    assert len(cm.to_dict()) == 84
    assert all(v > 0 for v in cm.to_dict().values())
    with pytest.raises(TypeError):
        cm.entries[(AluOp.ADD, NumberFormat.FP32)] = 1.0  # type: ignore[index]
    with pytest.raises(dataclasses.FrozenInstanceError):
        cm.entries = {}  # type: ignore[misc]


def test_incomplete_table_is_refused() -> None:
    with pytest.raises(ValueError, match="expected TOs for every operation x format; found 83"):
        CostModel({(AluOp.ADD, NumberFormat.FP32): 1.0})


def test_weigh_by_hand() -> None:
    cm = CostModel.default().with_overrides({"fma:bf16": 100, "add:fp32": 7, "mul:int8": 4})
    counts = {
        (AluOp.FMA, NumberFormat.BF16, Unit.MATRIX): 10,
        (AluOp.ADD, NumberFormat.FP32, Unit.VECTOR): 3,
        (AluOp.ADD, NumberFormat.FP32, Unit.MATRIX): 2,
        (AluOp.MUL, NumberFormat.INT8, Unit.VECTOR): 0.5,
    }
    # 10 * 100 + 3 * 7 + 2 * 7 + 0.5 * 4 = 1000 + 21 + 14 + 2 = 1037
    assert cm.weigh(counts) == 1037.0
    assert cm.weigh({}) == 0.0


def test_weigh_bad_key() -> None:
    with pytest.raises(ValueError, match="expected count keys"):
        CostModel.default().weigh({(AluOp.ADD, NumberFormat.FP32): 1.0})  # type: ignore[dict-item]


def test_overrides_from_tuple_and_string_keys() -> None:
    base = CostModel.default()
    cm = base.with_overrides({(AluOp.FMA, NumberFormat.BF16): 123.0, "ADD: float16 ": 5})
    assert cm.tos(AluOp.FMA, NumberFormat.BF16) == 123.0
    assert cm.tos(AluOp.ADD, NumberFormat.FP16) == 5.0
    # untouched entries and the base model are unchanged
    assert cm.tos(AluOp.MUL, NumberFormat.FP32) == base.tos(AluOp.MUL, NumberFormat.FP32)
    assert base.tos(AluOp.FMA, NumberFormat.BF16) == derive_tos(AluOp.FMA, NumberFormat.BF16)
    assert base.with_overrides(base.to_dict()) == base
    assert cm != base


@pytest.mark.parametrize("key", ["fma", "fma:bf17", "fmx:bf16", "fma:bf16:x", 12, ("fma",)])
def test_bad_override_keys(key: object) -> None:
    with pytest.raises(ValueError, match=r"expected .*; found .*; fix: "):
        CostModel.default().with_overrides({key: 1.0})


@pytest.mark.parametrize("value", [0, -1.0, math.nan, math.inf, "12", True, None])
def test_bad_override_values(value: object) -> None:
    with pytest.raises(ValueError, match=r'expected a positive finite .*"fma:bf16"; found .*fix'):
        CostModel.default().with_overrides({"fma:bf16": value})  # type: ignore[dict-item]


def test_from_toml(tmp_path: Path) -> None:
    path = tmp_path / "costs.toml"
    path.write_text('# my chip\n[tos]\n"fma:bf16" = 4000.0\n"add:int8" = 200\n')
    cm = CostModel.from_file(path)
    assert cm.tos(AluOp.FMA, NumberFormat.BF16) == 4000.0
    assert cm.tos(AluOp.ADD, NumberFormat.INT8) == 200.0
    assert cm.tos(AluOp.EXP, NumberFormat.FP32) == CostModel.default().tos(
        AluOp.EXP, NumberFormat.FP32
    )


def test_from_json_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "costs.json"
    cm = CostModel.default().with_overrides({"sqrt:fp64": 1e6})
    path.write_text(json.dumps({"tos": cm.to_dict()}))
    assert CostModel.from_file(str(path)) == cm


def test_from_file_errors_name_the_file(tmp_path: Path) -> None:
    missing = tmp_path / "nope.toml"
    with pytest.raises(FileNotFoundError, match=r"nope\.toml"):
        CostModel.from_file(missing)
    cases = {
        "unknown_top.json": '{"tos": {}, "extra": 1}',
        "unknown_key.toml": '[tos]\n"fma:bf99" = 1.0\n',
        "bad_value.json": '{"tos": {"fma:bf16": -3}}',
        "broken.json": '{"tos": ',
        "broken.toml": "[tos\n",
        "not_table.json": '{"tos": [1, 2]}',
    }
    for name, text in cases.items():
        path = tmp_path / name
        path.write_text(text)
        with pytest.raises(ValueError, match=rf"cost file .*{name}.*expected.*fix: "):
            CostModel.from_file(path)
    yaml = tmp_path / "costs.yaml"
    yaml.write_text("tos: {}")
    with pytest.raises(ValueError, match=r"expected a \.toml or \.json .*costs\.yaml"):
        CostModel.from_file(yaml)


def test_format_and_op_from_str() -> None:
    assert format_from_str("fp32") is NumberFormat.FP32
    assert format_from_str("torch.float32") is NumberFormat.FP32
    assert format_from_str("float16") is NumberFormat.FP16
    assert format_from_str("BFloat16") is NumberFormat.BF16
    assert format_from_str("e4m3") is NumberFormat.FP8_E4M3
    assert format_from_str("fp8-e5m2") is NumberFormat.FP8_E5M2
    assert format_from_str(NumberFormat.INT8) is NumberFormat.INT8
    assert op_from_str("FMA") is AluOp.FMA
    with pytest.raises(ValueError, match=r"expected a number format .*found 'fp12'.*fix"):
        format_from_str("fp12")
    with pytest.raises(ValueError, match=r"expected an ALU operation .*found 'tanh'.*fix"):
        op_from_str("tanh")


def test_table_and_markdown() -> None:
    cm = CostModel.default()
    t = cm.table()
    # 7 operation rows of 12 format columns
    assert (len(t.tos), len(t.tos[0])) == (7, 12)
    assert t.tos[t.ops.index(AluOp.FMA)][t.formats.index(NumberFormat.BF16)] == cm.tos(
        AluOp.FMA, NumberFormat.BF16
    )
    md = render_markdown_table(cm).splitlines()
    # header + separator + 7 rows
    assert len(md) == 9
    # fp64 add, w = 56: 330 + 2 * 53 * 8 + 56 * 6 * 8 + 52 * 6 + 56 * 12 + 28 * 56
    # + (2688 + 6 * (0 + 1 + 3 + 7 + 15 + 31) + 6 * 2) + 18 * 53 + 330 + 12
    # = 330 + 848 + 2688 + 312 + 672 + 1568 + 3042 + 954 + 330 + 12 = 10756; fp32 add 4852
    assert md[0].startswith("| op | fp64 | fp32 |")
    assert md[2].startswith("| add | 10,756 | 4,852 |")


def test_docs_table_is_current() -> None:
    # docs/cost-model.md embeds the generated table; regenerate it with
    # `python -m lightning_to_energy.counting.cost_model` when the derivation changes
    assert render_markdown_table() in DOC.read_text(encoding="utf-8")


def test_every_cost_model_argument_takes_a_file_and_refuses_other_values(tmp_path: Path) -> None:
    import torch

    from lightning_to_energy import EnergyTracker
    from lightning_to_energy.counting import OpCounter, profile

    path = tmp_path / "chip.toml"
    path.write_text('[tos]\n"fma:fp32" = 1.0\n')
    model = torch.nn.Linear(4, 2, bias=False)
    step = profile(model, torch.randn(3, 4), cost_model=str(path))
    # one matmul of 3 x 4 by 4 x 2: 3 * 2 * 4 = 24 FMAs at 1 TO each (the file's figure)
    assert step.tos == 24.0
    assert OpCounter(cost_model=path).cost_model == CostModel.from_file(path)
    assert EnergyTracker(model, cost_model=path).cost_model == CostModel.from_file(path)
    with pytest.raises(ValueError, match="expected a CostModel, a path to a TOML/JSON cost"):
        OpCounter(cost_model=42)  # type: ignore[arg-type]
    with pytest.raises(FileNotFoundError, match="expected a cost file"):
        profile(model, torch.randn(3, 4), cost_model=str(tmp_path / "missing.toml"))


def test_a_cost_model_and_a_callback_holding_one_pickle(tmp_path: Path) -> None:
    import pickle

    from lightning_to_energy import TOEnergy

    # ddp_spawn pickles the callbacks into its worker processes
    cm = CostModel.default().with_overrides({"fma:bf16": 5000.0})
    assert pickle.loads(pickle.dumps(cm)) == cm
    path = tmp_path / "chip.toml"
    path.write_text('[tos]\n"fma:fp32" = 1.0\n')
    energy = pickle.loads(pickle.dumps(TOEnergy(cost_model=path, sensors=None)))
    assert energy._kwargs["cost_model"] == CostModel.from_file(path)
