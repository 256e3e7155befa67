"""Every shell command in README.md and docs/*.md is run, or listed here with
the reason it cannot run and the test that covers it.

Convention: the lines of ```` ```bash ```` / ```` ```shell ```` blocks are
commands (``\\`` continues a line, ``  # ...`` is a comment); ```` ```text ````
blocks are output and ```` ```python ```` blocks code. docs/benchmarks.md is
left out: it records measured runs (GPU sizes included), each the command
that measured it, and helpers append to it; tests/test_benchmark.py runs
tools/benchmark.py's modes.

The fast tests check that every command is accounted for (run or
allowlisted) and that the allowlist names no command the docs no longer
hold. The slow test runs the commands in ONE interpreter (mmseg imported
once): ``python tools/X.py ARGS`` calls ``dinov2_seg.cli.X.main(ARGS)``, in
a sandbox folder laid out as the repository, with these substitutions:

================================  ==========================================
documented                        in the sandbox
================================  ==========================================
``configs/NAME.py``               the config with the sizes shrunk (crops,
                                  windows and pipeline scales to 70 pixels;
                                  loaders in the main process); EoMT (which
                                  trains the whole ViT), Meta's ViT-g
                                  Mask2Former and EoMT's model at the tiny
                                  sizes of tests/helpers/eomt.py and
                                  tests/test_meta_m2f.py
``data/ade/ADEChallengeData2016``  the shapes data (4 train images, 1 val)
                                  in the ADE20K layout
``checkpoints/NAME``              fabricated files in the official layouts
                                  (tests/helpers/fabricate.py): ViT-S/14
                                  backbones (with and without registers),
                                  ms heads, Meta's Mask2Former file, EoMT's
                                  file, Meta's Mask2Former config, Meta's
                                  DINOv3 ViT-S/16 file and a head of its
                                  DINOv3 train.py (``model_final.pth``); so
                                  tools/download_checkpoints.py keeps them
                                  and downloads nothing
``photos/``, ``more/*.jpg``,      three random images
``one.png``
``tools/train.py ...``            ``--cfg-options train_cfg.max_iters=2``
                                  (6 for EoMT, whose mask annealing must
                                  end before the last iteration; no
                                  validation; logging every iteration, a
                                  checkpoint at the end); Mask2Former's and
                                  EoMT's losses on
                                  256 sampled points
``iter_40000.pth``, ``iter_80.pth``  ``iter_2.pth`` (EoMT: ``iter_6.pth``)
``tools/test.py ... --tta``       ``--cfg-options tta_scale_count=2`` (the
                                  first 2 scales)
``tools/make_shapes_dataset.py``  ``--train 4 --val 2``
``tools/benchmark.py --size H W``  ``--size 70 84 --repeat 1 --warmup 0``
``tools/check_official_m2f_...``  ``--config`` the repository's (unshrunk)
                                  config
================================  ==========================================

The commands run in this order: the data and download tools, then
training, then the rest, each group in document order (README first, then
the pages by name).
"""
import json
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
from helpers.tools import REPO

DOCS = [REPO / 'README.md'] + sorted(
    p for p in (REPO / 'docs').glob('*.md') if p.name != 'benchmarks.md')

