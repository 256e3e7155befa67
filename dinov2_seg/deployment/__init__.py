"""ONNX export of the window network and inference around the exported file
(needs the ``export`` extra: ``pip install -e '.[export]'``)."""
from .onnx_export import (NotExportableError, check_exportable,
                          compare_with_onnxruntime, export_onnx)
from .onnx_inference import OnnxSegmentor

__all__ = [
    'NotExportableError', 'OnnxSegmentor', 'check_exportable',
    'compare_with_onnxruntime', 'export_onnx'
]
