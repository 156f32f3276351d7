"""Command line: ``tinycomp train | eval | summary | export | bench`` (also ``python -m tinycomp ...``).

eval, summary and bench take a training checkpoint or an exported model (``tinycomp export``), told
apart by the file's content, not its name.

Exit codes: 0 success; 2 bad arguments, bad data, a bad checkpoint or exported model, or an existing
run folder (with a message naming what was wrong); 3 the training diverged (NaN/Inf loss; the last
good checkpoint is kept); 128 + signal number when SIGINT / SIGTERM stopped training (after a
checkpoint was written).
"""
import argparse
import dataclasses
import json
import os
import sys
import tempfile

from . import __version__, models
from .config import MAX_WIDTH, DivergedError, RunError, TrainConfig, resume_config


def _train_parser(sub):
    d = TrainConfig()
    p = sub.add_parser("train", help="train a model on CIFAR", description="Train a network on CIFAR-10/100 "
                       "on the CPU. The run folder gets last.npz, best.npz (with --val) and log.jsonl.")
    p.add_argument("--model", default=None, help=f"one of {', '.join(models.names())} (default {d.model})")
    p.add_argument("--width", type=float, default=None,
                   help=f"channel width multiplier in (0, {MAX_WIDTH:g}] (default {d.width})")
    p.add_argument("--dataset", choices=["cifar10", "cifar100"], default=None, help="default cifar10")
    p.add_argument("--epochs", type=int, default=None, help=f"default {d.epochs}")
    p.add_argument("--batch-size", type=int, default=None, help=f"default {d.batch_size}; the last partial "
                   "batch of each epoch is dropped")
    p.add_argument("--lr", type=float, default=None, help=f"peak (onecycle) or initial learning rate (default {d.lr})")
    p.add_argument("--schedule", choices=["onecycle", "cosine", "step", "constant"], default=None,
                   help="learning-rate schedule, stepped every batch (default onecycle; step: x0.1 at 50 %% and 75 %%)")
    p.add_argument("--pct-start", type=float, default=None, help=f"onecycle warm-up fraction (default {d.pct_start})")
    p.add_argument("--momentum", type=float, default=None, help=f"SGD momentum (default {d.momentum})")
    p.add_argument("--no-nesterov", dest="nesterov", action="store_false", default=None,
                   help="plain momentum instead of Nesterov")
    p.add_argument("--weight-decay", type=float, default=None, help=f"default {d.weight_decay}, on all parameters but quantizer scales and SAL's attention")
    p.add_argument("--no-decay-bn-bias", action="store_true", default=None,
                   help="no weight decay on BatchNorm parameters and biases")
    p.add_argument("--label-smoothing", type=float, default=None, help="default 0")
    p.add_argument("--seed", type=int, default=None, help="default 0")
    p.add_argument("--threads", type=int, default=None, help="Numba and BLAS threads (default: all cores)")
    _add_data_options(p)
    p.add_argument("--val", type=int, default=None, help="hold out N training images for validation "
                   "(best.npz is chosen on them)")
    p.add_argument("--subset", type=int, default=None, help="train on the first N training images only")
    p.add_argument("--test-every", type=int, default=None, help="evaluate on the test set every N epochs and "
                   "after the last one (default 1)")
    _add_method_options(p, None)
    p.add_argument("--init", default=None, help="start from the weights of this checkpoint (same model; a float "
                   "checkpoint into a --method run: the usual fine-tuning recipe)")
    p.add_argument("--out", required=True, help="run folder (must not exist, unless --resume)")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its last.npz")
    p.add_argument("--no-progress", dest="progress", action="store_false",
                   help="no progress bar or in-epoch lines (the line per epoch and the summary stay)")
    return p


