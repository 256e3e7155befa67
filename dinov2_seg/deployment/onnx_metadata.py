"""What an exported file records besides the network, so that
:class:`~.onnx_inference.OnnxSegmentor` needs no config: the config's name
and text (its test and TTA pipelines), the classes and palette, the
normalisation, the window rule and what the output holds.

ONNX models carry string ``metadata_props``; this writes two: a readable
summary (``dinov2_seg``, JSON) and the whole config (``dinov2_seg.config``,
mmengine's Python text of the merged config).
"""
import json
from typing import Tuple

from mmengine.config import Config

from dinov2_seg.datasets.pipelines import test_dataset_meta

SUMMARY_KEY = 'dinov2_seg'
CONFIG_KEY = 'dinov2_seg.config'


def export_summary(cfg: Config, size: Tuple[int, int], head_output: str,
                   family: str) -> dict:
    """The readable part of the record."""
    test_cfg = cfg.model.test_cfg
    preprocessor = cfg.model.data_preprocessor
    meta = test_dataset_meta(cfg)
    return dict(
        config=cfg.filename,
        family=family,
        classes=list(meta.get('classes', ())),
        palette=[list(colour) for colour in meta.get('palette', ())],
        mean=list(preprocessor.mean),
        std=list(preprocessor.std),
        bgr_to_rgb=bool(preprocessor.get('bgr_to_rgb', False)),
        window=list(size),
        stride=list(test_cfg.stride),
        window_rule=test_cfg.get('window_rule', 'stride'),
        align_corners=bool(cfg.model.decode_head.get('align_corners', False)),
        output=head_output,
        tta='tta_pipeline' in cfg and 'tta_model' in cfg)


def write_metadata(onnx_file: str, cfg: Config, summary: dict) -> None:
    """Add the record to ``onnx_file`` (rewritten in place)."""
    import onnx
    model = onnx.load(onnx_file)
    del model.metadata_props[:]
    for key, value in ((SUMMARY_KEY, json.dumps(summary)), (CONFIG_KEY,
                                                            cfg.pretty_text)):
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.save(model, onnx_file)


def read_metadata(session, onnx_file: str) -> Tuple[dict, Config]:
    """The summary and the config recorded in a file, from its
    onnxruntime session."""
    props = session.get_modelmeta().custom_metadata_map
    if SUMMARY_KEY not in props or CONFIG_KEY not in props:
        raise ValueError(
            f'{onnx_file} records no config (metadata {SUMMARY_KEY!r}): it '
            'was not written by tools/export_onnx.py of this version; pass '
            "the config it was exported from (OnnxSegmentor(file, config))")
    summary = json.loads(props[SUMMARY_KEY])
    return summary, Config.fromstring(props[CONFIG_KEY], '.py')
