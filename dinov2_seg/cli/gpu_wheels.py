"""The Python half of ``tools/gpu_wheels.sh`` and ``tools/gpu_check.sh``:
which wheels a GPU machine needs, and whether a wheel folder covers them.

A lent GPU machine has a CUDA torch and many common packages but no
network, and another Python than this machine; what it lacks travels as
wheels in ``.whl/`` (with mmcv 2.1.0's source, which it builds there).

- ``select REPORT``: from pip's resolution report (``pip install --dry-run
  --report`` for the target Python and platform), the pins to download:
  the package's requirements (``setup.py``: ``install_requires`` and the
  ``test`` extra, less torch and mmcv), mmcv 2.1.0's own and its build's,
  and theirs in turn, stopping at what the machine already has.
- ``check FOLDER``: every one of those requirements, and every requirement
  of every wheel in the folder (markers evaluated for the target), is met
  by exactly one wheel whose tags the target accepts, or by the machine;
  mmcv's source is there. With ``--installed`` the machine is the running
  interpreter (on the GPU machine, after the wheels are installed).

pip itself cannot do the check for another machine: its ``--target``
resolution ignores what that machine has installed.
"""
import argparse
import ast
import json
import os
import os.path as osp
import re
import sys
import zipfile
from email.parser import Parser
from typing import Dict, Iterable, List, Optional, Sequence, Set

from packaging.requirements import Requirement
from packaging.tags import Tag, compatible_tags, cpython_tags
from packaging.utils import parse_wheel_filename
from packaging.version import Version

MMCV_SOURCE = 'mmcv-2.1.0.tar.gz'
# mmcv 2.1.0's requirements/runtime.txt (its sdist's setup.py adds an
# OpenCV when none is installed).
MMCV_RUNTIME = ('addict', 'mmengine>=0.3.0', 'numpy', 'packaging', 'Pillow',
                'pyyaml', 'yapf', 'opencv-python>=3')
# Building mmcv 2.1.0: its setup.py imports pkg_resources (FACTS.md:
# setuptools<70), and ninja compiles the ops in parallel. These must come
# from the folder: the machine's setuptools is newer.
MMCV_BUILD = ('setuptools<70', 'wheel', 'ninja')
FROM_FOLDER = ('setuptools', )
# The machine's CUDA torch and what it came with.
TORCH_PROVIDES = ('torch', 'triton', 'sympy', 'mpmath', 'networkx', 'jinja2',
                  'markupsafe', 'filelock', 'fsspec', 'typing-extensions')
# One module (cv2), four distributions: any of them meets a requirement of
# opencv-python (the headless one lacks only the GUI windows).
ALIASES = {
    'opencv-python':
    ('opencv-python', 'opencv-python-headless', 'opencv-contrib-python',
     'opencv-contrib-python-headless')
}


def normalise(name: str) -> str:
    """PEP 503 name: lower case, runs of ``-_.`` as one ``-``."""
    return re.sub(r'[-_.]+', '-', name).lower()


def package_requirements(setup_py: str) -> List[str]:
    """``install_requires`` and ``extras_require['test']`` of setup.py (read,
    not run), less torch (the machine's) and mmcv (built from source)."""
    with open(setup_py, encoding='utf-8') as file:
        tree = ast.parse(file.read(), setup_py)
    found: Dict[str, object] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.keyword) and node.arg in ('install_requires',
                                                          'extras_require'):
            found[node.arg] = ast.literal_eval(node.value)
    if 'install_requires' not in found:
        raise ValueError(f'{setup_py}: no install_requires found')
    listed = [*found['install_requires'], *found['extras_require']['test']]
    return [
        r for r in dict.fromkeys(listed)
        if normalise(Requirement(r).name) not in ('torch', 'mmcv')
    ]


def all_requirements(setup_py: str) -> List[str]:
    return [*package_requirements(setup_py), *MMCV_RUNTIME, *MMCV_BUILD]


def marker_environment(python: str) -> Dict[str, str]:
    """PEP 508 marker values of CPython ``python`` (e.g. '3.12') on
    x86-64 Linux."""
    return dict(
        python_version=python,
        python_full_version=f'{python}.0',
        implementation_name='cpython',
        implementation_version=f'{python}.0',
        platform_python_implementation='CPython',
        os_name='posix',
        sys_platform='linux',
        platform_system='Linux',
        platform_machine='x86_64',
        platform_release='',
        platform_version='',
        extra='')