# Commands that cannot run here: the reason, and the test that covers them.
ALLOWLIST = {
    'make demo':
    'minutes of training; tests/test_demo.py runs it',
    'make test':
    'the suite itself',
    'make demo TORCH_SPEC="torch==2.6.0 --index-url '
    'https://download.pytorch.org/whl/cu124"':
    'needs the network and a GPU; tests/test_demo.py runs `make demo`',
    "pip install -e '.[export]'":
    'needs the network; .venv has the extras (tests/test_onnx_export.py)',
    "pip install -e '.[tensorboard]'":
    'needs the network; .venv has the extras (the TensorBoard command '
    'below is run)',
    'tensorboard --logdir work_dirs/ade20k_vits14_ms':
    'a server that runs until stopped; the event files it reads are '
    'written by the training command before it',
    'tools/dist_train.sh configs/ade20k_vits14_ms.py 8':
    '8 GPUs; tests/test_tools.py::test_distributed_two_processes runs '
    '--launcher pytorch with 2 CPU processes',
    'tools/dist_test.sh configs/ade20k_vits14_ms.py '
    'work_dirs/ade20k_vits14_ms/iter_40000.pth 8 --tta':
    '8 GPUs; tests/test_tools.py::test_distributed_two_processes',
    '.venv/bin/python -m pytest -m "not slow"':
    'the suite itself',
    'make lint':
    'the linters, run by .ci/run before the suite',
    'tools/dist_train.sh configs/dinov3/ade20k_vit7b16_eomt_fsdp.py 8':
    '8 GPUs with the 7B file; tests/test_sharded_training.py runs the FSDP '
    'switch with 2 CPU processes on a reduced 7B (EoMT too) and checks '
    'this config',
    'python tools/sweep.py configs/demo_shapes_vits14_linear.py --set '
    'optim_wrapper.optimizer.lr=0.001,0.01 --set '
    'model.decode_head.dropout_ratio=0,0.1 --seeds 0,1 --name shapes_lr '
    '--max-parallel 2':
    'eight training runs of minutes each; tests/test_sweep.py runs a 2 x 2 '
    'grid x 2 seeds sweep on a tiny model (the same command with '
    '--dry-run is run here)',
    'python tools/compare_runs.py work_dirs/sweeps/shapes_lr':
    'needs the sweep above; tests/test_sweep.py compares a real sweep and '
    'plain work dirs',
    'pre-commit install':
    'writes a git hook; .ci/run runs the same linters',
}

TOOL = re.compile(r'^python tools/(\w+)\.py(?: |$)')


def docs_commands() -> list:
    """(file name, command) for each command line of the docs' bash or
    shell blocks, continuations joined and comments dropped."""
    commands = []
    for path in DOCS:
        lang, pending = None, ''
        for line in path.read_text().splitlines():
            fence = re.match(r'^```(\w*)\s*$', line)
            if lang is None and fence:
                lang = fence.group(1)
                continue
            if lang is not None and line.startswith('```'):
                lang = None
                continue
            if lang not in ('bash', 'shell'):
                continue
            text = re.split(r'\s+#\s', line)[0].rstrip()
            if text.endswith('\\'):
                pending += text[:-1]
                continue
            text = ' '.join((pending + text).split())
            pending = ''
            if text and not text.startswith('#'):
                commands.append((path.name, text))
    return commands


def runnable(command: str) -> bool:
    match = TOOL.match(command)
    return bool(match) and (REPO / 'dinov2_seg' / 'cli' /
                            f'{match.group(1)}.py').is_file()


def test_every_docs_command_is_run_or_allowlisted():
    commands = docs_commands()
    assert len(commands) >= 20
    unknown = [(name, c) for name, c in commands
               if not runnable(c) and c not in ALLOWLIST]
    assert not unknown, (
        'commands neither run by tests/test_docs_commands.py (python '
        'tools/X.py) nor in its ALLOWLIST: ' + repr(unknown))


def test_allowlisted_commands_are_still_documented():
    documented = {c for _, c in docs_commands()}
    stale = sorted(set(ALLOWLIST) - documented)
    assert not stale, f'ALLOWLIST entries no longer in the docs: {stale}'
    for command, reason in ALLOWLIST.items():
        for test in re.findall(r'tests/(test_\w+\.py)', reason):
            assert (REPO / 'tests' / test).is_file(), (command, test)


def _slug(title: str) -> str:
    """GitHub's anchor for a heading."""
    title = re.sub(r'[^\w\- ]', '', title.strip().lower())
    return title.replace(' ', '-')


def test_links_between_the_pages_resolve():
    for path in DOCS:
        text = path.read_text()
        for target in re.findall(r'\]\(([^)\s]+)\)', text):
            if re.match(r'https?://', target):
                continue
            file, _, anchor = target.partition('#')
            linked = (path.parent / file).resolve() if file else path
            assert linked.exists(), f'{path.name}: {target}'
            if anchor and linked.suffix == '.md':
                headings = re.findall(r'^#+ (.+)$', linked.read_text(), re.M)
                assert anchor in {_slug(h) for h in headings}, \
                    f'{path.name}: {target}'


