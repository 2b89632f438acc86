"""The hardware profile: every constant of the energy and latency models.

The default, `EYERISS_45NM`, combines three sources of numbers:

- Arithmetic energies per operation at 45 nm, from Table 1 of the
  ShiftAddAug paper ("ShiftAddAug: Augment Multiplication-Free Tiny Neural
  Network with Hybrid Computation", under review): Mult FP32 3.7 pJ,
  FP16 0.9, INT32 3.1, INT8 0.2; Add FP32 1.1, FP16 0.4, INT32 0.1,
  INT8 0.03; Shift INT32 0.13, INT16 0.057, INT8 0.024.
- Operand formats per operator, from the paper's training details: Shift
  layers use 5-bit weights and 16-bit fixed-point activations, adder layers
  compute in 32 bits, and multiplicative layers are FP32.
- Data-movement and timing constants of an Eyeriss-like accelerator, which
  are our assumptions, not measurements. Access energies per byte are
  0.25 pJ (register file), 0.5 pJ (array network), 1.5 pJ (global buffer)
  and 25 pJ (DRAM, about 3 pJ per bit). The PE array is 12 x 14 (Eyeriss'
  size) at 700 MHz, with 64 bytes per cycle of DRAM bandwidth.

The same values serve every model. We chose the DRAM energy and the clock
once for all models, so that the five Table 3 backbones land near the
paper's energy savings and absolute latencies.

Override any field with `dataclasses.replace(EYERISS_45NM, ...)` or by
constructing `HardwareProfile(...)`.
"""

import dataclasses
import types

OPERATORS = ("mult", "shift", "add")


def _frozen(mapping):
    return types.MappingProxyType(
        {key: _frozen(value) if isinstance(value, dict) else value
         for key, value in mapping.items()}
    )


# Energy per operation in pJ at 45 nm (ShiftAddAug, Table 1).
TABLE1_ENERGY_PJ = _frozen({
    "mult": {"fp32": 3.7, "fp16": 0.9, "int32": 3.1, "int8": 0.2},
    "add": {"fp32": 1.1, "fp16": 0.4, "int32": 0.1, "int8": 0.03},
    "shift": {"int32": 0.13, "int16": 0.057, "int8": 0.024},
})


def _default(mapping):
    """Return a dataclass field whose default is a read-only copy of `mapping`."""
    frozen = _frozen(dict(mapping))
    return dataclasses.field(default_factory=lambda: frozen)


def _check_number(field, value, allow_zero):
    valid = value >= 0 if allow_zero else value > 0
    if not isinstance(value, (int, float)) or not valid:
        bound = ">= 0" if allow_zero else "> 0"
        raise ValueError(
            f"Invalid HardwareProfile.{field}: expected a number {bound}. "
            f"Received: {field}={value!r}"
        )