def target_tags(python: str, glibc: str = '2.35') -> Set[Tag]:
    """The wheel tags CPython ``python`` accepts on x86-64 Linux with glibc
    ``glibc`` (manylinux_2_N for every N up to it, and the legacy names)."""
    major, minor = map(int, python.split('.'))
    glibc_minor = int(glibc.split('.')[1])
    platforms = [f'manylinux_2_{n}_x86_64' for n in range(glibc_minor, 4, -1)]
    legacy = {17: 'manylinux2014', 12: 'manylinux2010', 5: 'manylinux1'}
    platforms += [
        f'{name}_x86_64' for n, name in legacy.items() if n <= glibc_minor
    ]
    platforms.append('linux_x86_64')
    version = (major, minor)
    return {
        *cpython_tags(version, platforms=platforms), *compatible_tags(
            version, interpreter=f'cp{major}{minor}', platforms=platforms)
    }


class Wheel:
    """A wheel file's name, version, tags and Requires-Dist."""

    def __init__(self, path: str):
        self.path = path
        name, self.version, _, self.tags = parse_wheel_filename(
            osp.basename(path))
        self.name = normalise(name)
        with zipfile.ZipFile(path) as archive:
            metadata = [
                n for n in archive.namelist()
                if re.fullmatch(r'[^/]+\.dist-info/METADATA', n)
            ]
            if len(metadata) != 1:
                raise ValueError(f'{path}: expected one *.dist-info/METADATA, '
                                 f'found {metadata}')
            text = archive.read(metadata[0]).decode('utf-8')
        self.requires = Parser().parsestr(text).get_all('Requires-Dist') or []


def read_present(path: Optional[str]) -> Dict[str, Optional[Version]]:
    """What the machine has: a file of ``name`` or ``name==version`` lines
    ('#' starts a comment), or None for nothing but the CUDA torch."""
    present: Dict[str, Optional[Version]] = {
        normalise(n): None
        for n in TORCH_PROVIDES
    }
    if path is None:
        return present
    with open(path, encoding='utf-8') as file:
        for number, line in enumerate(file, 1):
            line = line.split('#')[0].strip()
            if not line:
                continue
            name, _, version = line.partition('==')
            if not re.fullmatch(r'[A-Za-z0-9._-]+', name.strip()):
                raise ValueError(f'{path}:{number}: expected NAME or '
                                 f'NAME==VERSION, got {line!r}')
            present[normalise(name)] = Version(version) if version else None
    return present


def installed_distributions() -> Dict[str, Optional[Version]]:
    """The running interpreter's distributions and their versions."""
    from importlib.metadata import distributions
    found = {}
    for dist in distributions():
        name = dist.metadata['Name']
        if name:
            found[normalise(name)] = Version(dist.version)
    return found


def _candidates(name: str) -> Sequence[str]:
    return ALIASES.get(name, (name, ))


def _applies(requirement: Requirement, env: Dict[str, str],
             extras: Iterable[str]) -> bool:
    if requirement.marker is None:
        return True
    return any(
        requirement.marker.evaluate(dict(env, extra=extra))
        for extra in ('', *extras))


def check_folder(folder: str,
                 requirements: Sequence[str],
                 present: Dict[str, Optional[Version]],
                 python: str = '3.12',
                 glibc: str = '2.35') -> List[str]:
    """Everything wrong with ``folder`` for the target (empty: it
    resolves completely)."""
    env, tags = marker_environment(python), target_tags(python, glibc)
    errors, wheels = [], {}
    for file in sorted(os.listdir(folder)):
        if not file.endswith('.whl'):
            continue
        wheel = Wheel(osp.join(folder, file))
        if not wheel.tags & tags:
            errors.append(f'{file}: no tag CPython {python} on x86-64 Linux '
                          f'(glibc {glibc}) accepts')
        if wheel.name in wheels:
            errors.append(f'{file}: a second version of {wheel.name} '
                          f'(also {osp.basename(wheels[wheel.name].path)}); '
                          'pip installs one')
        wheels[wheel.name] = wheel
    if not osp.isfile(osp.join(folder, MMCV_SOURCE)):
        errors.append(f'{folder}: {MMCV_SOURCE} (mmcv source) is missing')

    def meet(requirement: Requirement, needed_by: str) -> None:
        name = normalise(requirement.name)
        for candidate in _candidates(name):
            if candidate in wheels:
                wheel = wheels[candidate]
                if not requirement.specifier.contains(
                        wheel.version, prereleases=True):
                    errors.append(f'{needed_by} requires {requirement}, the '
                                  f'folder has {wheel.name} {wheel.version}')
                else:
                    extras = requirement.extras
                    for text in wheel.requires:
                        needed = Requirement(text)
                        if extras and _applies(
                                needed, env,
                                extras) and (not _applies(needed, env, ())):
                            meet(needed, f'{wheel.name}[{",".join(extras)}]')
                return
        for candidate in _candidates(name):
            if candidate in present and name not in FROM_FOLDER:
                version = present[candidate]
                if version is not None and not requirement.specifier.contains(
                        version, prereleases=True):
                    errors.append(f'{needed_by} requires {requirement}, the '
                                  f'machine has {candidate} {version}')
                return
        where = 'the folder' if name in FROM_FOLDER else 'the folder or the '\
            'machine'
        errors.append(f'{needed_by} requires {requirement}: not in {where}')

    for text in requirements:
        requirement = Requirement(text)
        if _applies(requirement, env, ()):
            meet(requirement, 'dinov2_seg/mmcv')
    for wheel in wheels.values():
        for text in wheel.requires:
            requirement = Requirement(text)
            if _applies(requirement, env, ()):
                meet(requirement, f'{wheel.name} {wheel.version}')
    return errors


