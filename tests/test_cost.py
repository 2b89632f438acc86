"""Tests of keras_shiftadd.cost: hand-counted layers, Table 3 figures, CLI."""

import argparse
import dataclasses
import json

import keras
import numpy as np
import pytest

from keras_shiftadd import augment, cost, zoo
from keras_shiftadd.cost import command
from keras_shiftadd.layers import AddConv2D, ShiftConv2D

L = keras.layers


def single_layer(layer, input_shape):
    inputs = keras.Input(input_shape)
    return keras.Model(inputs, layer(inputs))


def layer_cost(model, name):
    (match,) = [layer for layer in cost.count(model).layers if layer.name == name]
    return match


# -- hand-computed counts ------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs, input_shape, output_hw",
    [
        ({"strides": 1, "padding": "same"}, (8, 8, 4), (8, 8)),
        ({"strides": 2, "padding": "same"}, (9, 9, 4), (5, 5)),
        ({"strides": 2, "padding": "valid"}, (9, 9, 4), (4, 4)),
        ({"strides": 1, "padding": "valid"}, (8, 8, 4), (6, 6)),
    ],
)
def test_conv_macs_by_stride_and_padding(kwargs, input_shape, output_hw):
    model = single_layer(L.Conv2D(8, 3, name="conv", **kwargs), input_shape)
    result = layer_cost(model, "conv")
    positions = output_hw[0] * output_hw[1]
    assert result.output_shape == output_hw + (8,)
    assert result.macs == positions * 8 * 3 * 3 * 4
    assert result.mult == result.macs
    assert result.add == result.macs
    assert result.shift == 0
    assert result.params == 3 * 3 * 4 * 8 + 8


def test_depthwise_macs_with_multiplier():
    model = single_layer(
        L.DepthwiseConv2D(3, strides=2, padding="same", depth_multiplier=2,
                          use_bias=False, name="dw"),
        (8, 8, 5),
    )
    result = layer_cost(model, "dw")
    assert result.output_shape == (4, 4, 10)
    assert result.macs == 4 * 4 * 10 * 3 * 3
    assert result.params == 3 * 3 * 5 * 2


def test_dense_macs_and_params():
    model = single_layer(L.Dense(7, name="fc"), (12,))
    result = layer_cost(model, "fc")
    assert result.macs == 12 * 7
    assert result.params == 12 * 7 + 7


def test_batchnorm_folded_in_paper_convention():
    inputs = keras.Input((4, 4, 3))
    x = L.Conv2D(6, 1, use_bias=False, name="conv")(inputs)
    x = L.BatchNormalization(name="bn")(x)
    model = keras.Model(inputs, x)
    paper = cost.count(model)
    full = cost.count(model, convention="full")
    assert paper.mult == 4 * 4 * 6 * 3
    assert paper.params == 6 * 3 + 2 * 6
    bn = [layer for layer in full.layers if layer.name == "bn"][0]
    assert bn.mult == 4 * 4 * 6
    assert bn.add == 4 * 4 * 6
    assert full.mult == paper.mult + 4 * 4 * 6


def test_full_convention_counts_residual_and_pooling():
    inputs = keras.Input((4, 4, 2))
    x = L.Add(name="residual")([inputs, inputs])
    x = L.GlobalAveragePooling2D(name="pool")(x)
    model = keras.Model(inputs, x)
    assert cost.count(model).add == 0
    full = {layer.name: layer for layer in cost.count(model, convention="full").layers}
    assert full["residual"].add == 4 * 4 * 2
    assert full["pool"].add == (16 - 1) * 2
    assert full["pool"].mult == 2