def _add_method_options(p, defaults):
    """--method and its options, the same for train (defaults None: unset options are not 'given',
    so --resume can tell them apart) and summary (defaults from TrainConfig)."""
    d = TrainConfig()
    given = (lambda value: value) if defaults is not None else (lambda value: None)
    p.add_argument("--method", default=given(d.method), help="compression method: none, bc, bwn, xnor, ternary, "
                   "w<k>a<m> (k-bit weights, m-bit activations, 1 to 8; a32: float activations), prune, filter-prune, "
                   "sal, or structure+quantization (prune+bwn, filter-prune+w4a4, sal+bc, ...); docs/methods.md "
                   "(default none)")
    p.add_argument("--quantizer", default=given(d.quantizer), help="for w<k>a<m>: dorefa (DoReFa weights and "
                   "activations), pact (DoReFa weights, PACT activations) or lsq (default dorefa)")
    p.add_argument("--keep-float", default=given(d.keep_float), help="layers kept full precision, comma-separated "
                   "from first, last, shortcuts, or none (default first,last)")
    p.add_argument("--bc-stochastic", action="store_true", default=given(d.bc_stochastic),
                   help="bc: the stochastic sign in training")
    p.add_argument("--bwn-scale", choices=["filter", "layer"], default=given(d.bwn_scale),
                   help="bwn, xnor: one alpha per output filter (default) or per layer")
    p.add_argument("--xnor-act-scale", action="store_true", default=given(d.xnor_act_scale),
                   help="xnor: XNOR-Net's activation scale beta (off by default, as in most later BNNs)")
    p.add_argument("--sparsity", type=float, default=given(d.sparsity), help="prune: the final fraction of each "
                   f"conv's weights pruned, in [0, 1) (default {d.sparsity})")
    p.add_argument("--prune-scope", choices=["layer", "global"], default=given(d.prune_scope),
                   help="prune: every conv to the sparsity (layer, default) or one threshold over all (global)")
    p.add_argument("--prune-start", type=float, default=given(d.prune_start), help="prune: epoch where the AGP ramp "
                   "starts (default 0)")
    p.add_argument("--prune-end", type=float, default=None, help="prune: epoch where it reaches --sparsity, "
                   "then the masks stay fixed (default: half the run; before the last epoch ends)")
    p.add_argument("--prune-every", type=int, default=given(d.prune_every), help="prune: steps between mask "
                   f"updates on the ramp (default {d.prune_every})")
    p.add_argument("--ratio", type=float, default=None, help="filter-prune: the fraction of the filters of every "
                   "prunable channel group removed (default 0.5)")
    p.add_argument("--target-macs", type=float, default=None, help="filter-prune: instead of --ratio, prune until "
                   "the MACs are at most this fraction of the model's (e.g. 0.5)")
    p.add_argument("--filter-criterion", choices=["l1", "l2", "bn"], default=given(d.filter_criterion),
                   help="filter-prune: rank filters by L1 or L2 norm, or by |BatchNorm scale| (default l1)")
    p.add_argument("--sal-t0", type=float, default=given(d.sal_t0), help=f"sal: softmax temperature at the first "
                   f"step (default {d.sal_t0:g})")
    p.add_argument("--sal-tf", type=float, default=given(d.sal_tf), help=f"sal: temperature at the last step, "
                   f"reached geometrically batch by batch (default {d.sal_tf:g})")
    p.add_argument("--sal-shared", action="store_true", default=given(d.sal_shared),
                   help="sal: one learned shift per input channel, shared by all filters")


def _add_data_options(p):
    """--data-dir and --download / --no-download, the same for train and eval."""
    p.add_argument("--data-dir", default=None, help="folder containing cifar-10-batches-bin/ (or "
                   "cifar-100-binary/); default $TINYCOMP_DATA, else ~/.cache/tinycomp")
    choice = p.add_mutually_exclusive_group()
    choice.add_argument("--download", dest="download", action="store_const", const=True, default=None,
                        help="download the dataset into --data-dir / $TINYCOMP_DATA if it is not there (without "
                        "either, a missing dataset is downloaded to ~/.cache/tinycomp anyway)")
    choice.add_argument("--no-download", dest="download", action="store_const", const=False,
                        help="fail instead of downloading a missing dataset")


def _given_options(args):
    """The TrainConfig fields the user set on the command line (every option defaults to None)."""
    return {f.name: getattr(args, f.name) for f in dataclasses.fields(TrainConfig)
            if getattr(args, f.name, None) is not None}


