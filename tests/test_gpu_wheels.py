"""tools/gpu_wheels.sh's resolution logic (dinov2_seg/cli/gpu_wheels.py) on
fabricated wheel folders and pip reports: every requirement met once, by a
wheel the target Python accepts or by the machine, each fault named."""
import zipfile

import pytest
from helpers.tools import REPO
from packaging.requirements import Requirement
from packaging.version import Version

from dinov2_seg.cli import gpu_wheels
from dinov2_seg.cli.gpu_wheels import (check_folder, package_requirements,
                                       read_present, select_pins)


def make_wheel(folder, name, version, tag='py3-none-any', requires=()):
    """A wheel file as pip writes one: its METADATA in NAME-VERSION.dist-info
    (the only part the check reads)."""
    stem = f'{name.replace("-", "_")}-{version}'
    metadata = ''.join(
        [f'Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n'] +
        [f'Requires-Dist: {r}\n' for r in requires])
    path = folder / f'{stem}-{tag}.whl'
    with zipfile.ZipFile(path, 'w') as archive:
        archive.writestr(f'{stem}.dist-info/METADATA', metadata)
        archive.writestr(f'{stem}.dist-info/WHEEL', 'Wheel-Version: 1.0\n')
    return path


def complete_folder(tmp_path):
    """A folder meeting ROOTS for CPython 3.12 with PRESENT installed."""
    folder = tmp_path / 'whl'
    folder.mkdir()
    (folder / 'mmcv-2.1.0.tar.gz').write_bytes(b'source')
    make_wheel(
        folder,
        'mmengine',
        '0.10.7',
        requires=[
            'addict', 'numpy', 'opencv-python>=3',
            'tomli; python_version < "3.11"', 'coverage; extra == "tests"'
        ])
    make_wheel(folder, 'addict', '2.4.0')
    make_wheel(
        folder,
        'shapely',
        '2.2.0',
        'cp312-cp312-manylinux_2_24_x86_64.manylinux_2_28_x86_64',
        requires=['numpy>=1.21'])
    make_wheel(folder, 'setuptools', '69.5.1')
    return folder


ROOTS = ['mmengine>=0.10,<0.11', 'shapely', 'numpy', 'setuptools<70']
# numpy by version; the headless OpenCV stands for opencv-python;
# setuptools 80 must not count (mmcv's build needs <70, from the folder).
PRESENT = {
    'numpy': Version('2.5.2'),
    'opencv-python-headless': None,
    'setuptools': Version('80.0')
}


def test_complete_folder_resolves(tmp_path):
    folder = complete_folder(tmp_path)
    assert check_folder(str(folder), ROOTS, PRESENT, '3.12') == []


@pytest.mark.parametrize(
    'fault,message',
    [
        # A dependency of a wheel, found nowhere: named with who needs it.
        (lambda f: make_wheel(f, 'yapf', '0.43.0', requires=['platformdirs']),
         'yapf 0.43.0 requires platformdirs: not in the folder or the '
         'machine'),
        # Built for another Python.
        (lambda f: make_wheel(f, 'pycocotools', '2.0.11',
                              'cp311-cp311-manylinux_2_17_x86_64'),
         'pycocotools-2.0.11-cp311-cp311-manylinux_2_17_x86_64.whl: no tag '
         'CPython 3.12'),
        # Built for a newer glibc than the target's.
        (lambda f: make_wheel(f, 'regex', '1.0', 'py3-none-manylinux_2_39_'
                              'x86_64'), 'regex-1.0-py3-none-manylinux_2_39'),
        # Two versions of one package.
        (lambda f: make_wheel(f, 'addict', '2.3.0'),
         'a second version of addict'),
        # The machine's version out of a wheel's range.
        (lambda f: make_wheel(f, 'scipy-stub', '1.0', requires=['numpy<2']),
         'scipy-stub 1.0 requires numpy<2, the machine has numpy 2.5.2'),
        # The folder's version out of range.
        (lambda f: make_wheel(f, 'mmdet', '3.3.0', requires=['mmengine>=1']),
         'mmdet 3.3.0 requires mmengine>=1, the folder has mmengine 0.10.7'),
        # The old setuptools mmcv's build needs: only from the folder.
        (lambda f: (f / 'setuptools-69.5.1-py3-none-any.whl').unlink(),
         'requires setuptools<70: not in the folder'),
        (lambda f: (f / 'mmcv-2.1.0.tar.gz').unlink(),
         'mmcv-2.1.0.tar.gz (mmcv source) is missing'),
    ],
    ids=[
        'missing', 'python', 'glibc', 'two-versions', 'machine-version',
        'folder-version', 'setuptools', 'mmcv-source'
    ])