def test_shift_and_add_conversion_counts():
    model = zoo.small_cnn(input_shape=(16, 16, 3), classes=10)
    mult = cost.count(model, op="mult")
    shift = cost.count(model, op="shift")
    add = cost.count(model, op="add")
    assert shift.mult == 0
    assert shift.shift == mult.macs
    assert shift.add == mult.macs
    assert shift.ops_by_precision == {"add": {"int32": mult.macs},
                                      "shift": {"int16": mult.macs}}

    # Add models: depthwise and dense layers stay Mult; each adder output
    # with a K-term window costs 2 * (K + 1) additions.
    kept = sum(layer.macs for layer in mult.layers
               if layer.class_name in ("DepthwiseConv2D", "Dense"))
    adders = [layer for layer in add.layers if layer.op == "add"]
    adder_macs = sum(layer.macs for layer in adders)
    adder_outputs = sum(int(np.prod(layer.output_shape)) for layer in adders)
    assert add.mult == kept
    assert add.add == kept + 2 * (adder_macs + adder_outputs)


def test_weight_bytes_use_bit_widths():
    inputs = keras.Input((8, 8, 4))
    outputs = ShiftConv2D(8, 3, weight_bits=6, use_bias=False, name="conv")(inputs)
    model = keras.Model(inputs, outputs)
    result = layer_cost(model, "conv")
    assert result.op == "shift"
    assert result.weight_bytes == pytest.approx(3 * 3 * 4 * 8 * 6 / 8)
    plain = layer_cost(single_layer(L.Conv2D(8, 3, use_bias=False, name="conv"),
                                    (8, 8, 4)), "conv")
    assert plain.weight_bytes == pytest.approx(3 * 3 * 4 * 8 * 4)


def test_adder_layer_counts():
    inputs = keras.Input((6, 6, 3))
    outputs = AddConv2D(4, 3, padding="valid", name="adder")(inputs)
    model = keras.Model(inputs, outputs)
    result = layer_cost(model, "adder")
    window = 3 * 3 * 3
    outputs = 4 * 4 * 4
    assert result.macs == window * outputs
    assert result.add == 2 * (window + 1) * outputs
    assert result.mult == 0


def test_peak_activation_memory_of_branches():
    inputs = keras.Input((4, 4, 2))  # 32 elements at 8 bits: 32 bytes
    a = L.Conv2D(4, 1, name="a")(inputs)  # 64 FP32 elements: 256 bytes
    b = L.Conv2D(4, 1, name="b")(a)
    x = L.Add(name="add")([a, b])
    model = keras.Model(inputs, x)
    # While b runs, the input is freed but a is still needed by the add, so
    # a, b and then add's output coexist: 3 * 256 bytes at the add.
    assert cost.count(model).peak_activation_bytes == 3 * 256


def test_peak_activation_memory_in_place_layers():
    inputs = keras.Input((4, 4, 2))  # 32 bytes at 8 bits
    x = L.Conv2D(4, 1, name="conv")(inputs)  # 256 bytes in FP32
    x = L.BatchNormalization(name="bn")(x)
    x = L.ReLU(name="relu")(x)
    model = keras.Model(inputs, x)
    # BatchNormalization and ReLU overwrite the convolution's output.
    assert cost.count(model).peak_activation_bytes == 32 + 256


def test_keras_ops_in_graph_are_supported():
    inputs = keras.Input((4, 4, 2))
    x = L.Conv2D(2, 1, name="conv")(inputs)
    x = keras.ops.add(x, 1.0)
    x = keras.ops.multiply(x, inputs)
    model = keras.Model(inputs, x)
    assert cost.count(model).macs == 4 * 4 * 2 * 2
    full = cost.count(model, convention="full")
    macs = 4 * 4 * 2 * 2
    elements = 4 * 4 * 2
    assert full.add == macs + elements + elements  # bias and keras.ops.add
    assert full.mult == macs + elements  # keras.ops.multiply


def test_keras_applications_mobilenetv3_is_walked():
    # Its hard-sigmoid gates are keras.ops operations, not layers.
    model = keras.applications.MobileNetV3Small(
        input_shape=(32, 32, 3), weights=None, classes=10,
    )
    layers = [op for op in model.operations
              if isinstance(op, keras.layers.Layer)]
    assert len(layers) < len(model.operations)
    paper = cost.count(model)
    full = cost.count(model, convention="full")
    mac_layers = [layer for layer in model.layers
                  if isinstance(layer, (L.Conv2D, L.DepthwiseConv2D, L.Dense))]
    assert len([layer for layer in paper.layers if layer.op]) == len(mac_layers)
    assert len(full.layers) == len(model.operations) - len(model.inputs)
    assert full.mult > paper.mult
    assert full.add > paper.add