def test_readme_is_short_and_indexes_every_page():
    readme = (REPO / 'README.md').read_text()
    assert len(readme.splitlines()) <= 160
    for page in (REPO / 'docs').glob('*.md'):
        assert f'(docs/{page.name})' in readme, page.name


def test_documented_python_paths_import():
    """The imports the README has documented (today or before, as
    docs/development.md's history lists them) and the new homes of the
    moved modules import; the moved ones are gone."""
    import importlib
    import importlib.util
    history = (REPO / 'docs' / 'development.md').read_text()
    history = history[history.index('## History'):]
    for module in ('dinov2_seg.apis.inference', 'dinov2_seg.apis'):
        api = importlib.import_module(module)
        for name in ('init_segmentor', 'inference_segmentor',
                     'render_segmentation'):
            assert callable(getattr(api, name)), (module, name)
    importlib.import_module('dinov2_seg.models')
    importlib.import_module('dinov2_seg.datasets')
    assert importlib.util.find_spec('dinov2_seg.deployment') is not None
    rows = re.findall(r'^\| `(dinov2_seg[^|]+)\| (.+) \|$', history, re.M)
    assert len(rows) >= 7
    for old, new in rows:
        modules = re.findall(r'`(dinov2_seg(?:\.\w+)+)`', new)
        assert modules, new
        for module in modules:
            importlib.import_module(module)
        base = re.match(r'(dinov2_seg(?:\.\w+)+)', old).group(1)
        for name in [base] + [
                base.rsplit('.', 1)[0] + s
                for s in re.findall(r'`(\.\w+)`', old)
        ]:
            assert importlib.util.find_spec(name) is None, name


# ---------------------------------------------------------------------------
# Running the commands.

CROP = 70
SANDBOX_IMAGES = ('photos/a.jpg', 'photos/sub/b.jpg', 'more/c.jpg', 'one.png')

# One interpreter for every command: each tool's main as tools/X.py calls
# it, in the sandbox; a command that raises or returns a non-zero status
# is reported with its traceback and the others still run.
SCRIPT = r"""
import importlib, json, os, sys, time, traceback
import torch
from mmengine.utils import ManagerMixin
torch.set_num_threads(1)  # tiny tensors: one thread is faster
os.chdir(sys.argv[1])


def forget_instances(cls=ManagerMixin):
    # Each command starts without the previous one's visualizer, loggers and
    # message hub (mmengine keeps them per process).
    for sub in cls.__subclasses__():
        sub._instance_dict.clear()
        forget_instances(sub)


commands = json.loads(open(sys.argv[2]).read())
for index, argv in enumerate(commands):
    tool, args = argv[0], argv[1:]
    print(f'DOCS-COMMAND-START {index}', flush=True)
    start, cpu = time.perf_counter(), time.process_time()
    forget_instances()
    try:
        module = importlib.import_module(f'dinov2_seg.cli.{tool}')
        if tool == 'make_shapes_dataset':  # reads sys.argv
            sys.argv = [f'tools/{tool}.py', *args]
            status = module.main()
        else:
            status = module.main(args)
        if isinstance(status, int) and status != 0:
            raise SystemExit(f'exit status {status}')
        print(f'DOCS-COMMAND-OK {index}', flush=True)
        seconds = time.perf_counter() - start
        cpu = time.process_time() - cpu
        print(f'DOCS-COMMAND-SECONDS {index} {seconds:.1f} cpu {cpu:.1f}',
              flush=True)
    except BaseException:
        traceback.print_exc()
        print(f'DOCS-COMMAND-FAILED {index}', flush=True)
"""


def _scale(value, k):
    return tuple(v if v > 100000 else max(1, round(v * k)) for v in value)


def _shrink(node, k):
    """Pipeline scales and crops times ``k``, in place."""
    if isinstance(node, dict):
        if node.get('type') in (
                'Resize', 'RandomResize') and node.get('scale') is not None:
            node['scale'] = _scale(node['scale'], k)
        if node.get('type') == 'RandomCrop':
            node['crop_size'] = _scale(node['crop_size'], k)
        for value in node.values():
            _shrink(value, k)
    elif isinstance(node, (list, tuple)):
        for value in node:
            _shrink(value, k)


