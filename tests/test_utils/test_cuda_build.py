"""The CUDA build steps of ``tools/install.sh`` (``mmmetaformer/utils/cuda_build.py``) and its option handling."""
import importlib.machinery
import os
import runpy
import shutil
import struct
import subprocess
import sys
import types
from pathlib import Path
from typing import Optional, Tuple

import pytest

from mmmetaformer.utils import cuda_build
from mmmetaformer.utils.stack import requirements, torchvision_for
from conftest import ROOT


def test_architecture_lists_parse_and_name_the_fix_for_a_typo():
    assert cuda_build.parse_arch_list('9.0') == ['9.0']
    assert cuda_build.parse_arch_list(' 8.0;9.0,8.6 9.0+PTX') == ['8.0', '9.0', '8.6', '9.0+PTX']
    assert cuda_build.sm_numbers(['8.0', '9.0+PTX', '9.0']) == [80, 90]
    with pytest.raises(cuda_build.CudaBuildError, match=r"'sm90' is not a compute capability.*such as 9\.0"):
        cuda_build.parse_arch_list('8.0;sm90')


def test_the_variable_chooses_the_architectures_before_the_gpus(monkeypatch):
    assert cuda_build.wanted_archs({'MMMETAFORMER_CUDA_ARCH': '8.0;9.0'}) == ['8.0', '9.0']
    monkeypatch.setattr(cuda_build, 'visible_gpu_archs', lambda: ['9.0'])
    assert cuda_build.wanted_archs({'MMMETAFORMER_CUDA_ARCH': ' '}) == ['9.0']
    monkeypatch.setattr(cuda_build, 'visible_gpu_archs', lambda: [])
    assert cuda_build.wanted_archs({}) == []


def fake_toolkit(root: Path, release: str, headers: bool = True) -> Path:
    """A folder with a bin/nvcc that reports ``release`` (and the runtime header when ``headers``)."""
    (root / 'bin').mkdir(parents=True)
    nvcc = root / 'bin' / 'nvcc'
    nvcc.write_text(f'#!/bin/sh\necho "Cuda compilation tools, release {release}, V{release}.1"\n')
    nvcc.chmod(0o755)
    (root / 'include').mkdir()
    for header in cuda_build.TOOLKIT_HEADERS if headers else cuda_build.TOOLKIT_HEADERS[:1]:
        (root / 'include' / header).write_text('')
    return root


def test_the_system_toolkit_must_match_torchs_cuda_release(tmp_path):
    old = fake_toolkit(tmp_path / 'cuda-12.4', '12.4')
    bare = fake_toolkit(tmp_path / 'bare', '13.0', headers=False)
    good = fake_toolkit(tmp_path / 'cuda-13.0', '13.0')
    said = []
    found = cuda_build.find_system_toolkit('13.0', [tmp_path / 'absent', old, bare, good], said.append)
    assert found == good
    assert said == [f'no CUDA compiler in {tmp_path / "absent"}',
                    f'{old} has CUDA 12.4, torch was built with CUDA 13.0: not used',
                    f"{bare} has nvcc 13.0 but not the headers torch's CUDA code includes (cublas_v2.h, "
                    f'cusparse.h, cusolverDn.h): not used',
                    f'using the system CUDA 13.0 toolkit in {good}']
    assert cuda_build.find_system_toolkit('13.0', [old], said.append) is None


def test_candidates_follow_cuda_home_then_nvcc_on_the_path(tmp_path):
    toolkit = fake_toolkit(tmp_path / 'cuda', '13.0')
    (tmp_path / 'links').mkdir()
    (tmp_path / 'links' / 'nvcc').symlink_to(toolkit / 'bin' / 'nvcc')
    candidates = cuda_build.system_toolkit_candidates(
        {'CUDA_HOME': str(tmp_path / 'home'), 'PATH': str(tmp_path / 'links')})
    assert candidates == [tmp_path / 'home', toolkit, Path('/usr/local/cuda')]


