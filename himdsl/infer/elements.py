"""A row's features split into its values, for a ratio that scores one value at a
time (`Plan.ratio_elements`; himdsl/graph/elements.py says when the values of an
observation are independent given the row).

    layout = ElementLayout(view, ("y", "x"))   # y: real[20], x: real[20] a covariate per value
    layout.split(features)                     # [S, M, Fx] -> [S, M, 20, 2 + row features]

Value k gets y's k-th value (its slice y[k], flattened, where y is [K, ...]), the
k-th value of each element covariate, and every other feature of the row
(covariates of the row as a whole) unchanged. The ratio's
log likelihood of the row is then the sum of its values' logits.
"""
from __future__ import annotations

import torch

Tensor = torch.Tensor


class ElementLayout:
    """Which columns of a row's features belong to which value (see the module docstring)."""

    def __init__(self, view, elements: tuple[str, ...]):
        blocks = {b.name: b for b in view.x_blocks + view.c_blocks}
        starts, start = {}, 0
        for name, block in blocks.items():
            starts[name] = start
            start += block.width
        self.size = blocks[elements[0]].shape[0]
        # a value's slice of each array is contiguous in the row-major features
        widths = {name: blocks[name].width // self.size for name in elements}
        columns = [[starts[name] + k * widths[name] + j for name in elements for j in range(widths[name])]
                   for k in range(self.size)]
        self.value_columns = torch.tensor(columns, dtype=torch.long, device=view.device)
        taken = {c for row in columns for c in row}
        self.row_columns = torch.tensor([c for c in range(start) if c not in taken], dtype=torch.long,
                                        device=view.device)
        self.width = len(columns[0]) + len(self.row_columns)

    def split(self, features: Tensor) -> Tensor:
        """[..., Fx] -> [..., K, width]: per value its own features, then the row's."""
        values = features[..., self.value_columns]                       # [..., K, value features]
        row = features[..., self.row_columns]
        row = row.unsqueeze(-2).expand(*row.shape[:-1], self.size, row.shape[-1])
        return torch.cat([values, row], -1)
