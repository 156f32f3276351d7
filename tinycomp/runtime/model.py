"""The runtime's network: the header's list of ops, run in order on NumPy arrays (no autograd).

Ops (each a JSON object with "op"; layers as in ``tinycomp.runtime.layers``, BatchNorm folded or,
before k-bit inputs, applied by the layer itself):

    conv             {"layer", "relu"}                  y = layer(x), then ReLU if "relu" (the stem)
    basic_block      {"conv1", "conv2", "shortcut"}     relu(conv2(relu(conv1(x))) + sc(x))
    bireal_block     {"conv1", "conv2", "shortcut"}     h = conv1(x) + sc(x); conv2(h) + h
                     (Bi-Real Net: each XNOR conv signs its own input; compress/binary_blocks.py)
    shift_block      {"conv1", "shift", "conv2", "shortcut"}   relu(conv2(shift(relu(conv1(x)))) + sc(x))
                     (ShiftResNet: 1x1 convs, ShiftNet's offsets, a thinned block's kept ones; ``shift.py``)
    global_avg_pool  {}                                 (N, C, H, W) -> (N, C), the mean over H, W
    linear           {"layer"}                          (N, in) -> (N, num_classes) logits

sc is the identity when "shortcut" is null, else the folded 1x1 projection conv. At load the ops are
walked once over the header's input shape, so a layer whose channels disagree with its input, a
kernel that does not fit, or a residual sum of two shapes is refused before anything runs; the walk
records each layer's input and output shapes (``shapes``, per image) and tells each conv its input
size (``input_hw``: the pruned and SAL layers name their path for it). Pruned and SAL layers:
``sparse.py``, ``sal.py``.

Ops are named as the training model's modules: the stem "conv1", blocks "layer<I>.<J>", "pool",
"linear" (``op_names``); ``profile`` times each op.
"""
import time

import numpy as np

from .kbit import KINDS as KBIT_KINDS, KbitConv, KbitLinear
from .layers import Conv, Linear
from .sal import SAL_KINDS, SalConv
from .shift import Shift
from .sparse import SPARSE_KINDS, SparseConv

OPS = ("conv", "basic_block", "bireal_block", "shift_block", "global_avg_pool", "linear")
BLOCKS = ("basic_block", "bireal_block", "shift_block")
STRUCTURED = {**{k: SparseConv for k in SPARSE_KINDS}, **{k: SalConv for k in SAL_KINDS}}


