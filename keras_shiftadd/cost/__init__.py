"""Operation counts, energy and latency of Keras models.

`count(model)` walks a model's layer graph and returns a `ModelCost` with
per-layer and total Mult, Shift and Add operations (by operand precision),
parameters, weight bytes, peak activation memory, and the energy and latency
that a `HardwareProfile` predicts. `summary(model)` prints it as a table.
"""

from keras_shiftadd.cost.counting import (
    CONVENTIONS,
    LayerCost,
    ModelCost,
    count,
    relative_difference,
)
from keras_shiftadd.cost.profile import (
    EYERISS_45NM,
    OPERATORS,
    TABLE1_ENERGY_PJ,
    HardwareProfile,
)
from keras_shiftadd.cost.report import (
    format_layers,
    format_table3,
    plot_comparison,
    summary,
)

__all__ = [
    "CONVENTIONS",
    "EYERISS_45NM",
    "HardwareProfile",
    "LayerCost",
    "ModelCost",
    "OPERATORS",
    "TABLE1_ENERGY_PJ",
    "count",
    "format_layers",
    "format_table3",
    "plot_comparison",
    "relative_difference",
    "summary",
]
