"""The documentation (README.md and docs/en): a strict Sphinx build, every shell command shown run by a test or
copied from one, links that resolve, import paths that work, a README of at most 200 lines."""
import re
import subprocess
import sys
from pathlib import Path
from typing import Dict, List

import pytest

from conftest import ROOT

ROOT_PATH = Path(ROOT)
DOCS = ROOT_PATH / 'docs' / 'en'
DOC_FILES = [ROOT_PATH / 'README.md'] + sorted(DOCS.rglob('*.md'))
SPHINX_BUILD = 'python -m sphinx -W -n --keep-going -b html docs/en docs/en/_build/html'

# Shell commands of the docs that a test runs, each with the test that runs it (that tool with these options, on the
# generated data or tiny configs of the test) or, for the set-up commands, the CI script that runs them as shown.
SLURM_TEST = 'tests/test_engine/test_slurm.py::test_preempted_and_requeued_slurm_job_matches_an_uninterrupted_one'
RUN_BY: Dict[str, str] = {
    'bash tools/install.sh': '.ci/run',
    'bash tools/test.sh': '.ci/run',
    'python tools/demo.py': 'tests/test_configs/test_mmdet.py::test_demo_runs_end_to_end_and_writes_its_pictures',
    'python tools/train.py configs/mmdet/retinanet_poolformer_s12_1x.py':
        'tests/test_configs/test_mmdet.py::test_missing_coco_stops_at_once_with_a_pointer_to_the_demo',
    'bash tools/dist_train.sh configs/mmdet/retinanet_poolformer_s12_1x.py 8':
        'tests/test_configs/test_mmdet.py::test_dist_train_two_processes_on_cpu',
    'python tools/test.py configs/mmdet/retinanet_poolformer_s12_1x.py '
    'work_dirs/retinanet_poolformer_s12_1x/epoch_12.pth':
        'tests/test_configs/test_mmdet.py::test_retinanet_train_test_and_show',
    'python tools/train.py configs/mmdet/retinanet_poolformer_s12_1x.py --resume':
        'tests/test_configs/test_mmdet.py::test_sigkill_then_resume_loses_no_finished_epoch',
    'python tools/train.py configs/mmdet/retinanet_poolformer_s12_1x.py --amp':
        'tests/test_configs/test_mmdet.py::test_amp_training_has_finite_losses',
    'python tools/train.py configs/mmdet/retinanet_poolformer_s12_1x.py --compile':
        'tests/test_engine/test_compile.py::test_compiled_training_gives_the_eager_losses',
    'python tools/test.py configs/mmseg/upernet_caformer_s18_160k_ade20k.py '
    'work_dirs/upernet_caformer_s18_160k_ade20k/iter_160000.pth --tta':
        'tests/test_configs/test_upernet.py::test_tools_test_tta',
    'bash tools/gpu_check.sh':
        'tests/test_utils/test_gpu_check.py::test_gpu_check_says_what_it_found_and_stops_without_cuda',
    'python tools/get_flops.py configs/mmseg/upernet_caformer_s18_160k_ade20k.py':
        'tests/test_utils/test_complexity.py::test_get_flops_tool_on_a_config',
    'python tools/inference.py configs/mmdet/demo/retinanet_poolformer_s12_shapes.py work_dirs/demo/epoch_6.pth '
    'data/demo_shapes/val/val_00000.jpg data/demo_shapes/val/val_00001.jpg --out-dir out/':
        'tests/test_apis/test_inference.py::test_detector_pictures_and_predictions_through_the_tool',
    'python tools/export_onnx.py configs/mmdet/demo/retinanet_poolformer_s12_shapes.py work_dirs/demo/epoch_6.pth '
    '--out retinanet_shapes.onnx --dynamic --verify --image data/demo_shapes/val/val_00000.jpg':
        'tests/test_export/test_exporter.py::test_export_onnx_tool_with_verify',
    # docs/en/get_started.md (onedl-mim, where it is installed)
    'mim search mmmetaformer': 'tests/test_mim.py::test_mim_search_lists_the_model_index',
    'mim train onedl-mmdetection CONFIG': 'tests/test_mim.py::test_mim_train_runs_a_config_through_mmdets_tool',
    # docs/en/useful_tools.md
    'python tools/benchmark.py --modes train --device cpu':
        'tests/test_apis/test_benchmark.py::test_tool_prints_a_row',
    'python tools/vis_featmap.py IMAGE configs/mmseg/fpn_caformer_s18_40k_ade20k.py --save-path featmaps.png':
        'tests/test_visualization/test_activation_maps.py::test_feature_maps_of_a_segmentor_through_the_tool',
    'python tools/vis_cam.py IMAGE configs/mmpretrain/caformer_s18_in1k.py CHECKPOINT --save-path cam.png '
    '--method GradCAM++': 'tests/test_visualization/test_activation_maps.py::test_cam_tool_on_caformer',
    'python tools/convert_checkpoint.py poolformer_s12.pth.tar poolformer_s12_mm.pth':
        'tests/test_models/test_utils/test_checkpoints.py::test_convert_checkpoint_tool_writes_a_loadable_classifier',
    # docs/en/get_started.md and DEVELOPERS.md: the CUDA build of mmcv takes most of an hour on 2 cores and is not
    # run by the suite; these tests run each of its steps (architectures, toolkit, kernel check, --from, gpu_check)
    'MMMETAFORMER_CUDA_ARCH=9.0 bash tools/install.sh':
        'tests/test_utils/test_cuda_build.py::test_kernel_images_of_a_real_nvcc_build',
    'bash tools/install.sh --wheelhouse wheelhouse/py3.12-torch2.11.0-sm90 --python python3.12 --torch 2.11.0 '
    '--cuda-arch 9.0': 'tests/test_utils/test_cuda_build.py::test_wheelhouse_requirements_and_another_torch',
    'bash tools/install.sh --from wheelhouse/py3.12-torch2.11.0-sm90':
        'tests/test_utils/test_cuda_build.py::test_install_from_a_wheelhouse_installs_offline_and_keeps_torch',
    'bash tools/gpu_check.sh --wheels wheelhouse/py3.12-torch2.11.0-sm90':
        'tests/test_utils/test_cuda_build.py::test_gpu_check_installs_a_wheelhouse_then_stops_without_cuda',
    # docs/en/user_guides/clusters.md
    'GPUS=2 GPUS_PER_NODE=2 CPUS_PER_TASK=1 tools/slurm_train.sh PARTITION JOB_NAME CONFIG WORK_DIR '
    '[train.py options]': SLURM_TEST,
    'GPUS=2 GPUS_PER_NODE=2 CPUS_PER_TASK=1 tools/slurm_test.sh PARTITION JOB_NAME CONFIG CHECKPOINT '
    '[test.py options]': SLURM_TEST,
    'GPUS=2 GPUS_PER_NODE=2 CPUS_PER_TASK=1 sbatch --requeue -p PARTITION -n 2 -J JOB_NAME -o train.log '
    '--open-mode=append --wrap "tools/slurm_train.sh PARTITION JOB_NAME CONFIG WORK_DIR"':
        SLURM_TEST,
    # the GPU form of the same submission: its commands as a batch script (#SBATCH lines are comments here)
    'GPUS=8 GPUS_PER_NODE=8 CPUS_PER_TASK=5 tools/slurm_train.sh PARTITION retinanet CONFIG WORK_DIR': SLURM_TEST,
    'sbatch train.sbatch': SLURM_TEST,
    'scancel --signal=TERM JOBID': SLURM_TEST,
    'scontrol requeue JOBID': SLURM_TEST,
}

