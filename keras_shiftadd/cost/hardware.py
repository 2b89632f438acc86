"""Energy and latency of one layer on an Eyeriss-like accelerator.

The model, with every constant in `HardwareProfile`:

- Compute: each counted operation costs its 45 nm energy at its format.
- Register file: every MAC reads its weight and its input activation from
  the PE's register file. Partial sums stay in the PE's accumulator, so
  they cost no register-file traffic.
- Array network: one operand byte delivered to a PE serves `array_reuse`
  MACs (row-stationary reuse of a filter row and an input row).
- Global buffer: one operand byte read from the buffer serves
  `buffer_reuse` MACs, and every output is written to the buffer once.
- DRAM: every layer reads its weights and its input activations from DRAM
  and writes its outputs back once. Layers are not fused, and no tensor
  stays on chip from one layer to the next.
- Latency: a layer takes the longer of its compute time and its DRAM time,
  because compute and transfers overlap. Compute time is the layer's MACs
  times the operator's `mac_cycles`, plus `elementwise_cycles` per other
  operation, spread evenly over all PEs. DRAM time is the layer's DRAM
  bytes over `dram_bytes_per_cycle`.

NOTE: reuse factors are the same for every layer. Depthwise convolutions,
which reuse an input only across their own window, therefore get the
register-file and buffer reuse of ordinary convolutions, and every layer
keeps all PEs busy.
"""


def _compute_energy(ops, profile):
    return sum(
        count * profile.operation_energy(operation, fmt)
        for (operation, fmt), count in ops.items()
    )


def price_mac_layer(cost, parts, weight_bits, input_elements, extra_ops,
                    profile):
    """Fill in `cost.energy_pj` and `cost.cycles` of a layer with MACs.

    Args:
        cost: The `LayerCost`, with its `ops` and `weight_bytes` set.
        parts: The layer's MAC blocks (`op`, `macs`, `kernel_params`,
            `outputs`); hybrid layers have one per operator.
        weight_bits: Bits per weight of each part's operator.
        input_elements: Elements of the layer's input tensors.
        extra_ops: Counted operations beyond the MACs themselves (bias and
            activation arithmetic, an adder layer's per-output additions).
        profile: The `HardwareProfile`.
    """
    register_file = array = buffer = 0.0
    dram_bytes = cost.weight_bytes
    compute_cycles = extra_ops * profile.elementwise_cycles
    input_bits = 0
    for part in parts:
        operand_bytes = (weight_bits[part.op]
                         + profile.activation_bits[part.op]) / 8
        activation_bytes = profile.activation_bits[part.op] / 8
        register_file += part.macs * operand_bytes
        array += part.macs * operand_bytes / profile.array_reuse
        buffer += (part.macs * operand_bytes / profile.buffer_reuse
                   + part.outputs * activation_bytes)
        dram_bytes += part.outputs * activation_bytes
        input_bits = max(input_bits, profile.activation_bits[part.op])
        compute_cycles += part.macs * profile.mac_cycles[part.op]
        if part.op == "add":
            # The adder convention's 2 additions per output belong to the
            # layer's MAC operations, not to extra_ops; each takes an
            # elementwise cycle.
            compute_cycles += 2 * part.outputs * profile.elementwise_cycles
    # The input is read once, at the widest precision any part reads it.
    dram_bytes += input_elements * input_bits / 8

    cost.energy_pj = {
        "compute": _compute_energy(cost.ops, profile),
        "register_file": register_file * profile.register_file_pj_per_byte,
        "array": array * profile.array_pj_per_byte,
        "buffer": buffer * profile.buffer_pj_per_byte,
        "dram": dram_bytes * profile.dram_pj_per_byte,
    }
    cost.cycles = max(compute_cycles / profile.num_pes,
                      dram_bytes / profile.dram_bytes_per_cycle)


def price_elementwise(cost, input_bytes, profile):
    """Fill in `cost.energy_pj` and `cost.cycles` of a layer without MACs.

    Only the full convention counts such layers. Each reads its inputs from
    DRAM and writes its output back in a separate pass.
    """
    dram_bytes = input_bytes + cost.output_bytes
    operations = sum(cost.ops.values())
    cost.energy_pj = {
        "compute": _compute_energy(cost.ops, profile),
        "dram": dram_bytes * profile.dram_pj_per_byte,
    }
    cost.cycles = max(operations * profile.elementwise_cycles / profile.num_pes,
                      dram_bytes / profile.dram_bytes_per_cycle)