def cmd_train(args):
    from .progress import run_summary
    from .train import Trainer, finished_epochs, read_run

    given = _given_options(args)
    if not args.resume:
        cfg = TrainConfig(**given)
    else:
        saved, meta = read_run(args.out)
        cfg = resume_config(saved, given)
        last = os.path.join(args.out, "last.npz")
        if meta is not None and finished_epochs(meta, last) >= cfg.epochs:
            best = os.path.join(args.out, "best.npz")
            print(f"tinycomp train: the run in {args.out} is already finished ({cfg.epochs} epochs); nothing "
                  f"to resume. {run_summary(meta.get('history') or [], last, best if cfg.val else None)}")
            return 0
    trainer = Trainer(cfg, args.out, resume=args.resume, progress=args.progress)
    signum = trainer.run()
    if signum is not None:
        print(f"tinycomp train: stopped by signal {signum}; checkpoint saved in {args.out}/last.npz. "
              f"Continue with: tinycomp train --out {args.out} --resume", file=sys.stderr)
        return 128 + signum
    print(f"tinycomp train: done: {trainer.summary()}", flush=True)
    return 0


def _position_text(result):
    """Where training was when the evaluated checkpoint was written, for eval's text output."""
    epoch, epochs, batch = result["epoch"], result["epochs"], result["mid_epoch_batch"]
    if epoch is None:
        return "epoch unknown"
    if batch:
        return f"saved mid-epoch: {batch} batches into epoch {epoch + 1}/{epochs}"
    return f"after epoch {epoch}/{epochs}"


def _json_numbers(value):
    """``value`` with NaN (a class without test images) as None, so that the JSON printed is strict."""
    if isinstance(value, dict):
        return {k: _json_numbers(v) for k, v in value.items()}
    return None if isinstance(value, float) and value != value else value


def cmd_eval(args):
    from .evaluate import evaluate_checkpoint, evaluate_exported
    from .runtime.format import file_kind

    if args.batch_size < 1:
        raise RunError(f"--batch-size must be >= 1, got {args.batch_size}")
    if args.against is not None:
        return _eval_against(args, file_kind)
    evaluate = evaluate_exported if file_kind(args.file) == "exported" else evaluate_checkpoint
    result = evaluate(args.file, data_dir=args.data_dir, download=args.download, batch_size=args.batch_size,
                      progress=not args.json)
    if args.json:
        print(json.dumps(_json_numbers(result), indent=1))
        return 0
    where = _position_text(result) if result["kind"] == "checkpoint" else "exported model"
    print(f"{result['model']} (width {result['width']:g}, method {result['method']}, {where}) on {result['dataset']} "
          f"test set: accuracy {100 * result['test_acc']:.2f} %, "
          f"loss {result['test_loss']:.4f}")
    for name, acc in result["per_class_acc"].items():
        print(f"  {name:<14} {100 * acc:6.2f} %")
    return 0


def _eval_against(args, file_kind):
    """eval EXPORTED --against CHECKPOINT: the two graphs' predictions compared on the test set."""
    from .evaluate import agreement

    if file_kind(args.file) != "exported" or file_kind(args.against) != "checkpoint":
        raise RunError(f"--against: compare an exported model with the checkpoint it came from: tinycomp eval "
                       f"MODEL.npz --against RUN/last.npz (got {args.file} and {args.against})")
    result = agreement(args.file, args.against, data_dir=args.data_dir, download=args.download,
                       batch_size=args.batch_size, progress=not args.json)
    if args.json:
        print(json.dumps(result, indent=1))
        return 0
    print(f"{result['model']} ({result['method']}) on {result['dataset']} test set: exported model {args.file} and "
          f"checkpoint {args.against} predict the same class for {100 * result['agreement']:.2f} % of "
          f"{result['images']} images ({result['disagreeing']} differ); accuracy {100 * result['exported_acc']:.2f} % "
          f"exported, {100 * result['checkpoint_acc']:.2f} % checkpoint; largest logit difference "
          f"{result['max_logit_diff']:.2g} of the image's largest logit")
    return 0


def _summary_of_exported(args):
    from . import runtime
    from .runtime.summary import format_summary, summarize

    model = runtime.load(args.file)
    s = summarize(model)
    if args.json:
        print(json.dumps({"file": args.file, "kind": "exported", "model": model.model, "width": model.width,
                          "num_classes": model.num_classes, **s}, indent=1))
    else:
        print(format_summary(s, f"{model.model} (width {model.width:g}, {model.num_classes} classes, "
                             f"{'x'.join(map(str, model.input_shape))} input, method {model.method}), exported "
                             f"model {args.file}"))
    return 0


