"""The tools' mains run one after another in one process (the Python API,
a notebook, tests/test_docs_commands.py) keep each run in its own work dir.
"""
import torch
from helpers.tools import write_config
from mmengine.config import Config
from mmseg.registry import MODELS

from dinov2_seg.cli import test as test_tool


def test_second_test_run_writes_its_own_vis_data(tmp_path, shapes_root):
    checkpoint = tmp_path / 'model.pth'
    runs = {}
    for name in ('first', 'second'):
        config = write_config(tmp_path / f'{name}.py', shapes_root)
        if not checkpoint.exists():
            torch.manual_seed(0)
            model = MODELS.build(Config.fromfile(str(config)).model)
            torch.save(dict(state_dict=model.state_dict()), checkpoint)
        work_dir = tmp_path / name
        runs[name] = test_tool.main(
            [str(config),
             str(checkpoint), '--work-dir',
             str(work_dir)])
        # The run's config, in its own timestamped folder.
        (vis_data, ) = work_dir.glob('*/vis_data')
        assert [p.name for p in vis_data.iterdir()] == ['config.py'], name
        assert f'work_dir = {str(work_dir)!r}' in (vis_data /
                                                   'config.py').read_text()
    # The same model on the same data: the same metrics, written twice.
    assert runs['first'] == runs['second']
    assert 0 <= runs['first']['mIoU'] <= 100