def test_each_fault_is_named(tmp_path, fault, message):
    folder = complete_folder(tmp_path)
    fault(folder)
    errors = check_folder(str(folder), ROOTS, PRESENT, '3.12')
    assert len(errors) == 1 and message in errors[0], errors


def test_markers_and_extras_follow_the_target(tmp_path):
    folder = complete_folder(tmp_path)
    # On 3.10 mmengine's tomli applies and is missing.
    errors = check_folder(str(folder), ROOTS, PRESENT, '3.10')
    assert any('requires tomli' in e for e in errors), errors
    # A requirement with an extra brings that extra's dependencies.
    errors = check_folder(
        str(folder), ROOTS + ['mmengine[tests]'], PRESENT, '3.12')
    assert errors == [
        'mmengine[tests] requires coverage; extra == "tests": not in the '
        'folder or the machine'
    ]
    # Without the headless OpenCV nothing provides opencv-python.
    present = {k: v for k, v in PRESENT.items() if 'opencv' not in k}
    errors = check_folder(str(folder), ROOTS, present, '3.12')
    assert errors == [
        'mmengine 0.10.7 requires opencv-python>=3: not in the folder or '
        'the machine'
    ]


def report_item(name, version, requires=()):
    return dict(
        metadata=dict(name=name, version=version, requires_dist=requires))


def test_pins_walk_the_report_and_stop_at_the_machine():
    report = dict(install=[
        report_item('mmengine', '0.10.7',
                    ['addict', 'numpy', 'yapf', 'opencv-python']),
        report_item('addict', '2.4.0'),
        report_item('yapf', '0.43.0',
                    ['platformdirs', 'tomli; python_version < "3.11"']),
        report_item('platformdirs', '4.14.9'),
        report_item('tomli', '2.0'),
        report_item('numpy', '2.4.6'),
        report_item('opencv-python', '5.1'),
        report_item('setuptools', '69.5.1'),
        report_item('mmdet', '3.3.0', ['mmengine', 'extra-dep; extra == "x"']),
        report_item('extra-dep', '1.0'),
    ])
    present = dict(PRESENT, addict=Version('1.0'))
    pins = select_pins(report, ['mmengine', 'mmdet[x]', 'setuptools<70'],
                       present, '3.12')
    # addict 1.0 meets the bare requirement; numpy and cv2 are there;
    # tomli is for Python < 3.11; setuptools comes from the folder.
    assert pins == [
        'extra-dep==1.0', 'mmdet==3.3.0', 'mmengine==0.10.7',
        'platformdirs==4.14.9', 'setuptools==69.5.1', 'yapf==0.43.0'
    ]
    with pytest.raises(ValueError, match="mmengine requires ftfy, which pip"):
        select_pins(
            dict(install=[report_item('mmengine', '0.10.7', ['ftfy'])]),
            ['mmengine'], {}, '3.12')


def test_requirements_of_this_repository():
    listed = package_requirements(str(REPO / 'setup.py'))
    names = {Requirement(r).name for r in listed}
    assert {'mmengine', 'mmsegmentation', 'mmdet', 'pytest'} <= names
    assert not names & {'torch', 'mmcv'}
    # The pins fall in setup.py's ranges.
    pins = {}
    for line in (REPO / 'tools' /
                 'gpu_constraints.txt').read_text().split('\n'):
        if line and not line.startswith('#'):
            requirement = Requirement(line)
            pins[requirement.name] = next(iter(requirement.specifier)).version
    for text in listed:
        requirement = Requirement(text)
        if requirement.name in pins:
            assert requirement.specifier.contains(pins[requirement.name])
    present = read_present(str(REPO / 'tools' / 'gpu_image_packages.txt'))
    assert present['numpy'] == Version('2.5.2') and 'torch' in present


def test_present_file_errors_name_the_line(tmp_path):
    path = tmp_path / 'present.txt'
    path.write_text('# the image\nnumpy==2.5.2\nscipy >= 1\n')
    with pytest.raises(ValueError, match=r'present.txt:3: expected NAME'):
        read_present(str(path))


@pytest.mark.skipif(
    not (REPO / '.whl').is_dir(), reason='no .whl (tools/gpu_wheels.sh)')
def test_downloaded_folder_resolves_for_the_gpu_image():
    assert gpu_wheels.main([
        'check',
        str(REPO / '.whl'), '--setup',
        str(REPO / 'setup.py'), '--present',
        str(REPO / 'tools' / 'gpu_image_packages.txt')
    ]) == 0