def cmd_summary(args):
    from .summary import format_summary, summarize

    from .compress.run_config import summary_model
    from .runtime.format import file_kind

    if args.file is not None:
        if file_kind(args.file) == "exported":
            return _summary_of_exported(args)
        from .evaluate import model_of_checkpoint

        model, meta = model_of_checkpoint(args.file)
        cfg, classes = meta["config"], meta["num_classes"]
        name, width, method = cfg["model"], cfg["width"], cfg.get("method", "none")
    else:
        if args.model is None:
            raise RunError("summary: give a checkpoint, an exported model or --model")
        if not 0 < args.width <= MAX_WIDTH:
            raise RunError(f"--width must be in (0, {MAX_WIDTH}], got {args.width}")
        if args.num_classes < 1:
            raise RunError(f"--num-classes must be >= 1, got {args.num_classes}")
        try:
            model = summary_model(vars(args), args.num_classes)
        except ValueError as exc:
            raise RunError(str(exc)) from None
        name, width, method, classes = args.model, args.width, args.method, args.num_classes
    s = summarize(model)
    if args.json:
        print(json.dumps({"model": name, "width": width, **s}, indent=1))
    else:
        print(format_summary(s, f"{name} (width {width:g}, {classes} classes, 3x32x32 input, method {method})"))
    return 0


def cmd_export(args):
    from .export import ExportError, export_checkpoint

    try:
        header = export_checkpoint(args.checkpoint, args.out)
    except ExportError as exc:
        raise RunError(f"{args.checkpoint}: {exc}") from None
    except OSError as exc:
        raise RunError(f"cannot write {args.out}: {exc.strerror or exc}") from None
    print(f"tinycomp export: {header['model']} (width {header['width']:g}, method {header['method']}) written to "
          f"{args.out} ({os.path.getsize(args.out):,} bytes)")
    return 0


def _batch_sizes(text):
    try:
        sizes = [int(v) for v in text.split(",")]
    except ValueError:
        sizes = []
    if not sizes or min(sizes) < 1:
        raise RunError(f"--batch-sizes must be comma-separated integers >= 1 (e.g. 1,64), got {text!r}")
    return sizes


def _runtime_model(path):
    """(runtime model, file kind) of ``path``: an exported model, or a checkpoint exported to a
    temporary file first."""
    from . import runtime
    from .export import ExportError, export_checkpoint
    from .runtime.format import file_kind

    kind = file_kind(path)
    if kind == "exported":
        return runtime.load(path), kind
    with tempfile.TemporaryDirectory() as folder:
        out = os.path.join(folder, "model.npz")
        try:
            export_checkpoint(path, out)
        except ExportError as exc:
            raise RunError(f"{path}: {exc}") from None
        return runtime.load(out), kind  # loaded whole into memory: the temporary file may go


def cmd_bench(args):
    from .bench import bench, format_bench
    from .machine import machine_info
    from .threads import set_num_threads

    sizes = _batch_sizes(args.batch_sizes)
    if args.repeats < 1:
        raise RunError(f"--repeats must be >= 1, got {args.repeats}")
    if args.threads is not None and args.threads < 1:
        raise RunError(f"--threads must be >= 1, got {args.threads}")
    model, kind = _runtime_model(args.file)
    if args.threads:
        set_num_threads(args.threads)
    result = {"file": args.file, "kind": kind, "machine": machine_info(), **bench(model, sizes, args.repeats)}
    print(json.dumps(result, indent=1) if args.json else format_bench(result))
    return 0