def test_nested_model_counts_its_layers():
    inner = zoo.small_cnn(input_shape=(16, 16, 3), classes=10)
    inputs = keras.Input((16, 16, 3))
    outputs = L.Dense(4, name="head")(inner(inputs))
    outer = keras.Model(inputs, outputs)
    nested = cost.count(outer)
    alone = cost.count(inner)
    assert nested.macs == alone.macs + 10 * 4
    assert nested.params == alone.params + 10 * 4 + 4
    assert nested.layers[0].name == "small_cnn/stem_conv"
    assert nested.peak_activation_bytes == alone.peak_activation_bytes


def test_sequential_and_invalid_arguments():
    model = keras.Sequential([keras.Input((5,)), L.Dense(3)])
    assert cost.count(model).macs == 15
    with pytest.raises(ValueError, match="convention"):
        cost.count(model, convention="thop")
    with pytest.raises(ValueError, match="op"):
        cost.count(model, op="xor")


def test_summary_prints_layers_and_totals():
    lines = []
    model = zoo.small_cnn(input_shape=(16, 16, 3), classes=10)
    result = cost.summary(model, op="shift", print_fn=lines.append)
    text = lines[0]
    assert "sep_dw" in text
    assert f"Shift: {result.shift / 1e6:.2f}M" in text
    assert "Energy:" in text
    assert "Latency:" in text


# -- target, augmented and converted models --------------------------------------


@pytest.mark.parametrize("op", ["shift", "add", "mult"])
def test_target_model_counts_equal_base_with_op(op):
    base = zoo.small_cnn(input_shape=(16, 16, 3), classes=10)
    # Weight sharing changes weights, not operation counts. It stays off so
    # that the test needs no shipped remap file.
    model = augment(base, op=op, hws=False)
    target = cost.count(model.target_model())
    converted = cost.count(base, op=op)
    assert target.ops_by_precision == converted.ops_by_precision
    assert target.params == converted.params
    assert target.weight_bytes == converted.weight_bytes
    assert target.energy_mj == pytest.approx(converted.energy_mj)
    # A ShiftAddAugModel is costed as its target, and so is its target path
    # of hybrid layers.
    assert cost.count(model).ops_by_precision == converted.ops_by_precision
    hybrid_target = cost.count(model.target_network)
    assert hybrid_target.ops_by_precision == converted.ops_by_precision
    assert hybrid_target.params == converted.params


def test_augmented_model_splits_hybrid_ops():
    base = zoo.small_cnn(input_shape=(16, 16, 3), classes=10)
    model = augment(base, op="shift", width_mult=2.0, expand_mult=1.0,
                    hws=False)
    augmented = cost.count(model.augmented_model())
    target = cost.count(base, op="shift")
    wide = zoo.small_cnn(input_shape=(16, 16, 3), classes=10, width=32)
    # The augmented network is the base at twice the width; its
    # multiplication-free ops are exactly the target's.
    assert augmented.shift == target.shift
    assert augmented.macs == cost.count(wide).macs
    assert augmented.mult == augmented.macs - target.macs


# -- Table 3 acceptance figures ----------------------------------------------------

# (params in M, MACs in M) at 160x160 with 100 classes, ShiftAddAug Table 3.
TABLE3 = {
    "mobilenetv2-w0.35": (0.52, 29.72),
    "mobilenetv2-tiny": (0.35, 27.31),
    "proxylessnas-w0.35": (0.63, 34.56),
    "mcunet-in3": (0.59, 65.72),
    "mobilenetv3-w0.35": (0.96, 18.35),
}
# Shift's energy saving over Mult (percent) and latency speed-up, Table 3.
TABLE3_SHIFT = {
    "mobilenetv2-w0.35": (68.44, 2.97),
    "mobilenetv2-tiny": (67.75, 2.94),
    "proxylessnas-w0.35": (68.68, 3.00),
    "mcunet-in3": (69.09, 3.09),
    "mobilenetv3-w0.35": (68.95, 3.03),
}