def registry_tree(root: Path) -> Path:
    """The files that the registry compiler packages and torch's CUDA runtime wheel install into nvidia/cu13."""
    for path in ('bin/nvcc', 'nvvm/bin/cicc', 'include/crt/host_config.h', 'include/cccl/thrust/version.h',
                 'include/cccl/cub/cub.cuh', 'include/cuda_runtime.h', 'include/cublas_v2.h',
                 'lib/libcudart.so.13', 'lib/libcublas.so.13'):
        (root / path).parent.mkdir(parents=True, exist_ok=True)
        (root / path).write_text(path)
    return root


def test_registry_packages_are_joined_into_a_cuda_home(tmp_path):
    tree = registry_tree(tmp_path / 'nvidia' / 'cu13')
    home = cuda_build.assemble_registry_toolkit(tree, tmp_path / 'cuda-13.0')
    assert (home / 'bin' / 'nvcc').read_text() == 'bin/nvcc'
    assert (home / 'nvvm' / 'bin' / 'cicc').exists()
    # thrust and cub where nvcc's default include path finds them, beside the runtime and cuBLAS headers
    assert (home / 'include' / 'thrust' / 'version.h').exists() and (home / 'include' / 'cub' / 'cub.cuh').exists()
    assert (home / 'include' / 'cublas_v2.h').exists() and (home / 'include' / 'crt' / 'host_config.h').exists()
    assert os.path.realpath(home / 'lib64' / 'libcudart.so') == str(tree / 'lib' / 'libcudart.so.13')
    assert cuda_build.assemble_registry_toolkit(tree, home) == home  # again: rebuilt in place

    (tree / 'nvvm' / 'bin' / 'cicc').unlink()
    with pytest.raises(cuda_build.CudaBuildError, match=r'lacks: nvvm/bin/cicc \(nvidia-nvvm\)'):
        cuda_build.assemble_registry_toolkit(tree, home)
    assert cuda_build.registry_requirements('13.0')[:2] == ['nvidia-cuda-nvcc==13.0.*', 'nvidia-nvvm==13.0.*']


def elf_with_section(name: bytes, payload: bytes) -> bytes:
    """A minimal 64-bit little-endian ELF file whose only sections are ``name`` and the section-name table."""
    names = b'\0' + name + b'\0.shstrtab\0'
    data_offset = 64
    names_offset = data_offset + len(payload)
    section_offset = (names_offset + len(names) + 7) // 8 * 8
    header = bytearray(64)
    header[:6] = b'\x7fELF\x02\x01'
    struct.pack_into('<Q', header, 0x28, section_offset)
    struct.pack_into('<HHH', header, 0x3A, 64, 3, 2)

    def section(name_offset, offset, size):
        entry = bytearray(64)
        struct.pack_into('<I', entry, 0, name_offset)
        struct.pack_into('<QQ', entry, 0x18, offset, size)
        return bytes(entry)

    body = bytes(header) + payload + names
    body += b'\0' * (section_offset - len(body))
    return body + bytes(64) + section(1, data_offset, len(payload)) + section(len(name) + 2, names_offset, len(names))


def fatbin(entries) -> bytes:
    """A fat binary container of (kind, sm) entries with 16-byte payloads."""
    body = b''
    for kind, sm in entries:
        entry = bytearray(64)
        struct.pack_into('<HHIQ', entry, 0, kind, 0x0101, 64, 16)
        struct.pack_into('<I', entry, 28, sm)
        body += bytes(entry) + bytes(16)
    return struct.pack('<IHHQ', 0xBA55ED50, 1, 16, len(body)) + body