def select_pins(report: dict,
                requirements: Sequence[str],
                present: Dict[str, Optional[Version]],
                python: str = '3.12') -> List[str]:
    """``name==version`` of every package of pip's ``report`` that the
    requirements need and the machine lacks, found by walking their
    Requires-Dist from the roots."""
    env = marker_environment(python)
    resolved = {
        normalise(item['metadata']['name']): item['metadata']
        for item in report['install']
    }
    pins: Dict[str, str] = {}
    queue = [(Requirement(r), 'dinov2_seg/mmcv') for r in requirements]
    while queue:
        requirement, needed_by = queue.pop(0)
        name = normalise(requirement.name)
        if not _applies(requirement, env, ()):
            continue
        have = [c for c in _candidates(name) if c in present]
        if have and name not in FROM_FOLDER and (
                present[have[0]] is None or requirement.specifier.contains(
                    present[have[0]], prereleases=True)):
            continue
        if name not in resolved:
            raise ValueError(f'{needed_by} requires {requirement}, which '
                             "pip's report does not resolve")
        metadata = resolved[name]
        if name not in pins:
            pins[name] = f"{metadata['name']}=={metadata['version']}"
            for text in metadata.get('requires_dist', []):
                queue.append((Requirement(text), name))
        for text in metadata.get('requires_dist', []):
            needed = Requirement(text)
            if requirement.extras and not _applies(needed, env,
                                                   ()) and (_applies(
                                                       needed, env,
                                                       requirement.extras)):
                needed.marker = None  # met: it applies with these extras
                queue.append(
                    (needed, f'{name}[{",".join(requirement.extras)}]'))
    return sorted(pins.values(), key=str.lower)


def parse_args(argv: Optional[Sequence[str]]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('command', choices=['requirements', 'select', 'check'])
    parser.add_argument(
        'path', nargs='?', help='select: the report; check: the folder')
    parser.add_argument('--setup', default='setup.py')
    parser.add_argument('--python', default='3.12')
    parser.add_argument('--glibc', default='2.35')
    parser.add_argument(
        '--present',
        help='file of the packages the machine has (NAME[==VERSION] lines); '
        'default: the CUDA torch only')
    parser.add_argument(
        '--installed',
        action='store_true',
        help='check: the running interpreter is the machine')
    return parser.parse_args(argv)


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse_args(argv)
    requirements = all_requirements(args.setup)
    if args.command == 'requirements':
        print('\n'.join(requirements))
        return 0
    present = read_present(args.present)
    if args.command == 'select':
        with open(args.path, encoding='utf-8') as file:
            report = json.load(file)
        print('\n'.join(
            select_pins(report, requirements, present, args.python)))
        return 0
    if args.installed:
        present.update(installed_distributions())
    errors = check_folder(args.path, requirements, present, args.python,
                          args.glibc)
    for error in errors:
        print(f'[gpu-wheels] {error}', file=sys.stderr)
    if not errors:
        print(f'[gpu-wheels] {args.path} resolves completely for CPython '
              f'{args.python} (x86-64 Linux, glibc {args.glibc})')
    return 1 if errors else 0


if __name__ == '__main__':
    # Run as a file by the shell scripts: it needs only the standard library
    # and packaging, so it works before mmengine is installed (the package's
    # __init__ imports it).
    sys.exit(main())