class Model:
    """An exported network: ``model(x)`` maps a normalised float32 (N, 3, H, W) batch to logits (N, classes)."""

    def __init__(self, reader):
        h = reader.header
        self.header, self.header_size = h, reader.header_size
        self.path = reader.path
        self.method = reader.field(h, "method", str, "header")
        self.model = reader.field(h, "model", str, "header")
        self.width = reader.field(h, "width", (int, float), "header")
        self.num_classes = reader.field(h, "num_classes", int, "header")
        self.normalize = reader.field(h, "normalize", dict, "header")
        for key in ("mean", "std"):
            v = reader.field(self.normalize, key, list, "header.normalize")
            if len(v) != 3 or not all(isinstance(s, (int, float)) for s in v) or key == "std" and min(v) <= 0:
                raise reader.error(f"header.normalize.{key}", f"{v!r} is not 3 numbers" + (" > 0" if key == "std" else ""))
        self.input_shape = reader.ints(h, "input_shape", 3, 1, "header")
        self.ops = [self._op(reader, op, f"ops[{i}]") for i, op in enumerate(reader.field(h, "ops", list, "header"))]
        self.shapes = {}  # layer name -> ((C, H, W) in, (O, OH, OW) out), or (in_features,), (out,) for linear
        self._check_shapes(reader)
        self.op_names = [_op_name(op) for op in self.ops]

    def _op(self, reader, op, where):
        kind = reader.field(op, "op", str, where)
        if kind not in OPS:
            raise reader.error(f"{where}.op", f"{kind!r} is not one of {', '.join(OPS)}")
        if kind == "conv":
            relu = reader.field(op, "relu", bool, where)
            return kind, _layer(reader, reader.field(op, "layer", dict, where), f"{where}.layer", Conv), relu
        if kind in BLOCKS:
            sc = op.get("shortcut")
            if sc is not None and not isinstance(sc, dict):
                raise reader.error(f"{where}.shortcut", f"{sc!r} is neither null nor a layer")
            block = (kind, _layer(reader, reader.field(op, "conv1", dict, where), f"{where}.conv1", Conv),
                     _layer(reader, reader.field(op, "conv2", dict, where), f"{where}.conv2", Conv),
                     None if sc is None else _layer(reader, sc, f"{where}.shortcut", Conv))
            if kind == "shift_block":
                block += (Shift(reader, op.get("shift"), block[1].out_channels, f"{where}.shift"),)
            return block
        if kind == "linear":
            return kind, _layer(reader, reader.field(op, "layer", dict, where), f"{where}.layer", Linear)
        return (kind,)

    def _check_shapes(self, reader):
        """Walk (C, H, W) through the ops; refuse any disagreement, naming the op."""
        shape = self.input_shape

        def through(conv, s):
            size = conv.output_size(s[1], s[2])
            if conv.in_channels != s[0] or size is None:
                raise reader.error(conv.where, f"conv {list(conv.shape)} stride {list(conv.stride)} padding "
                                   f"{list(conv.padding)} does not fit its input (C, H, W) = {tuple(s)}")
            self.shapes[conv.name] = (tuple(s), (conv.out_channels,) + size)
            conv.input_hw = (s[1], s[2])
            return (conv.out_channels,) + size

        for i, op in enumerate(self.ops):
            kind = op[0]
            if len(shape) != 3 and kind != "linear":
                raise reader.error(f"ops[{i}]", f"{kind} after the pooling")
            if kind == "conv":
                shape = through(op[1], shape)
            elif kind in ("basic_block", "bireal_block"):
                _, conv1, conv2, sc = op
                mid = through(conv1, shape)
                side = shape if sc is None else through(sc, shape)
                if mid != side:
                    raise reader.error(f"ops[{i}]", f"conv1 gives {mid} but the shortcut {side}")
                shape = through(conv2, mid)
                if shape != mid:
                    raise reader.error(f"ops[{i}].conv2", f"gives {shape}, the residual sum needs {mid}")
            elif kind == "shift_block":
                _, conv1, conv2, sc, _ = op
                shape, side = through(conv2, through(conv1, shape)), shape if sc is None else through(sc, shape)
                if shape != side:
                    raise reader.error(f"ops[{i}]", f"conv2 gives {shape} but the shortcut {side}")
            elif kind == "global_avg_pool":
                shape = (shape[0],)
            else:
                linear = op[1]
                if shape != (linear.in_features,):
                    raise reader.error(f"ops[{i}].layer", f"linear of {list(linear.shape)} on an input of shape {shape}")
                shape = (linear.shape[0],)
                self.shapes[linear.name] = ((linear.in_features,), shape)
        if shape != (self.num_classes,):
            raise reader.error("header.ops", f"the network ends in shape {shape}, not ({self.num_classes},) logits")

    def layers(self):
        """[(name, kind, kernel path)] of every conv and linear layer, in execution order."""
        out = []
        for op in self.ops:
            out += [(layer.name, layer.kind, layer.path) for layer in op[1:] if isinstance(layer, (Conv, Linear))]
        return out

    def describe(self):
        """A line per layer: its name, kind and the kernel it runs on."""
        return "\n".join(f"{name:<28} {kind:<20} {path}" for name, kind, path in self.layers())

    def preprocess(self, images):
        """uint8 (N, 3, H, W) pixels -> the normalised float32 batch the model takes: (p/255 - mean) / std."""
        mean = np.asarray(self.normalize["mean"], np.float64).reshape(1, 3, 1, 1)
        std = np.asarray(self.normalize["std"], np.float64).reshape(1, 3, 1, 1)
        return ((np.asarray(images, np.float64) / 255.0 - mean) / std).astype(np.float32)

    def _input(self, x):
        if not isinstance(x, np.ndarray) or x.dtype.kind != "f":
            raise TypeError(f"runtime model: x must be a float numpy array, got {getattr(x, 'dtype', type(x))}")
        if x.ndim != 4 or x.shape[1] != self.input_shape[0] or 0 in x.shape:
            raise ValueError(f"runtime model: x must be (N, {self.input_shape[0]}, H, W), got shape {x.shape}")
        return np.ascontiguousarray(x, dtype=np.float32)

    def __call__(self, x):
        x = self._input(x)
        for op in self.ops:
            x = _run(op, x)
        return x

    def profile(self, x, repeats=1):
        """(logits, {op name: median seconds}) over ``repeats`` passes of ``x``, each op timed with
        time.perf_counter; ``__call__`` stays free of the timer calls."""
        if repeats < 1:
            raise ValueError(f"profile: repeats must be >= 1, got {repeats}")
        x = self._input(x)
        times = [[] for _ in self.ops]
        for _ in range(repeats):
            y = x
            for op, t in zip(self.ops, times):
                start = time.perf_counter()
                y = _run(op, y)
                t.append(time.perf_counter() - start)
        return y, {name: float(np.median(t)) for name, t in zip(self.op_names, times)}

    def __repr__(self):
        return (f"runtime.Model({self.model}, width {self.width:g}, method {self.method}, {self.num_classes} classes, "
                f"from {self.path})")


def _layer(reader, entry, where, cls):
    """The layer of header ``entry``: ``cls`` (Conv or Linear), or its k-bit form for a k-bit kind, or
    the pruned / SAL conv of those kinds."""
    if entry.get("kind") in KBIT_KINDS:
        cls = {Conv: KbitConv, Linear: KbitLinear}[cls]
    elif cls is Conv and entry.get("kind") in STRUCTURED:
        cls = STRUCTURED[entry["kind"]]
    return cls(reader, entry, where)


def _op_name(op):
    """The training model's name for ``op``: its layer's for conv / linear, the block's for a block
    (its conv1 is "<block>.conv1"), "pool" for the pooling."""
    kind = op[0]
    if kind == "global_avg_pool":
        return "pool"
    if kind in BLOCKS:
        return op[1].name.rsplit(".", 1)[0]
    return op[1].name


def _run(op, x):
    """One op on x; a block's residual add and ReLU run in its convs' epilogues (``Conv.__call__``)."""
    kind = op[0]
    if kind == "conv":
        return op[1](x, relu=op[2])
    if kind == "basic_block":
        _, conv1, conv2, sc = op
        h = conv1(x, relu=True)
        return conv2(h, residual=x if sc is None else sc(x), relu=True)
    if kind == "bireal_block":
        _, conv1, conv2, sc = op
        h = conv1(x, residual=x if sc is None else sc(x))
        return conv2(h, residual=h)
    if kind == "shift_block":
        _, conv1, conv2, sc, shift = op
        h = conv1(x, relu=True)
        return conv2(shift(h), residual=x if sc is None else sc(x), relu=True)
    if kind == "global_avg_pool":
        return x.mean(axis=(2, 3), dtype=np.float32)  # (N, C)
    return op[1](x)
