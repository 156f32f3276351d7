"""Summary of an exported model: per layer its kind, shapes, parameters, stored bits and MACs, and what
the file takes, read from the file itself (the counterpart of ``tinycomp.summary`` for a checkpoint).

With BatchNorm folded, a layer's parameters are its weight, its per-channel scale (binary and k-bit
kinds), its bias and a k-bit layer's input alpha or step, plus the unfolded BatchNorm's scale and
shift where the file keeps one ("bn": networks with k-bit inputs); its stored bits are what the file holds for
it: 32 per float32 value, 64 per packed word (1 bit a binary weight, k bits a k-bit code, the last
word's tail included). MACs per image: conv OH·OW·O·C·KH·KW, linear in·out; "binary" for XNOR layers
(both operands ±1), "kbit" for k-bit layers (both operands integer codes), "float" otherwise (a
binary-weight or ternary layer multiplies float inputs), as in ``tinycomp.summary``. A pruned or SAL
layer (an entry with "nnz") has nnz weights (kept weights, kept pairs) plus its scale and bias, stores
its index structures besides (CSR's int32 row pointers and indices, 32 bits each; SAL's tap codes and
mask), and executes nnz·OH·OW MACs. A shift has no parameters and no MACs.
"""
import os

import numpy as np

LAYER_KEYS = ("layer", "conv1", "conv2", "shortcut")


def _entries(header):
    """The header entry of every conv and linear layer, in execution order."""
    return [op[k] for op in header["ops"] for k in LAYER_KEYS if isinstance(op.get(k), dict)]


def _refs(entry):
    """The tensor references of a layer entry: weight (a pruned / SAL layer's values and index
    structures), scale, bias, a k-bit input's alpha / step, an unfolded BatchNorm's scale and shift."""
    inputs, bn = entry.get("input") or {}, entry.get("bn") or {}
    keys = ("weight", "values", "indptr", "indices", "taps", "mask", "scale", "bias")
    return ([entry[k] for k in keys if k in entry] + [inputs[k] for k in ("alpha", "step") if k in inputs]
            + [bn[k] for k in ("scale", "shift") if k in bn])


def _stored_bits(entry):
    return sum(64 * r["size"] if "bits" in r or "planes" in r else 32 * r["size"] for r in _refs(entry))


def summarize(model):
    """Rows per layer (name, kind, kernel path, weight shape, output shape, params, stored bits, MACs,
    MAC kind, batchnorm "folded" or "unfolded") and totals (params, stored bits, tensor and header bytes, file bytes on disk, MACs) of
    ``model`` (a ``tinycomp.runtime.Model``)."""
    paths = {name: path for name, _, path in model.layers()}
    rows = []
    for entry in _entries(model.header):
        name, shape = entry["name"], entry["shape"]
        _, out = model.shapes[name]
        params = int(np.prod(shape)) + sum(r["size"] for r in _refs(entry)[1:])
        macs = int(np.prod(out[1:])) * int(np.prod(shape)) if len(shape) == 4 else int(np.prod(shape))
        if "nnz" in entry:  # pruned and SAL layers: kept weights only
            params = entry["nnz"] + sum(entry[k]["size"] for k in ("scale", "bias") if k in entry)
            macs = int(np.prod(out[1:])) * entry["nnz"]
        rows.append({"name": name, "kind": entry["kind"], "path": paths[name], "shape": list(shape),
                     "output": list(out), "params": params, "stored_bits": _stored_bits(entry), "macs": macs,
                     "mac_kind": {"xnor": "binary", "kbit": "kbit"}.get(entry["kind"], "float"),
                     "batchnorm": "unfolded" if "bn" in entry else "folded"})
    sizes = model.header["entries"]
    tensor_bytes = 4 * sizes["float32"] + 8 * sizes["bits"] + 4 * sizes.get("int32", 0)
    header_bytes = model.header_size
    bits = sum(r["stored_bits"] for r in rows)
    totals = {"params": sum(r["params"] for r in rows), "stored_bits": bits, "stored_megabits": bits / 1e6,
              "tensor_bytes": tensor_bytes, "header_bytes": header_bytes,
              "file_bytes": os.path.getsize(model.path),
              "macs": sum(r["macs"] for r in rows),
              "float_macs": sum(r["macs"] for r in rows if r["mac_kind"] == "float"),
              "binary_macs": sum(r["macs"] for r in rows if r["mac_kind"] == "binary"),
              "kbit_macs": sum(r["macs"] for r in rows if r["mac_kind"] == "kbit")}
    return {"method": model.method, "layers": rows, "total": totals}


def format_summary(summary, title=""):
    lines = [title] if title else []
    lines.append(f"{'layer':<28} {'kind':<20} {'shape':<12} {'output':<12} {'params':>9} {'stored bits':>12} "
                 f"{'MACs':>12} {'MAC kind':>8}  kernel")
    for r in summary["layers"]:
        lines.append(f"{r['name']:<28} {r['kind']:<20} {'x'.join(map(str, r['shape'])):<12} "
                     f"{'x'.join(map(str, r['output'])):<12} {r['params']:>9,} {r['stored_bits']:>12,} "
                     f"{r['macs']:>12,} {r['mac_kind']:>8}  {r['path']}")
    t = summary["total"]
    bn_kept = any(r.get("batchnorm") == "unfolded" for r in summary["layers"])
    lines.append(f"method: {summary['method']} (exported: BatchNorm folded into the layers"
                 + (", or kept as a per-channel scale and shift before k-bit inputs" if bn_kept else "") + ")")
    lines.append(f"total: {t['params']:,} parameters, {t['stored_megabits']:.3f} Mb stored ({t['tensor_bytes']:,} "
                 f"bytes of tensors + {t['header_bytes']:,} bytes of header), {t['macs'] / 1e6:.2f} M MACs per image "
                 f"(float {t['float_macs'] / 1e6:.2f} M, binary {t['binary_macs'] / 1e6:.2f} M, "
                 f"k-bit {t['kbit_macs'] / 1e6:.2f} M); "
                 f"file on disk {t['file_bytes']:,} bytes")
    return "\n".join(lines)
