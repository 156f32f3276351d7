"""The exported-model file: layout, and reading it with every check done before a kernel runs.

An exported model (written by ``tinycomp.export``) is one ``.npz`` of three or four plain arrays,
nothing pickled:

    header    uint8 (bytes,)   UTF-8 JSON, below
    float32   float32 (F,)     every float tensor, concatenated (folded conv weights and biases,
                               per-channel scales, the linear layer)
    bits      uint64 (B,)      every binary weight tensor, concatenated: one tensor's signs in OIHW
                               (or (O, I)) order, flattened and packed by ``tinycomp_kernels.bits``
                               (element j in bit j % 64 of word j // 64, bit 1 = +1, tail bits 0);
                               and every k-bit weight tensor's integer codes as ``planes`` bit planes
                               of the flattened tensor, plane i = bit i of each code (two's complement
                               if ``signed``), each plane packed as the signs are
    int32     int32 (I,)       optional, written when a layer has indices: the CSR row pointers and
                               column indices of pruned layers (``tinycomp.runtime.sparse``)

The header: {"format": FORMAT, "method", "model", "width", "num_classes", "dataset", "normalize":
{"mean", "std"}, "input_shape": [C, H, W], "entries": {"float32": F, "bits": B, "int32": I (when
present)}, "thinned" (null, or a thinned model's channel counts: ``tinycomp.export_sparse``), "ops":
[...]}. A tensor is referenced as {"offset", "size"} into float32 or int32, or {"offset", "size"
(words), "bits"} into bits, or {"offset", "size" (words), "count" (codes), "planes", "signed"} into
bits for codes.
Ops and layers: see ``tinycomp.runtime.model``.

``Reader`` holds a file's arrays and turns a reference into a tensor, refusing a reference out of
range or disagreeing with the shape the header gives; every error is a FormatError naming the file
and the entry (an npz member, or a path into the header such as ``ops[3].conv1.weight``). Members are
judged by their .npy headers before their data is read, so an object (pickled) member is refused
unread. ``file_kind`` tells an exported model from a training checkpoint by the members it holds.
"""
import json
import os
import zipfile
import zlib

import numpy as np
from tinycomp_kernels.bits import n_words, unpack_signs
from tinycomp_kernels.bitserial import unpack_planes

FORMAT = "tinycomp-export-2"  # 2: layers may carry an unfolded BatchNorm ("bn"); a reader of 1 would skip it
READABLE = ("tinycomp-export-1", FORMAT)  # a version-1 file has no "bn" entries and runs as it did
ENTRIES = {"header": np.uint8, "float32": np.float32, "bits": np.uint64}
OPTIONAL_ENTRIES = {"int32": np.int32}  # absent: empty
_NPY_HEADER_READERS = {(1, 0): np.lib.format.read_array_header_1_0, (2, 0): np.lib.format.read_array_header_2_0}


class FormatError(ValueError):
    """An exported-model file that cannot be run: unreadable, not ours, or inconsistent."""


def _is_int(v):
    return isinstance(v, int) and not isinstance(v, bool)