@pytest.fixture(scope="module")
def table3_costs():
    costs = {}
    for name in TABLE3:
        model = zoo.build(name, (160, 160, 3), 100)
        costs[name] = {op: cost.count(model, op=op)
                       for op in ("mult", "shift", "add")}
    return costs


@pytest.mark.parametrize("name", list(TABLE3))
def test_table3_macs_and_params(table3_costs, name):
    params, macs = TABLE3[name]
    result = table3_costs[name]["mult"]
    assert abs(result.macs / 1e6 - macs) / macs < 0.005
    # Table 3 prints parameters with two decimals.
    assert round(result.params / 1e6, 2) == params


def test_table3_add_split_mobilenetv2(table3_costs):
    result = table3_costs["mobilenetv2-w0.35"]["add"]
    assert abs(result.mult / 1e6 - 4.52) / 4.52 < 0.005
    assert abs(result.add / 1e6 - 56.88) / 56.88 < 0.005
    assert result.shift == 0


@pytest.mark.parametrize("name", list(TABLE3))
def test_table3_shift_saving_and_speedup(table3_costs, name):
    saving, speedup = TABLE3_SHIFT[name]
    mult = table3_costs[name]["mult"]
    shift = table3_costs[name]["shift"]
    ours_saving = 100 * (1 - shift.energy_mj / mult.energy_mj)
    ours_speedup = mult.latency_ms / shift.latency_ms
    assert abs(ours_saving - saving) <= 5
    assert abs(ours_speedup / speedup - 1) <= 0.10


def test_profile_override_changes_estimates(table3_costs):
    model = zoo.build("mobilenetv2-tiny", (160, 160, 3), 100)
    base = table3_costs["mobilenetv2-tiny"]["mult"]
    profile = dataclasses.replace(cost.EYERISS_45NM, dram_pj_per_byte=0.0,
                                  clock_mhz=1400.0)
    cheaper = cost.count(model, profile=profile)
    assert cheaper.energy_mj < base.energy_mj
    assert cheaper.energy_breakdown_pj["dram"] == 0
    assert cheaper.latency_ms == pytest.approx(base.latency_ms / 2)
    with pytest.raises(ValueError, match="clock_mhz"):
        dataclasses.replace(cost.EYERISS_45NM, clock_mhz=0)
    with pytest.raises(ValueError, match="No energy"):
        dataclasses.replace(cost.EYERISS_45NM, formats={
            "mult": {"mult": "fp8", "add": "fp32"},
            "shift": {"shift": "int16", "add": "int32"},
            "add": {"add": "fp32"},
        })


# -- command line --------------------------------------------------------------------


def run_command(argv):
    parser = argparse.ArgumentParser(prog="keras-shiftadd")
    subparsers = parser.add_subparsers(dest="command")
    command.add_parser(subparsers)
    args = parser.parse_args(["cost"] + argv)
    return args.handler(args)


def test_cli_json_totals(capsys):
    status = run_command(["--model", "mobilenetv2-tiny", "--op", "add",
                          "--image-size", "160", "--classes", "100", "--json"])
    assert status == 0
    totals = json.loads(capsys.readouterr().out)
    for key in ("params", "mult", "shift", "add", "energy_mj", "latency_ms"):
        assert key in totals
    assert totals["mult"] == pytest.approx(4.43e6, rel=0.005)
    assert totals["add"] == pytest.approx(52.09e6, rel=0.005)


def test_cli_table_and_plot(tmp_path, capsys):
    path = tmp_path / "costs.png"
    status = run_command(["--model", "small-cnn", "--op", "shift",
                          "--image-size", "32", "--classes", "10",
                          "--plot", str(path)])
    out = capsys.readouterr().out
    assert status == 0
    for column in ("Params (M)", "Mult (M)", "Shift (M)", "Add (M)",
                   "Energy (mJ)", "Latency (ms)"):
        assert column in out
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_cli_unknown_model(capsys):
    status = run_command(["--model", "resnet-9000"])
    assert status == 2
    assert "keras-shiftadd: error: Unknown model 'resnet-9000'" in (
        capsys.readouterr().err
    )