def build_parser():
    parser = argparse.ArgumentParser(prog="tinycomp", description="Train, evaluate and inspect compressed "
                                     "networks on CIFAR, on a CPU.")
    parser.add_argument("--version", action="version", version=f"tinycomp {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    _train_parser(sub)
    p = sub.add_parser("eval", help="test accuracy of a checkpoint or an exported model",
                       description="Test accuracy and per-class accuracy of a checkpoint written by tinycomp "
                       "train, or of an exported model (tinycomp export) run by tinycomp.runtime.")
    p.add_argument("file", help="a checkpoint (last.npz or best.npz of a run folder) or an exported model; "
                   "told apart by content")
    _add_data_options(p)
    p.add_argument("--batch-size", type=int, default=500, help="images per forward pass (default 500); "
                   "changes the memory used, not the result")
    p.add_argument("--json", action="store_true", help="print JSON instead of text, nothing else on stdout: "
                   "test_acc, test_loss, per_class_acc, images, dataset, model, width, method, kind (checkpoint "
                   "or exported) and for a checkpoint epoch, epochs, mid_epoch, mid_epoch_batch")
    p.add_argument("--against", default=None, metavar="CHECKPOINT", help="with an exported model: compare its "
                   "predictions on the test set with those of the checkpoint it was exported from (eval-mode "
                   "training graph): agreement, images that differ, both accuracies, largest logit difference")
    p = sub.add_parser("summary", help="parameters, MACs and memory per layer",
                       description="Per-layer and total parameters, MACs and memory of a model.")
    p.add_argument("file", nargs="?", default=None, help="a checkpoint written by tinycomp train: its model "
                   "as trained (pruned masks, SAL's rounded pairs, thinned shapes); or an exported model: its "
                   "layers as stored and the file's size; the other options are then not used")
    p.add_argument("--model", default=None, choices=models.names(), help="the model to describe (without a "
                   "checkpoint)")
    p.add_argument("--width", type=float, default=1.0, help=f"channel width multiplier in (0, {MAX_WIDTH:g}]")
    p.add_argument("--num-classes", type=int, default=10, help="classifier outputs (default 10)")
    _add_method_options(p, TrainConfig())
    p.add_argument("--json", action="store_true", help="print JSON")
    p = sub.add_parser("export", help="write a checkpoint's model in its compressed form",
                       description="Write the model of a checkpoint as one compact .npz for tinycomp.runtime: "
                       "binary weights bit-packed, k-bit weights as codes in bit planes, pruned layers as CSR, "
                       "BatchNorm folded where no quantizer follows. Supported: resnet20/32/56, resnet18/34 and "
                       "shiftresnet20/32/56 in float and the methods of tinycomp train (not yet: XNOR-Net's "
                       "activation scale, --xnor-act-scale). Check it with: tinycomp eval "
                       "MODEL.npz --against CHECKPOINT.")
    p.add_argument("checkpoint", help="a .npz written by tinycomp train (last.npz or best.npz of a run folder)")
    p.add_argument("--out", required=True, help="the exported model file to write (.npz)")
    p = sub.add_parser("bench", help="speed of an exported model against the same network in float",
                       description="Latency and throughput of a model on tinycomp.runtime against the same "
                       "network in tinycomp float (fresh random weights, eval mode), per layer and in total, "
                       "with the machine recorded. Both sides alternate in the same run; medians of the repeats.")
    p.add_argument("file", help="an exported model, or a checkpoint (exported to a temporary file first)")
    p.add_argument("--batch-sizes", default="1,64", help="comma-separated batch sizes (default 1,64: latency "
                   "at batch 1, throughput at batch 64)")
    p.add_argument("--repeats", type=int, default=10, help="timed rounds per batch size (default 10), after "
                   "one warm-up round")
    p.add_argument("--threads", type=int, default=None, help="Numba and BLAS threads (default: all cores)")
    p.add_argument("--json", action="store_true", help="print JSON: machine, and per batch size the total and "
                   "per-layer times of both sides and their speedup")
    return parser


def main(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    command = {"train": cmd_train, "eval": cmd_eval, "summary": cmd_summary, "export": cmd_export,
               "bench": cmd_bench}[args.command]
    from .bench import BenchError
    from .checkpoint import CheckpointError
    from .data import DatasetError
    from .runtime.format import FormatError

    try:
        return command(args)
    except DivergedError as exc:
        print(f"tinycomp {args.command}: error: {exc}", file=sys.stderr)
        return 3
    except (RunError, DatasetError, CheckpointError, FormatError, BenchError) as exc:
        print(f"tinycomp {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # Ctrl-C before training started (data loading): nothing to save
        print(f"tinycomp {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