# Quick commands of the docs, run here exactly as shown.
RUN_HERE = [
    'python tools/model_zoo.py --check',
    'python -c "import mmmetaformer; print(mmmetaformer.config_file(\'mmdet/retinanet_poolformer_s12_1x.py\'))"',
]

NARRATION = [r'\bfirst round\b', r'\bsecond round\b', r'\bthird round\b', r'\bthis session\b',
             r'\bno GPU was (available|lent)\b', r'\bthe issue (asked|measured|found)\b', r'\bmeasured earlier here\b',
             r'\bin this session\b', r'\bfixed since\b', r'\bexercised here\b']


def shell_commands(path: Path) -> List[str]:
    """The commands of the ```bash / ```shell / ```sh blocks of a Markdown file: continuation lines joined, comments
    and blank lines left out, whitespace collapsed."""
    commands = []
    for block in re.findall(r'^```(?:bash|shell|sh|console)\n(.*?)^```', path.read_text(), re.S | re.M):
        text = re.sub(r'\\\n\s*', ' ', block)
        for line in text.splitlines():
            line = re.sub(r'\s+#.*$', '', line.strip().removeprefix('$ '))
            if line and not line.startswith('#'):
                commands.append(' '.join(line.split()))
    return commands


def source_of_the_tests() -> str:
    return '\n'.join(path.read_text() for path in sorted((ROOT_PATH / 'tests').rglob('*.py')))