def test_kernel_images_are_counted_by_architecture(tmp_path):
    library = tmp_path / '_ext.so'
    # two containers (one per compiled file), PTX entries not counted as kernels
    library.write_bytes(elf_with_section(b'.nv_fatbin', fatbin([(2, 90), (1, 90), (2, 80)]) + fatbin([(2, 90)])))
    assert cuda_build.fatbin_archs(library) == {80: 1, 90: 2}
    assert cuda_build.check_extension_archs(library, ['8.0', '9.0']) == (
        '_ext.so: sm_80 (1 kernel images), sm_90 (2 kernel images)')
    with pytest.raises(cuda_build.CudaBuildError, match=r'holds sm_80, sm_90; missing: sm_86\. Rebuild: '
                                                        r'MMMETAFORMER_CUDA_ARCH="8\.6" bash tools/install\.sh'):
        cuda_build.check_extension_archs(library, ['8.6'])
    library.write_bytes(elf_with_section(b'.text', b'\0' * 32))
    with pytest.raises(cuda_build.CudaBuildError, match='no CUDA kernels \\(a CPU-only build\\)'):
        cuda_build.check_extension_archs(library, ['9.0'])
    library.write_text('not a library')
    with pytest.raises(cuda_build.CudaBuildError, match='not a 64-bit little-endian ELF'):
        cuda_build.fatbin_archs(library)


@pytest.mark.skipif(not shutil.which('nvcc'), reason='needs nvcc (the CUDA compiler) on the PATH')
def test_kernel_images_of_a_real_nvcc_build(tmp_path):
    source = tmp_path / 'kernel.cu'
    source.write_text('__global__ void add(float* x) { x[threadIdx.x] += 1.f; }\n')
    library = tmp_path / 'kernel.so'
    subprocess.run(['nvcc', '-shared', '-Xcompiler', '-fPIC', '-gencode', 'arch=compute_80,code=sm_80',
                    '-gencode', 'arch=compute_90,code=sm_90', str(source), '-o', str(library)], check=True,
                   timeout=300)
    assert sorted(cuda_build.fatbin_archs(library)) == [80, 90]  # (with nvcc's device-link images)


def test_the_cpu_build_of_mmcv_is_recognised_as_one():
    library = cuda_build.mmcv_extension()
    assert library.name.startswith('_ext') and library.suffix == '.so'
    counts = cuda_build.fatbin_archs(library)
    if counts:  # an environment made with MMMETAFORMER_CUDA_ARCH: its kernels are listed
        assert cuda_build.check_extension_archs(library, [f'{sm // 10}.{sm % 10}' for sm in counts])
    else:
        with pytest.raises(cuda_build.CudaBuildError, match='CPU-only build'):
            cuda_build.check_extension_archs(library, ['9.0'])


def test_wheelhouse_requirements_and_another_torch():
    assert torchvision_for('2.11.0') == '0.26.0' and torchvision_for('2.13.0') == '0.28.0'
    assert requirements('torch', '2.11.0') == ['torch==2.11.0', 'torchvision==0.26.0']
    wheelhouse = requirements('wheelhouse')
    assert 'onedl-mmcv==2.3.6' in wheelhouse and 'timm==1.0.31' in wheelhouse and 'pytest' in wheelhouse
    assert not any(name.startswith(('torch', 'sphinx', 'ruff')) for name in wheelhouse)
    with pytest.raises(ValueError, match='only torch 2.x'):
        torchvision_for('3.0.0')


def script(*args: str, **environ: str) -> subprocess.CompletedProcess:
    """``tools/install.sh`` with ``args``; its environment is this test's .venv unless said otherwise."""
    env = {**os.environ, 'MMMETAFORMER_VENV': str(Path(sys.executable).parent.parent), **environ}
    return subprocess.run(['bash', 'tools/install.sh', *args], cwd=ROOT, capture_output=True, text=True, env=env,
                          timeout=600)  # --from resolves offline and imports the whole stack several times


