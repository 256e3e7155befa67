"""``--amp`` of tools/test.py and tools/inference.py on every kind of
config: test autocast is a setting of BatchedEncoderDecoder and of every
segmentor built on it (EoMTSegmentor), found through the registry."""
import pytest
from helpers.tools import REPO, check, run
from mmengine.config import Config

from dinov2_seg.engine.run_config import enable_test_amp

# One config per kind: linear, ms (tested with --tta), Mask2Former, EoMT.
KINDS = ('ade20k_vits14_linear', 'ade20k_vits14_ms', 'ade20k_vits14_m2f',
         'ade20k_vits14_eomt')

# Each config on the shapes data (ADE20K layout) resized to one 70-pixel
# window, over the random ViT-S; --tta at 70 and 140 pixels (1 and 4
# windows).
FORK = """
_base_ = [{base!r}]
data_root = {data!r}
pipeline = [dict(type='LoadImageFromFile'),
            dict(type='Resize', scale=(70, 70), keep_ratio=False),
            dict(type='DinoLoadAnnotations'), dict(type='PackSegInputs')]
test_dataloader = dict(num_workers=0, persistent_workers=False,
                       dataset=dict(data_root=data_root, pipeline=pipeline))
val_dataloader = test_dataloader
test_pipeline = pipeline
model = dict(backbone=dict(init_cfg=None),
             test_cfg=dict(crop_size=(70, 70), stride=(50, 50)))
tta_scale_count = 2
tta_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='TestTimeAug', transforms=[
        [dict(type='Resize', scale=(70 * r, 70 * r), keep_ratio=False)
         for r in (1, 2)],
        [dict(type='RandomFlip', prob=0., direction='horizontal'),
         dict(type='RandomFlip', prob=1., direction='horizontal')],
        [dict(type='DinoLoadAnnotations')], [dict(type='PackSegInputs')]])]
"""

# One interpreter for every run (imports once): a random whole-model
# checkpoint per config, then the tools' main functions as the scripts call
# them; a run that raises stops the script with its traceback.
SCRIPT = """
import sys, torch
from mmengine.config import Config
from mmseg.registry import MODELS
from mmseg.utils import register_all_modules
from dinov2_seg.cli import inference, test
register_all_modules()
image = sys.argv[1]
for config in sys.argv[2:]:
    model = MODELS.build(Config.fromfile(config).model)
    checkpoint = config[:-3] + '.pth'
    torch.save(dict(state_dict=model.state_dict()), checkpoint)
    tta = ['--tta'] if config.endswith('_ms.py') else []
    metrics = test.main([config, checkpoint, '--amp', '--work-dir',
                         config[:-3] + '_work', *tta])
    print('TESTED', config, metrics['mIoU'])
    inference.main([image, '--config', config, '--checkpoint',
                        checkpoint, '--out-dir', config[:-3] + '_out',
                        '--amp'])
    print('INFERRED', config)
"""


@pytest.mark.slow
def test_amp_flag_runs_on_linear_ms_tta_m2f_and_eomt(tmp_path, shapes_root):
    configs = []
    for kind in KINDS:
        path = tmp_path / f'{kind}.py'
        path.write_text(
            FORK.format(
                base=str(REPO / 'configs' / f'{kind}.py'),
                data=str(shapes_root)))
        configs.append(path)
    image = next((shapes_root / 'images' / 'validation').glob('*.jpg'))
    log = check(run('-c', SCRIPT, image, *configs, timeout=800))
    for config in configs:
        assert f'TESTED {config}' in log
        assert f'INFERRED {config}' in log
        assert len(list((tmp_path / f'{config.stem}_out').rglob('*.png')))


@pytest.mark.parametrize('kind', KINDS)
def test_amp_setting_reaches_every_batched_segmentor(kind):
    cfg = Config.fromfile(str(REPO / 'configs' / f'{kind}.py'))
    enable_test_amp(cfg, kind)
    assert cfg.model.test_cfg.amp is True


def test_amp_on_a_stock_segmentor_is_refused_with_its_type():
    cfg = Config.fromfile(str(REPO / 'configs' / 'ade20k_vits14_linear.py'))
    cfg.model.type = 'EncoderDecoder'
    with pytest.raises(ValueError, match="model.type='EncoderDecoder'"):
        enable_test_amp(cfg, 'linear.py')