@dataclasses.dataclass(frozen=True)
class HardwareProfile:
    """Constants of the operation-energy, data-movement and latency models.

    Attributes:
        name: Label shown in reports.
        energy_pj: Energy per operation in pJ, as
            `{operation: {format: pJ}}`.
        formats: Arithmetic format of each operation, per operator of the
            layer (`"mult"`, `"shift"` or `"add"`), as
            `{operator: {operation: format}}`. A Mult layer's MAC is one
            multiplication and one addition, a Shift layer's MAC one shift and
            one addition, and an adder layer's MAC two additions.
        elementwise_formats: Format of the multiplications and additions
            that the full convention counts outside MACs (BatchNormalization,
            bias, merges, pooling), per operator of the layer that produced
            the tensor.
        weight_bits: Bits per weight per operator. `None` for `"shift"`
            means the layer's own `weight_bits`, or 5 (the Shift layers'
            default) for ordinary layers that `count(..., op="shift")`
            converts.
        activation_bits: Bits per activation that a layer of each operator
            reads and writes.
        bias_bits: Bits per bias and folded BatchNormalization parameter.
        input_bits: Bits per element of the model's input tensors.
        register_file_pj_per_byte: Energy of one byte read from a PE's
            register file.
        array_pj_per_byte: Energy of moving one byte between PEs over the
            array network.
        buffer_pj_per_byte: Energy of one byte read from or written to the
            on-chip global buffer.
        dram_pj_per_byte: Energy of one byte read from or written to DRAM.
        array_reuse: MACs served by one operand byte delivered over the
            array network (row-stationary reuse inside a PE).
        buffer_reuse: MACs served by one operand byte read from the global
            buffer (reuse across the PE array).
        pe_rows, pe_cols: Size of the PE array.
        clock_mhz: PE clock in MHz.
        mac_cycles: Cycles one PE needs per MAC, per operator.
        elementwise_cycles: Cycles per operation counted outside MACs.
        dram_bytes_per_cycle: DRAM bandwidth in bytes per PE clock cycle.
    """

    name: str = "eyeriss-like-45nm"
    energy_pj: types.MappingProxyType = _default(TABLE1_ENERGY_PJ)
    # A Shift layer shifts 16-bit fixed-point activations and accumulates in
    # 32-bit integers. Adder layers compute in 32 bits, which we take as FP32
    # because their operands are the same floats as a Mult layer's.
    formats: types.MappingProxyType = _default({
        "mult": {"mult": "fp32", "add": "fp32"},
        "shift": {"shift": "int16", "add": "int32"},
        "add": {"add": "fp32"},
    })
    elementwise_formats: types.MappingProxyType = _default({
        "mult": {"mult": "fp32", "add": "fp32"},
        "shift": {"mult": "int32", "add": "int32"},
        "add": {"mult": "fp32", "add": "fp32"},
    })
    weight_bits: types.MappingProxyType = _default(
        {"mult": 32, "shift": None, "add": 32}
    )
    activation_bits: types.MappingProxyType = _default(
        {"mult": 32, "shift": 16, "add": 32}
    )
    bias_bits: int = 32
    input_bits: int = 8

    # Data movement. Every MAC reads its weight and its input activation
    # from the PE's register file. Partial sums stay in the PE's accumulator,
    # and each output is written once.
    register_file_pj_per_byte: float = 0.25
    array_pj_per_byte: float = 0.5
    buffer_pj_per_byte: float = 1.5
    dram_pj_per_byte: float = 25.0
    array_reuse: float = 16.0
    buffer_reuse: float = 64.0

    # Latency, assuming a clock period of one 32-bit addition. An FP32
    # multiplication then takes 2 cycles and its accumulation 1 more. A
    # barrel shift fits in the cycle of its accumulation, and an adder MAC is
    # a subtraction and an accumulation.
    pe_rows: int = 12
    pe_cols: int = 14
    clock_mhz: float = 700.0
    mac_cycles: types.MappingProxyType = _default(
        {"mult": 3, "shift": 1, "add": 2}
    )
    elementwise_cycles: int = 1
    dram_bytes_per_cycle: float = 64.0

    def __post_init__(self):
        for field in ("formats", "elementwise_formats", "weight_bits",
                      "activation_bits", "mac_cycles"):
            mapping = getattr(self, field)
            missing = [op for op in OPERATORS if op not in mapping]
            if missing:
                raise ValueError(
                    f"Invalid HardwareProfile.{field}: missing operators "
                    f"{missing}. Give a value for each of {OPERATORS}."
                )
        for operator, operations in self.formats.items():
            for operation, fmt in operations.items():
                self.operation_energy(operation, fmt)
        for field in ("register_file_pj_per_byte", "array_pj_per_byte",
                      "buffer_pj_per_byte", "dram_pj_per_byte"):
            _check_number(field, getattr(self, field), allow_zero=True)
        for field in ("array_reuse", "buffer_reuse", "pe_rows", "pe_cols",
                      "clock_mhz", "dram_bytes_per_cycle"):
            _check_number(field, getattr(self, field), allow_zero=False)

    @property
    def num_pes(self):
        """Number of processing elements in the array."""
        return self.pe_rows * self.pe_cols

    def operation_energy(self, operation, fmt):
        """Return the energy in pJ of one `operation` in format `fmt`."""
        try:
            return self.energy_pj[operation][fmt]
        except KeyError:
            known = {op: sorted(table) for op, table in self.energy_pj.items()}
            raise ValueError(
                f"No energy for {operation} in format {fmt!r} in hardware "
                f"profile '{self.name}'. Known formats: {known}."
            ) from None


EYERISS_45NM = HardwareProfile()