def test_install_options_are_checked_before_anything_is_installed(tmp_path):
    usage = script('--help')
    assert usage.returncode == 0 and '--wheelhouse DIR [--python PYTHON] [--torch VERSION]' in usage.stdout
    assert 'MMMETAFORMER_CUDA_ARCH="8.0;9.0" bash tools/install.sh' in usage.stdout

    cases = [
        (('--cuda-arch', '9.0'), {}, '--python, --torch and --cuda-arch describe the target of --wheelhouse DIR'),
        (('--wheelhouse', 'a', '--from', 'b'), {}, '--wheelhouse and --from are two separate steps'),
        (('--fast',), {}, "unknown argument '--fast'"),
        (('--wheelhouse',), {}, '--wheelhouse needs a value'),
        (('--from', str(tmp_path / 'absent')), {}, 'is not a folder (make one with: bash tools/install.sh '
                                                   '--wheelhouse DIR)'),
        (('--from', str(tmp_path)), {}, 'has no onedl_mmcv wheel: it is not a wheelhouse'),
        ((), {'MMMETAFORMER_CUDA_ARCH': 'hopper'}, "'hopper' is not a compute capability"),
        (('--wheelhouse', str(tmp_path / 'w'), '--cuda-arch', '9'), {}, "'9' is not a compute capability"),
    ]
    for args, environ, message in cases:
        result = script(*args, **environ)
        assert result.returncode != 0, (args, result.stdout)
        assert message in result.stderr, (args, result.stderr)
    assert not (tmp_path / 'w').exists()


def test_a_second_install_on_a_ready_environment_only_checks():
    result = script()
    assert result.returncode == 0, result.stderr
    assert 'environment already complete: nothing to do' in result.stdout


def cached_mmcv_wheel() -> Path:
    """The onedl-mmcv wheel that tools/install.sh built for this environment and keeps in its cache."""
    import torch
    cache = Path(os.environ.get('MMMETAFORMER_CACHE', Path.home() / '.cache' / 'mmmetaformer'))
    key = f'cp{sys.version_info[0]}{sys.version_info[1]}-torch{torch.__version__.split("+")[0]}'
    found = sorted(cache.glob(f'mmcv/{key}-*/onedl_mmcv-*.whl'))
    if not found:
        pytest.skip(f'no mmcv wheel of this environment in {cache}/mmcv (it was not installed by tools/install.sh)')
    return found[0]


def test_install_from_a_wheelhouse_installs_offline_and_keeps_torch(tmp_path):
    """``--from`` on a complete environment: nothing to fetch (no index), torch kept, the stack checked; the
    wheelhouse here holds the environment's own mmcv wheel."""
    import torch
    shutil.copy(cached_mmcv_wheel(), tmp_path)
    result = script('--from', str(tmp_path), PIP_INDEX_URL='http://127.0.0.1:9/none')
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert f'and mmmetaformer from {tmp_path} (no package index), keeping torch {torch.__version__}' in result.stdout
    assert 'mmcv 2.3.6, mmengine' in result.stdout and result.stdout.rstrip().endswith('[install] done')


def test_gpu_check_installs_a_wheelhouse_then_stops_without_cuda(tmp_path):
    import torch
    if torch.cuda.is_available():
        pytest.skip('with a GPU the script goes on to the GPU suite (tests/gpu)')
    wheels = tmp_path / 'wheels'
    wheels.mkdir()
    shutil.copy(cached_mmcv_wheel(), wheels)
    log = tmp_path / 'gpu_check.log'
    result = subprocess.run(['bash', 'tools/gpu_check.sh', '--wheels', str(wheels), '--log', str(log)], cwd=ROOT,
                            capture_output=True, text=True, timeout=300,
                            env={**os.environ, 'PIP_INDEX_URL': 'http://127.0.0.1:9/none'})
    text = log.read_text()
    assert result.returncode == 1, text[-3000:]
    assert f'installing the wheelhouse {wheels}: bash tools/install.sh --from {wheels}' in text
    assert '[install] done' in text and 'sees no CUDA GPU; nothing to check here' in text


def test_empty_entries_of_an_architecture_list_are_skipped():
    assert cuda_build.parse_arch_list('8.0;9.0;') == ['8.0', '9.0']
    assert cuda_build.parse_arch_list('') == []


