"""AtomicLocalBackend: a write is all or nothing (a failed one leaves the
old file and a ``.partial`` beside it); mmengine's save_checkpoint goes
through it with ``backend_args=dict(backend='atomic_local')``."""
import pytest
import torch
from mmengine.fileio import get_file_backend
from mmengine.runner.checkpoint import save_checkpoint

from dinov2_seg.engine.atomic_file_backend import (AtomicLocalBackend,
                                                   partial_files, partial_name)


class Interrupted(Exception):
    pass


class FailsHalfway(AtomicLocalBackend):
    """Dies (raises) with half of the bytes written."""

    def write_partial(self, obj: bytes, partial: str) -> None:
        with open(partial, 'wb') as file:
            file.write(obj[:len(obj) // 2])
        raise Interrupted


def test_a_write_is_all_or_nothing(tmp_path):
    target = tmp_path / 'deep' / 'iter_2.pth'
    AtomicLocalBackend().put(b'old checkpoint', target)
    assert target.read_bytes() == b'old checkpoint'
    assert partial_files(target.parent) == []
    with pytest.raises(Interrupted):
        FailsHalfway().put(b'new checkpoint, longer', target)
    assert target.read_bytes() == b'old checkpoint'
    assert partial_files(target.parent) == [partial_name(target)]
    AtomicLocalBackend().put_text('iter_4.pth', target)
    assert target.read_text() == 'iter_4.pth'
    assert partial_files(target.parent) == []


def test_mmengine_saves_checkpoints_through_it(tmp_path):
    target = tmp_path / 'iter_4.pth'
    state = {'state_dict': {'w': torch.arange(6.)}}
    args = dict(backend='atomic_local')
    assert isinstance(
        get_file_backend(str(target), backend_args=args), AtomicLocalBackend)
    save_checkpoint(state, str(target), backend_args=args)
    assert torch.equal(torch.load(target)['state_dict']['w'], torch.arange(6.))
    assert partial_files(tmp_path) == []
