"""Download Meta's released DINOv2 files into checkpoints/ (Meta's DINOv3
files are listed, marked gated, and never downloaded).

python tools/download_checkpoints.py --list
python tools/download_checkpoints.py dinov2_vits14_pretrain.pth \
    dinov2_vits14_ade20k_ms_head.pth
python tools/download_checkpoints.py 'dinov2_vitb14*'   # shell-style patterns
"""
import argparse
import fnmatch
import os
import os.path as osp
import sys
from typing import List, Optional

from dinov2_seg.checkpoints.catalog import (GATED_FILES, GATED_HEAD_FILES,
                                            OFFICIAL_FILES, gated_message)
from dinov2_seg.checkpoints.safe_loading import download_file


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('names', nargs='*', help='file names or patterns')
    parser.add_argument('--dest', default='checkpoints')
    parser.add_argument('--list', action='store_true', help='list the files')
    parser.add_argument(
        '--force', action='store_true', help='download existing files again')
    args = parser.parse_args(argv)
    gated_files = {**GATED_FILES, **GATED_HEAD_FILES}
    if args.list or not args.names:
        width = max(map(len, [*OFFICIAL_FILES, *gated_files]))
        for name, entry in OFFICIAL_FILES.items():
            print(f'{name:{width}s} {entry.config or "":35s} {entry.url}')
        for name, gated in gated_files.items():
            print(f'{name:{width}s} {gated.config or "-":35s} gated '
                  f'({gated.licence}): {gated.access_url}')
        return 0
    refused = [
        name for name in gated_files if any(
            fnmatch.fnmatch(name, p) for p in args.names)
    ]
    if refused:
        for name in refused:
            print(gated_message(name), file=sys.stderr)
        return 2
    chosen = [
        name for name in OFFICIAL_FILES if any(
            fnmatch.fnmatch(name, p) for p in args.names)
    ]
    unknown = [
        p for p in args.names
        if not any(fnmatch.fnmatch(n, p) for n in OFFICIAL_FILES) and not any(
            fnmatch.fnmatch(n, p) for n in gated_files)
    ]
    if unknown:
        print(f'unknown file(s) {unknown}; see --list', file=sys.stderr)
        return 2
    os.makedirs(args.dest, exist_ok=True)
    for name in chosen:
        path = osp.join(args.dest, name)
        if osp.exists(path) and not args.force:
            print(f'{path} exists, kept (--force to download again)')
            continue
        print(f'{OFFICIAL_FILES[name].url} -> {path}')
        try:
            download_file(OFFICIAL_FILES[name].url, path)
        except OSError as error:
            print(
                f'{name}: the download from {OFFICIAL_FILES[name].url} '
                f'failed ({type(error).__name__}: {error}); nothing was '
                f'written to {path}. Run the same command again.',
                file=sys.stderr)
            return 1
    return 0