def _in_main_process(cfg):
    for loader in ('train_dataloader', 'val_dataloader', 'test_dataloader'):
        if cfg.get(loader):
            cfg[loader].num_workers = 0
            cfg[loader].persistent_workers = False


def _sandbox_config(name: str, path: Path) -> None:
    from mmengine.config import Config
    cfg = Config.fromfile(str(REPO / 'configs' / name))
    path.parent.mkdir(parents=True, exist_ok=True)
    if name == 'ade20k_vitg14_m2f_official.py':
        from test_meta_m2f import small_options
        cfg.merge_from_dict(small_options(150))
        for loader in ('val_dataloader', 'test_dataloader'):
            cfg[loader].dataset.pipeline = cfg.test_pipeline
    else:
        crop = cfg.model.test_cfg.crop_size[0]
        # The official EoMT and DINOv3 Mask2Former models need 64-pixel
        # windows (patch 16 grids; the adapter: sides multiple of 32).
        k = (64 if 'official' in name else CROP) / crop
        for key in ('train_pipeline', 'test_pipeline', 'tta_pipeline',
                    'train_dataloader', 'val_dataloader', 'test_dataloader'):
            if cfg.get(key):
                _shrink(cfg[key], k)
        test_cfg = cfg.model.test_cfg
        test_cfg.crop_size = _scale(test_cfg.crop_size, k)
        if test_cfg.get('stride'):
            test_cfg.stride = _scale(test_cfg.stride, k)
        if cfg.model.data_preprocessor.get('size'):
            cfg.model.data_preprocessor.size = _scale(
                cfg.model.data_preprocessor.size, k)
    if name.startswith('dinov3/') and 'eomt_official' in name:
        # test_dinov3_eomt_delta.py's reduced ViT-S/16 on the Meta file
        cfg.merge_from_dict(
            dict(
                model=dict(
                    backbone=dict(
                        arch=dict(
                            _delete_=True, embed_dim=384, depth=2,
                            num_heads=6)),
                    decode_head=dict(
                        embed_dims=384,
                        num_queries=6,
                        num_blocks=2,
                        mask_annealing=dict(
                            _delete_=True,
                            start_iters=[1, 2],
                            end_iters=[2, 3])))))
    elif name == 'dinov3/ade20k_vit7b16_m2f_official.py':
        # test_dinov3_m2f_official.py's reduced model; --tta at short sides
        # 64 and 96 (the shrunk ratios would give sides the adapter refuses)
        from test_dinov3_m2f_official import small_options
        cfg.merge_from_dict(small_options())
        resizes = cfg.tta_pipeline[1].transforms[0]
        resizes[:] = [
            dict(resizes[0], scale=(1_000_000, side)) for side in (64, 96)
        ]
    elif 'eomt_official' in name:  # helpers/eomt.py's build_official_tiny
        from helpers.eomt import TINY_REG
        cfg.merge_from_dict(
            dict(
                model=dict(
                    backbone=dict(
                        arch=dict(TINY_REG, _delete_=True), img_size=64),
                    decode_head=dict(
                        embed_dims=48,
                        num_queries=6,
                        num_blocks=2,
                        mask_annealing=dict(
                            _delete_=True,
                            start_iters=[1, 2],
                            end_iters=[2, 3])))))
    if name.endswith('_eomt.py'):  # the whole ViT trains: a tiny one
        from helpers.eomt import TINY_REG
        cfg.merge_from_dict(
            dict(
                model=dict(
                    backbone=dict(
                        arch=dict(TINY_REG, _delete_=True),
                        img_size=CROP,
                        init_cfg=None),
                    decode_head=dict(
                        embed_dims=TINY_REG['embed_dim'],
                        num_queries=6,
                        num_blocks=2,
                        mask_annealing=dict(
                            start_fractions=[1 / 6, 2 / 3],
                            end_fractions=[1 / 3, 5 / 6])))))
    head = cfg.model.get('decode_head', {})
    if head.get('train_cfg', {}).get('num_points'):  # Mask2Former, EoMT
        head.train_cfg.num_points = 256
    _in_main_process(cfg)
    cfg.dump(str(path))