def test_the_visible_gpus_give_each_architecture_once_in_order(monkeypatch):
    """Without CUDA there are none; with several GPUs each compute capability is listed once, lowest first (the
    queries of torch.cuda are faked: no GPU code runs)."""
    import torch
    monkeypatch.setattr(torch.cuda, 'is_available', lambda: False)
    assert cuda_build.visible_gpu_archs() == []
    capabilities = [(9, 0), (8, 6), (9, 0)]
    monkeypatch.setattr(torch.cuda, 'is_available', lambda: True)
    monkeypatch.setattr(torch.cuda, 'device_count', lambda: len(capabilities))
    monkeypatch.setattr(torch.cuda, 'get_device_capability', lambda index: capabilities[index])
    assert cuda_build.visible_gpu_archs() == ['8.6', '9.0']


def test_an_nvcc_that_cannot_run_or_says_no_release_has_none(tmp_path):
    toolkit = fake_toolkit(tmp_path / 'cuda', '13.0')
    assert cuda_build.nvcc_release(toolkit) == '13.0'
    (toolkit / 'bin' / 'nvcc').chmod(0o644)  # not executable: the start fails with an OSError
    assert cuda_build.nvcc_release(toolkit) is None
    (toolkit / 'bin' / 'nvcc').write_text('#!/bin/sh\necho "nvcc: NVIDIA (R) Cuda compiler driver"\n')
    (toolkit / 'bin' / 'nvcc').chmod(0o755)
    assert cuda_build.nvcc_release(toolkit) is None


def test_registry_packages_without_the_cuda_runtime_library_name_it(tmp_path):
    tree = registry_tree(tmp_path / 'nvidia' / 'cu13')
    (tree / 'lib' / 'libcudart.so.13').unlink()
    with pytest.raises(cuda_build.CudaBuildError, match=r'lacks: lib/libcudart\.so\.\* \(nvidia-cuda-runtime\)\. '
                                                        r'Reinstall: pip install --force-reinstall nvidia-cuda-nvcc'):
        cuda_build.assemble_registry_toolkit(tree, tmp_path / 'cuda-13.0')
    assert not (tmp_path / 'cuda-13.0').exists()


def test_padding_before_a_fat_binary_container_is_passed_over(tmp_path):
    library = tmp_path / '_ext.so'
    library.write_bytes(elf_with_section(b'.nv_fatbin', bytes(16) + fatbin([(2, 90)]) + bytes(8) + fatbin([(2, 80)])))
    assert cuda_build.fatbin_archs(library) == {80: 1, 90: 1}


def fake_package(monkeypatch, name: str, folder: Optional[Path]) -> None:
    """``importlib.util.find_spec(name)`` answers a package in ``folder`` (None: the package is not installed)."""
    module = None
    if folder is not None:
        module = types.ModuleType(name)
        module.__spec__ = importlib.machinery.ModuleSpec(name, None, is_package=True)
        module.__spec__.submodule_search_locations = [str(folder)]
    monkeypatch.setitem(sys.modules, name, module)


def fake_torch_cuda(monkeypatch, release: Optional[str]) -> None:
    """torch reports being built with CUDA ``release`` (None: a CPU build of torch)."""
    import torch
    monkeypatch.setattr(torch.version, 'cuda', release)


def test_mmcv_without_its_compiled_ops_or_not_installed_is_named(tmp_path, monkeypatch):
    (tmp_path / 'mmcv').mkdir()
    fake_package(monkeypatch, 'mmcv', tmp_path / 'mmcv')
    with pytest.raises(cuda_build.CudaBuildError, match=r'mmcv has no compiled ops \(mmcv/_ext\*\.so\): it was '
                                                        r'installed without MMCV_WITH_OPS=1'):
        cuda_build.mmcv_extension()
    (tmp_path / 'mmcv' / '_ext.cpython-311-x86_64-linux-gnu.so').write_bytes(b'')
    assert cuda_build.mmcv_extension() == tmp_path / 'mmcv' / '_ext.cpython-311-x86_64-linux-gnu.so'
    fake_package(monkeypatch, 'mmcv', None)
    with pytest.raises(cuda_build.CudaBuildError, match='^mmcv is not installed$'):
        cuda_build.mmcv_extension()


