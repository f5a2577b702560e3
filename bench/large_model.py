"""The large models of ``bench.bench_large``: MLP blocks with external data, built tensor by
tensor (never a whole model in memory), and their float output computed the same way.

Block ``i``: ``x = x + Relu(x @ up_i) @ down_i`` with ``up_i`` of ``[H, 4H]`` and ``down_i``
of ``[4H, H]`` (He-scaled Gaussian weights, a seeded rotation of one pool per tensor, the
down projections also scaled by ``1/sqrt(blocks)``), so the output stays of unit order
through hundreds of blocks. Every weight lives in ``model.onnx.data``.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path

import numpy as np
from onnx import TensorProto, helper

HIDDEN = 2048
OPSET = 17
DATA_FILE = "model.onnx.data"


def block_shapes(hidden: int) -> tuple[tuple[int, int], tuple[int, int]]:
    return (hidden, 4 * hidden), (4 * hidden, hidden)


def blocks_for(total_bytes: int, hidden: int = HIDDEN) -> int:
    """Blocks whose float32 weights come nearest ``total_bytes`` (at least one)."""
    per_block = sum(math.prod(s) for s in block_shapes(hidden)) * 4
    return max(1, round(total_bytes / per_block))


POOL = 1 << 24  # Gaussian values drawn once; each tensor is a seeded rotation of them


def _pool() -> np.ndarray:
    return np.random.default_rng(7).standard_normal(POOL, dtype=np.float32)


def weight(
    index: int, shape: tuple[int, int], pool: np.ndarray, blocks: int
) -> Iterator[np.ndarray]:
    """Tensor ``index``'s float32 values, a pool's worth at a time: the pool rotated by a
    seeded amount and He-scaled (drawing 30 GB of fresh Gaussians would take longer than
    quantizing them; the values' distribution is what matters here). A down projection is
    scaled by ``1/sqrt(blocks)`` as well, so that the residual sum stays of unit order
    (the variance grows by ``(1 + 1/blocks)`` a block: at most e in all)."""
    if index % 2 == 0:
        std = math.sqrt(2.0 / shape[0])
    else:
        std = math.sqrt(1.0 / shape[0]) / math.sqrt(blocks)
    shift = int(np.random.default_rng([7, index]).integers(POOL))
    rotated = np.roll(pool, shift) * np.float32(std)
    total = math.prod(shape)
    for start in range(0, total, POOL):
        yield rotated[: min(POOL, total - start)]


def build(folder: Path, blocks: int, hidden: int = HIDDEN) -> Path:
    """``folder/model.onnx`` with its weights in ``folder/model.onnx.data``."""
    folder.mkdir(parents=True, exist_ok=True)
    inits: list[TensorProto] = []
    nodes = []
    current = "x"
    offset = 0
    pool = _pool()
    with (folder / DATA_FILE).open("wb") as data:
        for b in range(blocks):
            names = []
            for k, shape in enumerate(block_shapes(hidden)):
                index = 2 * b + k
                name = f"block{b}.{'up' if k == 0 else 'down'}"
                for chunk in weight(index, shape, pool, blocks):
                    data.write(chunk.tobytes())
                length = math.prod(shape) * 4
                tensor = TensorProto(name=name, data_type=TensorProto.FLOAT, dims=shape)
                tensor.data_location = TensorProto.EXTERNAL
                for key, value in (("location", DATA_FILE), ("offset", offset),
                                   ("length", length)):  # fmt: skip
                    entry = tensor.external_data.add()
                    entry.key, entry.value = key, str(value)
                offset += length
                inits.append(tensor)
                names.append(name)
            up = helper.make_node("MatMul", [current, names[0]], [f"h{b}"])
            relu = helper.make_node("Relu", [f"h{b}"], [f"r{b}"])
            down = helper.make_node("MatMul", [f"r{b}", names[1]], [f"d{b}"])
            out = "y" if b == blocks - 1 else f"x{b + 1}"
            res = helper.make_node("Add", [current, f"d{b}"], [out])
            nodes += [up, relu, down, res]
            current = out
    graph = helper.make_graph(
        nodes, "mlp",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", hidden])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", hidden])],
        inits,
    )  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
    model.ir_version = 8
    path = folder / "model.onnx"
    path.write_bytes(model.SerializeToString())
    return path


def float_output(folder: Path, x: np.ndarray, blocks: int, hidden: int = HIDDEN) -> np.ndarray:
    """The float model's output on ``x``, reading one weight at a time from the data file."""
    offset = 0
    x = x.astype(np.float32)
    with (folder / DATA_FILE).open("rb") as data:
        for _ in range(blocks):
            mats = []
            for shape in block_shapes(hidden):
                count = math.prod(shape)
                data.seek(offset)
                mats.append(np.fromfile(data, dtype=np.float32, count=count).reshape(shape))
                offset += count * 4
            x = x + np.maximum(x @ mats[0], 0.0) @ mats[1]
    return x