def _fabricate_checkpoints(folder: Path) -> None:
    import torch
    from helpers.dinov3_meta import fabricate_meta_file
    from helpers.eomt import TINY_FILE
    from helpers.fabricate import (fabricate_eomt_state, fabricate_head_file,
                                   fabricate_meta_m2f_file,
                                   fabricate_official_file)
    from test_dinov3_heads import fabricate_meta_head
    from test_meta_m2f import OFFICIAL_CONFIG_TEXT, SMALL_FILE
    folder.mkdir()
    fabricate_official_file('vits14', folder / 'dinov2_vits14_pretrain.pth')
    fabricate_official_file('vits14_reg4',
                            folder / 'dinov2_vits14_reg4_pretrain.pth')
    fabricate_head_file(folder / 'dinov2_vits14_ade20k_ms_head.pth', 384, 4,
                        150)
    fabricate_head_file(folder / 'dinov2_vits14_voc2012_ms_head.pth', 384, 4,
                        21)
    fabricate_meta_m2f_file(
        str(folder / 'dinov2_vitg14_ade20k_m2f.pth'),
        **dict(SMALL_FILE, classes=150))
    (folder /
     'dinov2_vitg14_ade20k_m2f_config.py').write_text(OFFICIAL_CONFIG_TEXT)
    torch.save(
        fabricate_eomt_state(**TINY_FILE),
        folder / 'ade20k_semantic_eomt_large_512.bin')
    fabricate_meta_file(
        'vits16', folder / 'dinov3_vits16_pretrain_lvd1689m-08c60483.pth')
    fabricate_meta_head(folder / 'model_final.pth', 384, 150)
    # Meta's DINOv3 Mask2Former head file and the 7B's backbone file, at
    # the reduced size of test_dinov3_m2f_official.py, under their names.
    from test_dinov3_m2f_official import fabricate_small_files
    fabricate_small_files(folder)
    # EoMT's DINOv3 delta and its base, at the reduced size of
    # test_dinov3_eomt_delta.py under the released names.
    from test_dinov3_eomt_delta import DEPTH, fabricate_delta
    fabricate_meta_file(
        'vits16',
        folder / 'dinov3_vitl16_pretrain_lvd1689m-8aa4cbdd.pth',
        depth=DEPTH)
    torch.save(fabricate_delta(),
               folder / 'ade_semantic_eomt_large_512_dinov3.bin')


def _iterations(config: str) -> int:
    """Training iterations in the sandbox: EoMT's mask annealing must end
    before the last one."""
    return 6 if 'eomt' in config else 2


def _substituted(argv: list) -> list:
    tool, args = argv[0], argv[1:]
    config = next((a for a in args if a.startswith('configs/')), '')
    args = [
        re.sub(r'iter_(40000|80)\.pth$', f'iter_{_iterations(config)}.pth', a)
        for a in args
    ]
    if tool == 'train':
        iterations = _iterations(config)
        args += [
            '--cfg-options', f'train_cfg.max_iters={iterations}',
            f'train_cfg.val_begin={iterations + 1}',
            'default_hooks.logger.interval=1',
            f'default_hooks.checkpoint.interval={iterations}'
        ]
    elif tool == 'test' and '--tta' in args:
        args += ['--cfg-options', 'tta_scale_count=2']
    elif tool == 'make_shapes_dataset':
        args += ['--train', '4', '--val', '2']
    elif tool == 'benchmark':
        if '--size' in args:
            at = args.index('--size')
            args[at + 1:at + 3] = [str(CROP), '84']
        args += ['--repeat', '1', '--warmup', '0']
    elif tool == 'check_official_m2f_config':
        args += [
            '--config',
            str(REPO / 'configs' / 'ade20k_vitg14_m2f_official.py')
        ]
    return [tool, *args]


def _order(tool: str) -> int:
    return {
        'make_shapes_dataset': 0,
        'download_checkpoints': 0,
        'train': 1
    }.get(tool, 2)


