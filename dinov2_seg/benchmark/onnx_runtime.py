"""The benchmark's ``onnx`` mode: the window network exported to ONNX
(:func:`dinov2_seg.deployment.export_onnx`) and run by ONNX Runtime on the
CPU, against the same network in PyTorch on the same ``--batch`` windows,
eager and (``--compile``) compiled as ``tools/test.py --compile`` compiles
it, alternating after a warm-up in one process.

Optionally (``--quantize``) ONNX Runtime's dynamic int8 quantisation of the
exported file (``onnxruntime.quantization.quantize_dynamic``: int8 weights
of the MatMul/Gemm layers, activations quantised per call): its time and
the share of window pixels whose class (argmax of the window scores)
agrees with the float32 file's. Reported only; exports stay float32.
"""
import argparse
import copy
import os.path as osp
import tempfile
from typing import Callable, Dict

import numpy as np
import torch
from mmengine.config import Config

from .inputs import build_for_benchmark, window_size
from .timing import compare_runs


def _agreement(found: np.ndarray, expected: np.ndarray) -> float:
    """Share of window pixels with the same class (argmax over dim 1)."""
    return float((found.argmax(1) == expected.argmax(1)).mean())


def _session(onnx_file: str, threads: int):
    import onnxruntime
    options = onnxruntime.SessionOptions()
    # As many threads as torch uses, so the two runtimes get the same CPU.
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    return onnxruntime.InferenceSession(
        onnx_file, options, providers=['CPUExecutionProvider'])


def measure_onnx(cfg: Config, args: argparse.Namespace) -> dict:
    """ONNX Runtime vs PyTorch eager (and compiled) on the same windows."""
    from dinov2_seg.deployment.onnx_export import WindowLogits, export_onnx
    if args.device != 'cpu':
        raise ValueError('--mode onnx times ONNX Runtime on the CPU: add '
                         '--device cpu')
    segmentor = build_for_benchmark(copy.deepcopy(cfg), 'cpu', args.checkpoint)
    segmentor.cfg = cfg
    size = tuple(args.size) if args.size else window_size(cfg)
    threads = torch.get_num_threads()
    windows = torch.randn(
        args.batch, 3, *size, generator=torch.Generator().manual_seed(0))
    with tempfile.TemporaryDirectory() as tmp:
        onnx_file = osp.join(tmp, 'model.onnx')
        export_onnx(segmentor, onnx_file, size)
        session = _session(onnx_file, threads)
        feed = {'image': windows.numpy()}
        eager = WindowLogits(segmentor, size).eval()

        def torch_run(network: torch.nn.Module) -> Callable[[], np.ndarray]:

            def run():
                with torch.inference_mode():
                    return network(windows).numpy()

            return run

        runs: Dict[str, Callable] = dict(
            onnxruntime=lambda: session.run(None, feed)[0],
            eager=torch_run(eager))
        if args.compile:
            compiled = copy.deepcopy(segmentor)
            compiled.test_cfg.compile = True
            runs['compiled'] = torch_run(WindowLogits(compiled, size).eval())
        record = dict(
            size=list(size),
            windows=args.batch,
            onnx_megabytes=osp.getsize(onnx_file) / 2**20,
            ort_threads=threads)
        if args.quantize:
            from onnxruntime.quantization import QuantType, quantize_dynamic
            int8_file = osp.join(tmp, 'model.int8.onnx')
            quantize_dynamic(onnx_file, int8_file, weight_type=QuantType.QInt8)
            int8 = _session(int8_file, threads)
            runs['int8'] = lambda: int8.run(None, feed)[0]
            record['int8_megabytes'] = osp.getsize(int8_file) / 2**20
        seconds, outputs = compare_runs(runs, 'cpu', args.repeat, args.warmup)
    reference = outputs['eager']
    record.update(
        seconds=seconds['onnxruntime'],
        eager_seconds=seconds['eager'],
        speedup_vs_eager=seconds['eager'] / seconds['onnxruntime'],
        max_abs_difference=float(
            np.abs(outputs['onnxruntime'] - reference).max()),
        label_agreement=_agreement(outputs['onnxruntime'], reference))
    if args.compile:
        record.update(
            compiled_seconds=seconds['compiled'],
            speedup_vs_compiled=seconds['compiled'] / seconds['onnxruntime'])
    if args.quantize:
        record.update(
            int8_seconds=seconds['int8'],
            int8_speedup_vs_float32=seconds['onnxruntime'] / seconds['int8'],
            int8_label_agreement=_agreement(outputs['int8'],
                                            outputs['onnxruntime']))
    return record