def doc_commands() -> List[tuple]:
    return [(str(path.relative_to(ROOT_PATH)), command) for path in DOC_FILES for command in shell_commands(path)]


@pytest.mark.parametrize('doc, command', doc_commands())
def test_each_documented_command_is_run_by_a_test_or_copied_from_one(doc, command):
    if command in RUN_BY:
        runner = RUN_BY[command]
        path, _, test = runner.partition('::')
        source = (ROOT_PATH / path).read_text()
        assert (f'def {test}(' in source) if test else (command in source), f'{runner} does not run {command!r}'
        return
    assert command in RUN_HERE or command in ' '.join(source_of_the_tests().split()), (
        f'{doc}: the command {command!r} is neither run by a test (RUN_BY) nor copied from one')


@pytest.mark.e2e
@pytest.mark.parametrize('command', RUN_HERE)
def test_quick_documented_commands_run_as_shown(command):
    shown = command.replace('python ', f'"{sys.executable}" ', 1)
    result = subprocess.run(shown, shell=True, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]


def test_readme_is_short_and_links_to_the_docs_and_the_model_zoo():
    text = (ROOT_PATH / 'README.md').read_text()
    assert len(text.splitlines()) <= 200
    for target in ('configs/mmdet/README.md', 'configs/mmseg/README.md', 'configs/mmpretrain/README.md',
                   'docs/en/index.md', 'LICENSE'):
        assert f']({target})' in text, target
    assert '@inproceedings{yu2022metaformer' in text and '@article{yu2024metaformer' in text


@pytest.mark.parametrize('path', DOC_FILES, ids=lambda path: str(path.relative_to(ROOT_PATH)))
def test_relative_links_resolve(path):
    text = re.sub(r'^```.*?^```', '', path.read_text(), flags=re.S | re.M)
    for target in re.findall(r'\]\(([^)\s]+)\)', text):
        if re.match(r'[a-z]+://|#|mailto:', target):
            continue
        assert (path.parent / target.split('#')[0]).exists(), f'{path.name}: broken link {target}'


@pytest.mark.parametrize('path', DOC_FILES, ids=lambda path: str(path.relative_to(ROOT_PATH)))
def test_the_docs_describe_the_software_not_how_it_was_made(path):
    text = path.read_text()
    found = [pattern for pattern in NARRATION if re.search(pattern, text, re.I)]
    assert not found, f'{path.name}: {found}'


def test_documented_import_paths_work():
    """``from mmmetaformer... import a, b`` and ``import mmmetaformer...`` in the docs' Python blocks."""
    text = '\n'.join(path.read_text() for path in DOC_FILES)
    imports = set(re.findall(r'^from (mmmetaformer[\w.]*) import ([\w, ]+)$', text, re.M))
    assert ('mmmetaformer', 'PoolFormer') in imports
    script = '\n'.join(f'from {module} import {names}' for module, names in sorted(imports))
    result = subprocess.run([sys.executable, '-c', script], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]


@pytest.mark.e2e
@pytest.mark.slow
def test_sphinx_build_is_strict_and_clean(tmp_path):
    """The docs site builds with warnings as errors (-W) and every cross-reference resolved (-n)."""
    assert SPHINX_BUILD in (ROOT_PATH / 'README.md').read_text()
    pytest.importorskip('sphinx')
    pytest.importorskip('myst_parser')
    command = SPHINX_BUILD.replace('python', sys.executable, 1).replace('docs/en/_build/html', str(tmp_path / 'html'))
    result = subprocess.run(command.split(), cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-6000:]
    assert (tmp_path / 'html' / 'api.html').is_file()
