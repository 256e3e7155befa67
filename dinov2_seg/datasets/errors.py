"""Errors of a dataset's files, and their one-line form for the tools.

A bad file found while training or testing stops the run with one line that
names the file and what is wrong with it, not a 40-line traceback the user
has to dig the path out of (``--verbose`` keeps the traceback). The errors
are raised where the files are read (the label loader, the inference
inputs); mmcv's image loader, which the configs keep, names the file in an
AssertionError of its own, recognised here by its text.
"""
import os.path as osp
import re
from typing import Optional

# mmcv.transforms.LoadImageFromFile's check on what the decoder returned
# (cv2 returns None for bytes it cannot decode: a truncated PNG, a text
# file named .jpg).
_MMCV_IMAGE_FAILURE = re.compile(r'^failed to load image: (.+)$')
# A missing file is a FileNotFoundError of the file backend; it is the
# dataset's only when raised inside mmcv's image loader (a missing
# checkpoint or config is not), seen in the traceback's frames or, for an
# error a DataLoader worker re-raised, in its traceback's text.
_MMCV_IMAGE_LOADER = osp.join('mmcv', 'transforms', 'loading.py')
_MISSING_PATH = re.compile(r"No such file or directory: '(.+)'$")


class DataFileError(Exception):
    """A file of the dataset that cannot be used as it is. The message is
    one line: the file, what was found, what was expected and what to do."""


class UnreadableFileError(DataFileError, OSError):
    """An image or label file whose bytes cannot be decoded."""


class MissingFileError(DataFileError, FileNotFoundError):
    """A file the dataset lists that is not there (an image's label)."""


class LabelMapError(DataFileError, ValueError):
    """A decodable label map that is not one of the config's: colour
    channels, a size other than its image's, values that are no class."""


def unreadable_image_message(path: str) -> str:
    return (f'Cannot read the image {path} (not decodable: a truncated or '
            'corrupt file, or not an image)')


def _last_line(error: BaseException) -> str:
    """The error's own message: as torch's DataLoader re-raises an error
    of a worker process, the worker's traceback comes first and the
    original ``module.Type: message`` line last."""
    lines = str(error).strip().splitlines()
    line = lines[-1] if lines else ''
    error_type = type(error)
    for name in (f'{error_type.__module__}.{error_type.__qualname__}',
                 error_type.__qualname__):
        if len(lines) > 1 and line.startswith(name + ': '):
            return line[len(name) + 2:]
    return line


def one_line_data_error(error: BaseException) -> Optional[str]:
    """The one-line message of an error caused by a dataset file (this
    module's errors, mmcv's failed image decode), also when a DataLoader
    worker raised it; ``None`` for any other error."""
    if isinstance(error, DataFileError):
        return _last_line(error)
    if isinstance(error, AssertionError):
        found = _MMCV_IMAGE_FAILURE.match(_last_line(error))
        if found:
            return unreadable_image_message(found.group(1))
    if isinstance(error, FileNotFoundError) and _raised_in_image_loader(error):
        found = _MISSING_PATH.search(_last_line(error))
        path = error.filename or (found.group(1) if found else '?')
        return (f'The image {path} does not exist: the dataset lists it '
                '(check data_root, data_prefix and img_suffix)')
    return None


def _raised_in_image_loader(error: BaseException) -> bool:
    frame = error.__traceback__
    while frame is not None:
        if frame.tb_frame.f_code.co_filename.endswith(_MMCV_IMAGE_LOADER):
            return True
        frame = frame.tb_next
    return _MMCV_IMAGE_LOADER in str(error)
