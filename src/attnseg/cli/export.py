"""`attnseg export`: a model to an ONNX graph (dynamic or fixed size, ISR baked in) or an OpenVINO IR, and int8
graphs of either calibrated on real images (onnxruntime QDQ, or NNCF for OpenVINO)."""
from __future__ import annotations

from pathlib import Path

from ..deploy import export as onnx_export
from ..deploy.graphs import is_graph_file
from ..data import DatasetError, EvalTransform, build_dataset
from ..io import WriteFailed
from ..deploy.quantize import calibration_inputs, default_fp32_ops, quantize_int8
from . import options
from .common import CLIError, apply_isr_arg, check_file_out, first_line, model_from_name_or_source


def add_arguments(verb: str, p):
    options.add_model(p, help="registered name (random weights) or checkpoint", loading=False)
    options.add_num_classes(p)
    p.add_argument("--format", choices=["onnx", "openvino"], default="onnx",
                   help="onnx (.onnx) or openvino (IR: NAME.xml with NAME.bin beside it; dynamic shapes)")
    options.add_out(p, required=True, help="output .onnx file (or .xml with --format openvino)")
    p.add_argument("--dynamic", action="store_true", help="dynamic batch, height and width")
    options.add_size(p, options.pair, (256, 320), "example (or fixed) input size")
    p.add_argument("--opset", type=int, default=20, choices=range(18, 24), metavar="{18..23}",
                   help="ONNX opset (default 20: onnxruntime >= 1.17; 18 for older runtimes, GELU then unfused)")
    options.add_isr(p)
    p.add_argument("--quantize", choices=["int8"], default=None,
                   help="int8: onnxruntime static QDQ quantization, or NNCF post-training quantization with "
                        "--format openvino")
    p.add_argument("--calibrate", default=None, metavar="DATASET:ROOT:SPLIT", help="calibration images (int8)")
    p.add_argument("--calib-images", type=options.int_range(1, 10000), default=64)
    p.add_argument("--calib-method", choices=["minmax", "percentile", "entropy"], default="minmax")
    p.add_argument("--exclude-ops", default=None,
                   help="comma-separated ONNX op types kept in fp32 (default: the model family's measured choice, "
                        "'none' for none); products of two activations and arithmetic on sizes always stay fp32")
    return cmd_export


def cmd_export(args) -> int:
    check_file_out(args.out)
    if is_graph_file(args.model):
        raise CLIError(f"--model {args.model} is already a graph: export takes a model name or checkpoint")
    if args.format != "openvino" and Path(args.out).suffix != ".onnx":  # attnseg knows a graph by its suffix
        raise CLIError(f"--out {args.out}: an ONNX graph is written as NAME.onnx (--format openvino writes NAME.xml)")
    model = model_from_name_or_source(args)
    apply_isr_arg(model, args)
    if args.format == "openvino":
        return _export_openvino(model, args)
    if args.quantize == "int8":
        return _export_int8(model, args)
    try:
        path = onnx_export.export_onnx(model, args.out, dynamic=args.dynamic, example_size=args.size, opset=args.opset)
    except (ImportError, onnx_export.ExportError) as e:
        raise CLIError(str(e)) from None
    except OSError as e:  # WriteFailed names the file; a temp file of the exporter's its own
        raise CLIError(str(e) if isinstance(e, WriteFailed) else f"cannot write {args.out}: {e.strerror or e}") from None
    print(f"wrote {path} ({'dynamic batch/height/width' if args.dynamic else f'fixed {args.size[0]}x{args.size[1]}'}"
          + (f", ISR {args.isr} baked in" if args.isr else "") + ")")
    return 0


def _calibration(model, args) -> list:
    """The --calibrate images, preprocessed as predict does (one line for every way they can be wrong)."""
    if not args.calibrate:
        raise CLIError("--quantize int8 needs --calibrate DATASET:ROOT:SPLIT (real images for the activation ranges)")
    parts = args.calibrate.split(":")
    if len(parts) != 3:
        raise CLIError(f"--calibrate expects DATASET:ROOT:SPLIT, e.g. camvid:data/camvid:train; got "
                       f"{args.calibrate!r}")
    try:
        return calibration_inputs(model, build_dataset(parts[0], parts[1], parts[2], EvalTransform()),
                                  args.calib_images)
    except (DatasetError, ValueError) as e:
        raise CLIError(str(e)) from None


def _export_openvino(model, args) -> int:
    """--format openvino: the converted graph (fp32 weights; --dtype at run time) or, with --quantize int8,
    NNCF's int8 graph."""
    from ..deploy.backends import openvino as ov_backend
    from ..deploy.backends.openvino_int8 import ir_path, quantize_openvino, save_ir

    try:
        ir_path(args.out)  # before minutes of conversion and calibration
    except ValueError as e:
        raise CLIError(str(e)) from None
    if args.calib_method != "minmax" or args.exclude_ops is not None:
        raise CLIError("--calib-method and --exclude-ops are onnxruntime's; NNCF chooses by model family "
                       "(transformer or convolutional) with min/max ranges")
    try:
        if args.quantize == "int8":
            calib = _calibration(model, args)
            path = quantize_openvino(model, args.out, calib)
            what = f"int8, NNCF on {len(calib)} images"
        else:
            ov = ov_backend.require_openvino()
            path = save_ir(ov, ov_backend.convert(ov, model), model, args.out, {"precision": "fp32"})
            what = "fp32 weights; --dtype bf16 at run time"
    except (ValueError, ImportError, onnx_export.ExportError) as e:
        raise CLIError(first_line(e)) from None
    except OSError as e:
        raise CLIError(str(e) if isinstance(e, WriteFailed) else f"cannot write {args.out}: {e.strerror or e}") from None
    print(f"wrote {path} and {path.with_suffix('.bin').name} (OpenVINO IR, dynamic batch/height/width, {what}"
          + (f", ISR {args.isr} baked in" if args.isr else "") + ")")
    return 0


def _export_int8(model, args) -> int:
    calib = _calibration(model, args)
    try:
        excl = (default_fp32_ops(model) if args.exclude_ops is None
                else [o.strip() for o in args.exclude_ops.split(",") if o.strip() and o.strip() != "none"])
        path = quantize_int8(model, args.out, calib, args.calib_method, excl)
    except (DatasetError, ValueError, ImportError, onnx_export.ExportError) as e:
        raise CLIError(str(e)) from None
    except OSError as e:
        raise CLIError(str(e) if isinstance(e, WriteFailed) else f"cannot write {args.out}: {e.strerror or e}") from None
    print(f"wrote {path} (int8 QDQ, per-channel weights, {args.calib_method} calibration on {len(calib)} images"
          + (f", fp32 op types: {','.join(excl)}" if excl else "")
          + "; products of two activations and size arithmetic in fp32)")
    return 0