def test_the_nvidia_tree_is_the_one_of_torchs_cuda_major_release(tmp_path, monkeypatch):
    fake_torch_cuda(monkeypatch, '13.0')
    (tmp_path / 'nvidia' / 'cu12').mkdir(parents=True)
    fake_package(monkeypatch, 'nvidia', tmp_path / 'nvidia')
    with pytest.raises(cuda_build.CudaBuildError, match=r'no nvidia/cu13 folder in this environment: torch was not '
                                                        r'installed from its CUDA wheels.*CUDA_HOME to a CUDA 13\.0 '
                                                        r'toolkit'):
        cuda_build._nvidia_tree()
    (tmp_path / 'nvidia' / 'cu13').mkdir()
    assert cuda_build._nvidia_tree() == tmp_path / 'nvidia' / 'cu13'
    fake_package(monkeypatch, 'nvidia', None)
    with pytest.raises(cuda_build.CudaBuildError, match='no nvidia/cu13 folder'):
        cuda_build._nvidia_tree()


def build_step(capsys, *argv: str) -> Tuple[int, str, str]:
    """``python mmmetaformer/utils/cuda_build.py ARGV`` in this process: (exit status, stdout, stderr)."""
    status = cuda_build.main(list(argv))
    printed = capsys.readouterr()
    return status, printed.out, printed.err


def test_the_archs_command_prints_the_variables_list_or_the_visible_gpus(monkeypatch, capsys):
    import torch
    monkeypatch.setenv(cuda_build.ARCH_VARIABLE, '9.0, 8.0')
    assert build_step(capsys, 'archs') == (0, '9.0;8.0\n', '')
    monkeypatch.setenv(cuda_build.ARCH_VARIABLE, '9')
    status, out, err = build_step(capsys, 'archs')
    assert (status, out) == (2, '') and err.startswith("[install] ERROR: MMMETAFORMER_CUDA_ARCH='9': '9' is not a")
    monkeypatch.delenv(cuda_build.ARCH_VARIABLE)
    monkeypatch.setattr(torch.cuda, 'is_available', lambda: False)
    assert build_step(capsys, 'archs') == (0, '\n', '')  # the CPU build


def test_the_torch_cuda_command_prints_the_release_or_refuses_a_cpu_torch(monkeypatch, capsys):
    import torch
    fake_torch_cuda(monkeypatch, '13.0.2')
    assert build_step(capsys, 'torch-cuda') == (0, '13.0\n', '')
    fake_torch_cuda(monkeypatch, None)
    assert build_step(capsys, 'torch-cuda') == (
        2, '', f'[install] ERROR: torch {torch.__version__} was built without CUDA: install a CUDA build of torch '
               '(tools/install.sh installs the pinned one) to build CUDA ops\n')


def test_the_system_toolkit_command_prints_the_matching_cuda_home(tmp_path, monkeypatch, capsys):
    toolkit = fake_toolkit(tmp_path / 'cuda-13.0', '13.0')
    fake_torch_cuda(monkeypatch, '13.0')
    monkeypatch.setenv('CUDA_HOME', str(toolkit))
    monkeypatch.delenv(cuda_build.TOOLKIT_VARIABLE, raising=False)
    assert build_step(capsys, 'system-toolkit') == (
        0, f'{toolkit}\n', f'[install] using the system CUDA 13.0 toolkit in {toolkit}\n')
    monkeypatch.setenv(cuda_build.TOOLKIT_VARIABLE, 'system')
    assert build_step(capsys, 'system-toolkit')[:2] == (0, f'{toolkit}\n')