@pytest.mark.slow
def test_docs_commands_run(tmp_path):
    import cv2
    import numpy as np

    from dinov2_seg.datasets import generate_shapes_dataset
    sandbox = tmp_path / 'repo'
    (sandbox / 'configs').mkdir(parents=True)
    documented = [(n, c) for n, c in docs_commands() if runnable(c)]
    argvs = []
    for _, command in documented:
        words = shlex.split(command)
        argvs.append([TOOL.match(command).group(1), *words[2:]])
        for word in words:
            config = re.fullmatch(r'configs/((?:dinov3/)?\w+\.py)', word)
            if config and not (sandbox / word).exists():
                _sandbox_config(config.group(1), sandbox / word)
    generate_shapes_dataset(
        str(sandbox / 'data' / 'ade' / 'ADEChallengeData2016'),
        num_train=4,
        num_val=1,
        size=(90, 125),
        seed=1)
    _fabricate_checkpoints(sandbox / 'checkpoints')
    rng = np.random.default_rng(0)
    for image in SANDBOX_IMAGES:
        (sandbox / image).parent.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(
            str(sandbox / image), rng.integers(0, 255, (60, 80, 3), np.uint8))
    order = sorted(range(len(argvs)), key=lambda i: _order(argvs[i][0]))
    # A command documented on several pages runs once.
    runs, commands = [], []
    for i in order:
        argv = _substituted(argvs[i])
        if argv not in runs:
            runs.append(argv)
            commands.append(documented[i])
    plan = tmp_path / 'commands.json'
    plan.write_text(json.dumps(runs))
    log = tmp_path / 'commands.log'
    with open(log, 'w') as out:
        # Under pytest.ini's 900 s; one interpreter for every command.
        try:
            returncode = subprocess.run(
                [sys.executable, '-c', SCRIPT, sandbox, plan],
                cwd=REPO,
                stdout=out,
                stderr=subprocess.STDOUT,
                timeout=840).returncode
        except subprocess.TimeoutExpired:
            returncode = 124
    output = log.read_text(errors='replace')
    failed = []
    for index, (name, command) in enumerate(commands):
        if f'DOCS-COMMAND-OK {index}\n' not in output:
            start = output.find(f'DOCS-COMMAND-START {index}\n')
            text = output[start:] if start >= 0 else '(not started)'
            end = text.find(f'DOCS-COMMAND-START {index + 1}\n')
            failed.append(f'{name}: {command}\n' + text[:end][-3000:])
    # Per command: wall and CPU seconds (pytest -s shows them).
    for index, wall, cpu in re.findall(
            r'DOCS-COMMAND-SECONDS (\d+) ([\d.]+) cpu ([\d.]+)', output):
        print(f'{wall:>7}s wall {cpu:>7}s cpu  {commands[int(index)][1]}')
    assert returncode == 0 and not failed, '\n\n'.join(failed
                                                       or [output[-6000:]])
    # What the commands wrote, where the docs say.
    assert list((sandbox / 'work_dirs' / 'predictions').rglob('*.png'))
    assert (sandbox / 'work_dirs' / 'ablation.png').stat().st_size > 0
    assert (sandbox / 'work_dirs' / 'vits14_voc_ms.onnx').is_file()
    assert list((sandbox / 'work_dirs' /
                 'ade20k_vits14_ms').rglob('events.out.tfevents.*'))


def test_readme_suite_sizes_match_the_suite():
    """The README's "about N tests" (the suite) and "about M tests" (the
    quick loop) stay within 10% of what pytest collects."""
    readme = (REPO / 'README.md').read_text()
    suite, quick = (int(n) for n in re.findall(r'about (\d+) tests', readme))
    out = subprocess.run([
        sys.executable, '-m', 'pytest', '--collect-only', '-q', '-m',
        'not slow', 'tests'
    ],
                         cwd=REPO,
                         capture_output=True,
                         text=True,
                         timeout=300).stdout
    # e.g. '433/503 tests collected (70 deselected)': quick loop / suite
    match = re.search(r'^(\d+)/(\d+) tests collected', out, re.M)
    assert match, out[-2000:]
    assert int(match.group(2)) == pytest.approx(suite, rel=0.1)
    assert int(match.group(1)) == pytest.approx(quick, rel=0.1)