class Reader:
    """The arrays and header of exported model ``path``, checked as far as the file alone allows."""

    def __init__(self, path):
        self.path = str(path)
        if not os.path.isfile(self.path):
            raise FormatError(f"exported model {self.path}: no such file")
        if not zipfile.is_zipfile(self.path):
            raise FormatError(f"exported model {self.path}: not an .npz archive (truncated, or another kind of file)")
        arrays = self._arrays()
        try:
            header = json.loads(arrays["header"].tobytes().decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:  # RecursionError: absurd nesting
            raise self.error("header", f"not UTF-8 JSON ({exc})") from None
        if not isinstance(header, dict):
            raise self.error("header", f"a JSON {type(header).__name__}, not an object")
        if header.get("format") not in READABLE:
            raise self.error("header.format", f"{header.get('format')!r}, expected one of {', '.join(READABLE)} "
                             "(written by another version of tinycomp?)")
        self.header, self.header_size = header, arrays["header"].size  # header_size in bytes
        sizes = self.field(header, "entries", dict, "header")
        for name in ("float32", "bits", *OPTIONAL_ENTRIES):
            expected = sizes.get(name, 0 if name in OPTIONAL_ENTRIES else None)
            if expected != arrays[name].size:
                raise self.error(name, f"{arrays[name].size} elements, but the header says {expected!r}")
        self.floats, self.words, self.integers = arrays["float32"], arrays["bits"], arrays["int32"]
        if not np.all(np.isfinite(self.floats)):
            raise self.error("float32", "holds NaN or Inf")

    def _arrays(self):
        try:
            with zipfile.ZipFile(self.path) as z:
                self._check_members(z)
            archive = np.load(self.path, allow_pickle=False)
        except FormatError:  # a ValueError, already naming the entry
            raise
        except (ValueError, OSError, zipfile.BadZipFile, EOFError, zlib.error) as exc:
            raise FormatError(f"exported model {self.path}: not readable as an .npz ({type(exc).__name__}: {exc})") from None
        arrays = {name: np.zeros(0, dtype) for name, dtype in OPTIONAL_ENTRIES.items()}
        with archive:
            for name in [*ENTRIES, *(n for n in OPTIONAL_ENTRIES if n in archive.files)]:
                try:
                    arrays[name] = archive[name]
                except (ValueError, OSError, zipfile.BadZipFile, EOFError, MemoryError, zlib.error) as exc:
                    raise self.error(name, f"unreadable (a damaged member): {type(exc).__name__}: {exc}") from None
                if arrays[name].ndim != 1:  # a member whose data disagrees with its own .npy header
                    raise self.error(name, f"shape {arrays[name].shape}, expected a 1-D array")
        return arrays

    def _check_members(self, z):
        """The archive holds exactly ENTRIES and any of OPTIONAL_ENTRIES, each 1-D of its dtype, judged
        from the members' .npy headers before any data is read: an object array (whose reading would
        unpickle) is refused here."""
        names = [n[:-len(".npy")] if n.endswith(".npy") else n for n in z.namelist()]
        extra = sorted(set(names) - set(ENTRIES) - set(OPTIONAL_ENTRIES))
        if extra:
            raise self.error(extra[0], f"unexpected entry; an exported model holds {', '.join(ENTRIES)} "
                             f"(and {', '.join(OPTIONAL_ENTRIES)} when needed)")
        for name, dtype in {**ENTRIES, **OPTIONAL_ENTRIES}.items():
            if name not in names:
                if name in OPTIONAL_ENTRIES:
                    continue
                raise self.error(name, "missing; not a tinycomp exported model")
            shape, stored = self._member_layout(z, name)
            if stored.hasobject:
                raise self.error(name, f"holds Python objects (dtype {stored}); reading them would unpickle, so "
                                 "the file is refused")
            if stored != dtype or len(shape) != 1:
                raise self.error(name, f"{stored} of shape {shape}, expected a 1-D {np.dtype(dtype)} array")

    def _member_layout(self, z, name):
        """(shape, dtype) from member ``name``'s .npy header, its data left unread."""
        try:
            with z.open(f"{name}.npy") as f:
                version = np.lib.format.read_magic(f)
                read = _NPY_HEADER_READERS.get(version)
                layout = read(f) if read else None
        except (ValueError, OSError, zipfile.BadZipFile, EOFError, zlib.error) as exc:
            raise self.error(name, f"unreadable .npy header: {type(exc).__name__}: {exc}") from None
        if layout is None:
            raise self.error(name, f".npy format version {version}, expected one of {list(_NPY_HEADER_READERS)}")
        shape, _, dtype = layout
        return shape, dtype

    def error(self, where, message):
        return FormatError(f"exported model {self.path}: entry {where}: {message}")

    def field(self, obj, key, types, where):
        """obj[key], which must be of ``types``."""
        if not isinstance(obj, dict) or key not in obj:
            raise self.error(f"{where}.{key}", "missing")
        v = obj[key]
        if not isinstance(v, types) or isinstance(v, bool) and types in (int, float, (int, float)):
            raise self.error(f"{where}.{key}", f"{v!r} is not a {getattr(types, '__name__', types)}")
        return v

    def ints(self, obj, key, n, lo, where):
        """obj[key]: a list of ``n`` ints, each >= lo, returned as a tuple."""
        v = self.field(obj, key, list, where)
        if len(v) != n or not all(_is_int(i) and i >= lo for i in v):
            raise self.error(f"{where}.{key}", f"{v!r} is not a list of {n} ints >= {lo}")
        return tuple(v)

    def _span(self, ref, where, pool, size, entry):
        if not isinstance(ref, dict) or not all(_is_int(ref.get(k)) for k in ("offset", "size")):
            raise self.error(where, f"{ref!r} is not a tensor reference {{'offset': int, 'size': int}}")
        start, n = ref["offset"], ref["size"]
        if n != size:
            raise self.error(where, f"size {n} disagrees with the layer's shape ({size} expected)")
        if start < 0 or start + n > pool.size:
            raise self.error(where, f"elements {start}..{start + n} are out of range of the {entry} entry's {pool.size}")
        return pool[start:start + n]

    def float_tensor(self, ref, shape, where):
        """The float32 tensor ``ref`` points to, reshaped to ``shape`` (a copy)."""
        return self._span(ref, where, self.floats, int(np.prod(shape)), "float32").reshape(shape).copy()

    def int32_tensor(self, ref, shape, where):
        """The int32 tensor ``ref`` points to, reshaped to ``shape`` (a copy)."""
        return self._span(ref, where, self.integers, int(np.prod(shape)), "int32").reshape(shape).copy()

    def sign_tensor(self, ref, shape, where):
        """The ±1 float32 tensor of ``shape`` whose packed signs ``ref`` points to."""
        n = int(np.prod(shape))
        if not isinstance(ref, dict) or ref.get("bits") != n:
            raise self.error(where, f"holds {ref.get('bits') if isinstance(ref, dict) else ref!r} bits, the shape "
                             f"{list(shape)} has {n}")
        words = self._span(ref, where, self.words, n_words(n), "bits")
        if n % 64 and words[-1] >> np.uint64(n % 64):
            raise self.error(where, f"nonzero tail bits past bit {n}")
        return unpack_signs(np.ascontiguousarray(words).reshape(1, -1), n).reshape(shape)

    def code_tensor(self, ref, shape, where):
        """(int64 codes of ``shape``, planes, signed) from the bit planes ``ref`` points to."""
        n = int(np.prod(shape))
        if not isinstance(ref, dict) or ref.get("count") != n:
            raise self.error(where, f"holds {ref.get('count') if isinstance(ref, dict) else ref!r} codes, the shape "
                             f"{list(shape)} has {n}")
        planes, signed = ref.get("planes"), ref.get("signed")
        if not _is_int(planes) or not 1 <= planes <= 8 or not isinstance(signed, bool):
            raise self.error(where, f"planes {planes!r} and signed {signed!r}: expected 1..8 planes and true or false")
        words = self._span(ref, where, self.words, planes * n_words(n), "bits").reshape(planes, 1, n_words(n))
        if n % 64 and np.any(words[:, 0, -1] >> np.uint64(n % 64)):
            raise self.error(where, f"nonzero tail bits past code {n}")
        return unpack_planes(np.ascontiguousarray(words), n, signed).reshape(shape), planes, signed


def file_kind(path):
    """"exported" or "checkpoint": the kind of tinycomp file ``path`` is, told by its members (an exported
    model has a ``header`` entry, a checkpoint a ``meta`` entry), not by its name. FormatError if neither."""
    path = str(path)
    if os.path.isdir(path):
        raise FormatError(f"{path}: is a folder, not a checkpoint file or an exported model")
    if not os.path.isfile(path):
        raise FormatError(f"{path}: no such file")
    try:
        with zipfile.ZipFile(path) as z:
            names = set(z.namelist())
    except (zipfile.BadZipFile, OSError, EOFError) as exc:
        raise FormatError(f"{path}: not an .npz archive (truncated, or another kind of file), so neither a "
                          f"tinycomp checkpoint nor an exported model ({type(exc).__name__}: {exc})") from None
    if "header.npy" in names:
        return "exported"
    if "meta.npy" in names:
        return "checkpoint"
    raise FormatError(f"{path}: neither a tinycomp checkpoint (no meta entry) nor an exported model (no header entry)")
