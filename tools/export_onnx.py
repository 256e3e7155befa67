"""Export to ONNX: python tools/export_onnx.py CONFIG CHECKPOINT
[--backbone FILE] [--size H W] [--opset N] --out model.onnx [--verbose]"""
import sys

from dinov2_seg.cli import export_onnx

if __name__ == '__main__':
    sys.exit(export_onnx.main())
