"""The packages of dinov2_seg import only downwards: from the command-line
programs (cli) through the Python API and sweeps, deployment and benchmark, the
training engine and the models, down to checkpoints, datasets, evaluation,
visualization and the architecture table. Read from the source with ast,
imports inside functions included."""
import ast
from pathlib import Path
from typing import Iterator, Tuple

import pytest
from helpers.tools import REPO

# Low to high; a package may import its own level and any lower one.
LAYERS = (
    ('arch_settings', ),
    ('checkpoints', 'datasets', 'evaluation', 'visualization'),
    ('models', ),
    ('engine', ),
    ('deployment', 'benchmark'),
    ('apis', 'sweep'),
    ('cli', ),
)
LEVEL = {name: level for level, names in enumerate(LAYERS) for name in names}


def module_name(path: Path, root: Path) -> str:
    parts = path.relative_to(root.parent).with_suffix('').parts
    return '.'.join(parts[:-1] if parts[-1] == '__init__' else parts)


def imported_modules(path: Path, root: Path) -> Iterator[Tuple[int, str]]:
    """(line, absolute module name) of every import in a file; for
    ``from dinov2_seg import name`` (or ``from .. import name`` at the top
    of a package) dinov2_seg.name, the package it names."""
    package = module_name(path, root)
    if path.name != '__init__.py':
        package = package.rpartition('.')[0]
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split('.')
                base = base[:len(base) - (node.level - 1)]
                target = '.'.join(base +
                                  ([node.module] if node.module else []))
            else:
                target = node.module
            if target == 'dinov2_seg':
                for alias in node.names:
                    yield node.lineno, f'{target}.{alias.name}'
            else:
                yield node.lineno, target


def top_package(module: str) -> str:
    """The package of dinov2_seg a module belongs to ('' for others)."""
    parts = module.split('.')
    if parts[0] != 'dinov2_seg' or len(parts) < 2:
        return ''
    return parts[1]


def upward_imports(root: Path) -> list:
    """'file:line: importer -> imported' for every import of a higher
    package (by LAYERS) than the importing module's."""
    found = []
    for path in sorted(root.rglob('*.py')):
        source = top_package(module_name(path, root))
        if source not in LEVEL:
            continue  # dinov2_seg/__init__.py
        for line, module in imported_modules(path, root):
            target = top_package(module)
            if target in LEVEL and LEVEL[target] > LEVEL[source]:
                found.append(f'{path.relative_to(root.parent)}:{line}: '
                             f'{source} -> {module}')
    return sorted(set(found))


def test_every_package_is_placed_in_a_layer():
    packages = {
        path.stem if path.is_file() else path.name
        for path in (REPO / 'dinov2_seg').iterdir()
        if path.suffix == '.py' and path.stem != '__init__' or (
            path / '__init__.py').is_file()
    }
    assert packages == set(LEVEL)


def test_no_package_imports_a_higher_one():
    assert upward_imports(REPO / 'dinov2_seg') == []


def test_deployment_imports_neither_the_api_nor_the_programs():
    root = REPO / 'dinov2_seg'
    imported = {
        top_package(module)
        for path in (root / 'deployment').rglob('*.py')
        for _, module in imported_modules(path, root)
    }
    assert 'deployment' in imported  # its own modules: the walk sees them
    assert not imported & {'apis', 'cli'}


@pytest.mark.parametrize('source,expected', [
    ('from dinov2_seg.apis.inference import init_segmentor\n',
     'dinov2_seg/models/probe.py:1: models -> dinov2_seg.apis.inference'),
    ('def f():\n    from ..engine import console\n',
     'dinov2_seg/models/probe.py:2: models -> dinov2_seg.engine'),
    ('from .. import benchmark\n',
     'dinov2_seg/models/probe.py:1: models -> dinov2_seg.benchmark'),
    ('import dinov2_seg.cli.train\n',
     'dinov2_seg/models/probe.py:1: models -> dinov2_seg.cli.train'),
])
def test_an_upward_import_is_found(tmp_path, source, expected):
    # The checker itself, on a fabricated package: absolute, relative and
    # function-level imports from models up to higher packages.
    probe = tmp_path / 'dinov2_seg' / 'models' / 'probe.py'
    probe.parent.mkdir(parents=True)
    probe.write_text(source)
    assert expected in upward_imports(tmp_path / 'dinov2_seg')
    probe.write_text('from ..checkpoints import reading\n'
                     'from . import backbones\n')
    assert upward_imports(tmp_path / 'dinov2_seg') == []