def test_the_system_toolkit_command_without_a_match_exits_1_or_2_as_the_variable_says(tmp_path, monkeypatch, capsys):
    """No toolkit of torch's release (10.2, which neither the fake toolkit nor a machine's /usr/local/cuda has):
    exit 1 (install.sh goes on to the registry compiler), or 2 with an error when the system one was demanded."""
    toolkit = fake_toolkit(tmp_path / 'cuda-13.0', '13.0')
    fake_torch_cuda(monkeypatch, '10.2')
    monkeypatch.setenv('CUDA_HOME', str(toolkit))
    monkeypatch.delenv('CUDA_PATH', raising=False)
    monkeypatch.setenv('PATH', str(tmp_path / 'no-nvcc-here'))
    monkeypatch.setenv(cuda_build.TOOLKIT_VARIABLE, 'auto')
    status, out, err = build_step(capsys, 'system-toolkit')
    assert (status, out) == (1, '')
    assert err.startswith(f'[install] {toolkit} has CUDA 13.0, torch was built with CUDA 10.2: not used\n')
    monkeypatch.setenv(cuda_build.TOOLKIT_VARIABLE, 'system')
    status, out, err = build_step(capsys, 'system-toolkit')
    assert (status, out) == (2, '')
    assert err.endswith('[install] ERROR: MMMETAFORMER_CUDA_TOOLKIT=system, but no system CUDA 10.2 toolkit was '
                        'found (above): set CUDA_HOME to one, or unset MMMETAFORMER_CUDA_TOOLKIT\n')
    monkeypatch.setenv(cuda_build.TOOLKIT_VARIABLE, 'registry')
    assert build_step(capsys, 'system-toolkit') == (
        1, '', '[install] MMMETAFORMER_CUDA_TOOLKIT=registry: the system CUDA toolkit is not looked for\n')
    monkeypatch.setenv(cuda_build.TOOLKIT_VARIABLE, 'conda')
    assert build_step(capsys, 'system-toolkit') == (
        2, '', "[install] ERROR: MMMETAFORMER_CUDA_TOOLKIT='conda': choose one of auto, system, registry\n")


def test_the_registry_commands_list_the_packages_and_assemble_a_cuda_home(tmp_path, monkeypatch, capsys):
    fake_torch_cuda(monkeypatch, '13.0')
    status, out, _ = build_step(capsys, 'registry-requirements')
    assert status == 0 and out.splitlines() == [f'{name}==13.0.*' for name in cuda_build.REGISTRY_PACKAGES]
    tree = registry_tree(tmp_path / 'nvidia' / 'cu13')
    fake_package(monkeypatch, 'nvidia', tmp_path / 'nvidia')
    assert build_step(capsys, 'assemble', str(tmp_path / 'home')) == (0, f'{tmp_path / "home"}\n', '')
    assert (tmp_path / 'home' / 'bin' / 'nvcc').read_text() == 'bin/nvcc'
    (tree / 'bin' / 'nvcc').unlink()
    status, out, err = build_step(capsys, 'assemble', str(tmp_path / 'home'))
    assert (status, out) == (2, '') and 'lacks: bin/nvcc (nvidia-cuda-nvcc)' in err


def test_the_check_archs_command_reads_the_kernels_of_mmcvs_ops(tmp_path, monkeypatch, capsys):
    (tmp_path / 'mmcv').mkdir()
    (tmp_path / 'mmcv' / '_ext.so').write_bytes(elf_with_section(b'.nv_fatbin', fatbin([(2, 90)])))
    fake_package(monkeypatch, 'mmcv', tmp_path / 'mmcv')
    assert build_step(capsys, 'check-archs', '9.0') == (0, '_ext.so: sm_90 (1 kernel images)\n', '')
    assert build_step(capsys, 'check-archs', '8.0;9.0') == (
        2, '', '[install] ERROR: _ext.so holds sm_90; missing: sm_80. Rebuild: MMMETAFORMER_CUDA_ARCH="8.0;9.0" bash '
               'tools/install.sh\n')


def test_the_module_runs_as_a_script(monkeypatch, capsys):
    """``python mmmetaformer/utils/cuda_build.py archs`` (as tools/install.sh runs it) exits with main's status."""
    monkeypatch.setenv(cuda_build.ARCH_VARIABLE, '8.6')
    monkeypatch.setattr(sys, 'argv', [cuda_build.__file__, 'archs'])
    with pytest.raises(SystemExit) as stop:
        runpy.run_path(cuda_build.__file__, run_name='__main__')
    assert stop.value.code == 0 and capsys.readouterr().out == '8.6\n'
