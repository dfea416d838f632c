"""What ``tools/install.sh`` needs to build mmcv's CUDA ops: the architectures, a CUDA toolkit, and the checks.

mmcv (``onedl-mmcv``) is published as source only; its CUDA ops are compiled by nvcc against torch. This module
decides for which GPU architectures (``MMMETAFORMER_CUDA_ARCH``, else the GPUs torch sees, else none: the CPU build),
finds a CUDA toolkit whose release matches torch's CUDA (``CUDA_HOME``, ``nvcc`` on ``PATH``, ``/usr/local/cuda``)
or assembles one from NVIDIA's registry packages (``nvidia-cuda-nvcc``, ``nvidia-nvvm``, ``nvidia-cuda-crt``,
``nvidia-cuda-cccl``, installed into the same ``nvidia/cuXX`` tree as torch's CUDA libraries), and afterwards checks
that the built extension holds machine code for each architecture (the ``.nv_fatbin`` section of the shared library)
and, on a GPU, that ``nms`` and ``RoIAlign`` agree with the CPU.

Like :mod:`mmmetaformer.utils.stack`, it imports nothing from mmmetaformer and runs as a script
(``python mmmetaformer/utils/cuda_build.py COMMAND``) before anything is installed; torch is imported only by the
commands that need it.
"""
import argparse
import os
import re
import shutil
import struct
import subprocess
import sys
import warnings
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Sequence

ARCH_VARIABLE = 'MMMETAFORMER_CUDA_ARCH'
TOOLKIT_VARIABLE = 'MMMETAFORMER_CUDA_TOOLKIT'
TOOLKIT_CHOICES = ('auto', 'system', 'registry')
# The registry packages that make a CUDA compiler, by what they bring (torch's own CUDA wheels bring the runtime,
# cuBLAS, cuSPARSE and cuSOLVER headers and libraries into the same tree).
REGISTRY_PACKAGES = ('nvidia-cuda-nvcc', 'nvidia-nvvm', 'nvidia-cuda-crt', 'nvidia-cuda-cccl', 'nvidia-cuda-runtime')
# What torch's CUDA headers include (ATen/cuda/CUDAContextLight.h): a toolkit without them cannot build mmcv.
TOOLKIT_HEADERS = ('cuda_runtime.h', 'cublas_v2.h', 'cusparse.h', 'cusolverDn.h')
_ARCH_PATTERN = re.compile(r'^(\d+)\.(\d+)(\+PTX)?$')
_FATBIN_MAGIC = 0xBA55ED50
_FATBIN_CUBIN = 2  # entry kind of compiled machine code (1 is PTX)


class CudaBuildError(RuntimeError):
    """A CUDA build cannot go on; the message says what to do."""


def _import_torch():
    """torch, without the warning it prints in an environment that has no numpy (a wheelhouse's build
    environment holds torch alone)."""
    with warnings.catch_warnings():
        warnings.filterwarnings('ignore', message='Failed to initialize NumPy')
        import torch
    return torch


def parse_arch_list(text: str) -> List[str]:
    """``'8.0;9.0'`` (also separated by commas or spaces, ``+PTX`` allowed) -> ``['8.0', '9.0']``.

    Raises:
        CudaBuildError: an entry is not a compute capability such as ``9.0``.
    """
    archs = []
    for entry in re.split(r'[;,\s]+', text.strip()):
        if not entry:
            continue
        if not _ARCH_PATTERN.match(entry):
            raise CudaBuildError(
                f'{ARCH_VARIABLE}={text!r}: {entry!r} is not a compute capability. Give major.minor values such as '
                f'9.0 (H100/H200), 8.0 (A100), 8.6 (RTX 30xx) or a list such as "8.0;9.0".')
        if entry not in archs:
            archs.append(entry)
    return archs


def sm_numbers(archs: Iterable[str]) -> List[int]:
    """``['8.0', '9.0+PTX']`` -> ``[80, 90]``: the numbers nvcc writes into the fat binary."""
    return sorted({int(m.group(1)) * 10 + int(m.group(2)) for m in map(_ARCH_PATTERN.match, archs)})


def visible_gpu_archs() -> List[str]:
    """The compute capabilities of the GPUs torch sees (empty without CUDA)."""
    torch = _import_torch()
    if not torch.cuda.is_available():
        return []
    capabilities = {torch.cuda.get_device_capability(index) for index in range(torch.cuda.device_count())}
    return [f'{major}.{minor}' for major, minor in sorted(capabilities)]


def wanted_archs(environ: Optional[Dict[str, str]] = None) -> List[str]:
    """The architectures to build for: ``MMMETAFORMER_CUDA_ARCH`` if set, else the visible GPUs', else none."""
    environ = os.environ if environ is None else environ
    if environ.get(ARCH_VARIABLE, '').strip():
        return parse_arch_list(environ[ARCH_VARIABLE])
    return visible_gpu_archs()


def nvcc_release(cuda_home: Path) -> Optional[str]:
    """The release (``'13.0'``) of ``cuda_home/bin/nvcc``, or None when there is no working nvcc there."""
    nvcc = Path(cuda_home) / 'bin' / 'nvcc'
    if not nvcc.is_file():
        return None
    try:
        output = subprocess.run([str(nvcc), '--version'], capture_output=True, text=True, timeout=60).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    match = re.search(r'release (\d+\.\d+)', output)
    return match.group(1) if match else None


def system_toolkit_candidates(environ: Optional[Dict[str, str]] = None) -> List[Path]:
    """Where a system CUDA toolkit may be: ``CUDA_HOME``, ``CUDA_PATH``, the folder above ``nvcc`` on ``PATH``
    (links resolved), ``/usr/local/cuda``; each once, in this order."""
    environ = os.environ if environ is None else environ
    candidates = [environ.get('CUDA_HOME'), environ.get('CUDA_PATH')]
    nvcc = shutil.which('nvcc', path=environ.get('PATH'))
    if nvcc:
        candidates.append(str(Path(nvcc).resolve().parent.parent))
    candidates.append('/usr/local/cuda')
    unique: List[Path] = []
    for candidate in candidates:
        if candidate and Path(candidate) not in unique:
            unique.append(Path(candidate))
    return unique


def find_system_toolkit(torch_cuda: str, candidates: Sequence[Path], log=print) -> Optional[Path]:
    """The first candidate with ``bin/nvcc`` of release ``torch_cuda`` and :data:`TOOLKIT_HEADERS`, or None.

    Each candidate passed over is logged with the reason, so that a user sees why the system toolkit was not used.
    """
    for candidate in candidates:
        release = nvcc_release(candidate)
        if release is None:
            log(f'no CUDA compiler in {candidate}')
        elif release != torch_cuda:
            log(f'{candidate} has CUDA {release}, torch was built with CUDA {torch_cuda}: not used')
        elif any(not (candidate / 'include' / header).is_file() for header in TOOLKIT_HEADERS):
            missing = [header for header in TOOLKIT_HEADERS if not (candidate / 'include' / header).is_file()]
            log(f'{candidate} has nvcc {release} but not the headers torch\'s CUDA code includes '
                f'({", ".join(missing)}): not used')
        else:
            log(f'using the system CUDA {release} toolkit in {candidate}')
            return candidate
    return None


def registry_requirements(torch_cuda: str) -> List[str]:
    """The pip requirements of a registry CUDA compiler matching torch's CUDA release (``'13.0'`` -> ``13.0.*``)."""
    return [f'{name}=={torch_cuda}.*' for name in REGISTRY_PACKAGES]


def _link_contents(source: Path, target: Path) -> None:
    """Link every entry of ``source`` into ``target`` (an entry already there wins)."""
    for entry in sorted(source.iterdir()):
        link = target / entry.name
        if not link.exists() and not link.is_symlink():
            link.symlink_to(entry)


def assemble_registry_toolkit(nvidia_tree: Path, destination: Path) -> Path:
    """Join the registry packages installed in ``nvidia_tree`` (``site-packages/nvidia/cuXX``) into a ``CUDA_HOME``.

    The layout nvcc and torch's extension builder expect: ``bin`` and ``nvvm`` as installed, ``include`` with the
    contents of ``include/cccl`` (thrust, cub, libcu++) also at its top level, and ``lib64`` with the libraries plus
    the unversioned ``libcudart.so`` the linker asks for.

    Raises:
        CudaBuildError: a part is missing (names the package that brings it).
    """
    nvidia_tree = Path(nvidia_tree)
    needed = {'bin/nvcc': 'nvidia-cuda-nvcc', 'nvvm/bin/cicc': 'nvidia-nvvm',
              'include/crt/host_config.h': 'nvidia-cuda-crt', 'include/cccl/thrust/version.h': 'nvidia-cuda-cccl',
              'include/cuda_runtime.h': 'nvidia-cuda-runtime'}
    missing = [f'{path} ({package})' for path, package in needed.items() if not (nvidia_tree / path).exists()]
    runtime = sorted((nvidia_tree / 'lib').glob('libcudart.so.*'))
    if not runtime:
        missing.append('lib/libcudart.so.* (nvidia-cuda-runtime)')
    if missing:
        raise CudaBuildError(f'the registry CUDA compiler in {nvidia_tree} lacks: {", ".join(missing)}. '
                             f'Reinstall: pip install --force-reinstall ' + ' '.join(REGISTRY_PACKAGES))
    if destination.exists():
        shutil.rmtree(destination)
    (destination / 'include').mkdir(parents=True)
    (destination / 'lib64').mkdir()
    for name in ('bin', 'nvvm'):
        (destination / name).symlink_to(nvidia_tree / name)
    _link_contents(nvidia_tree / 'include', destination / 'include')
    _link_contents(nvidia_tree / 'include' / 'cccl', destination / 'include')
    _link_contents(nvidia_tree / 'lib', destination / 'lib64')
    if not (destination / 'lib64' / 'libcudart.so').exists():
        (destination / 'lib64' / 'libcudart.so').symlink_to(runtime[0])
    return destination


def _section(data: bytes, name: bytes) -> Optional[bytes]:
    """The bytes of section ``name`` of a 64-bit little-endian ELF file, or None."""
    if data[:4] != b'\x7fELF' or data[4] != 2 or data[5] != 1:
        raise CudaBuildError('not a 64-bit little-endian ELF shared library')
    section_offset, = struct.unpack_from('<Q', data, 0x28)
    entry_size, count, names_index = struct.unpack_from('<HHH', data, 0x3A)

    def header(index: int):  # (name offset, file offset, size)
        base = section_offset + index * entry_size
        name_offset, = struct.unpack_from('<I', data, base)
        offset, size = struct.unpack_from('<QQ', data, base + 0x18)
        return name_offset, offset, size

    _, names_offset, _ = header(names_index)
    for index in range(count):
        name_offset, offset, size = header(index)
        start = names_offset + name_offset
        if data[start:data.index(b'\0', start)] == name:
            return data[offset:offset + size]
    return None


def fatbin_archs(library: Path) -> Dict[int, int]:
    """``{sm number: count of compiled kernel images}`` in the ``.nv_fatbin`` section of a shared library (empty
    when it has none: a CPU-only build)."""
    section = _section(Path(library).read_bytes(), b'.nv_fatbin')
    counts: Dict[int, int] = {}
    position = 0
    while section and position + 16 <= len(section):
        magic, _, header_size, fat_size = struct.unpack_from('<IHHQ', section, position)
        if magic != _FATBIN_MAGIC:
            position += 8  # containers are 8-byte aligned
            continue
        entry, end = position + header_size, position + header_size + fat_size
        while entry + 32 <= end:
            kind, _, entry_header, payload = struct.unpack_from('<HHIQ', section, entry)
            sm, = struct.unpack_from('<I', section, entry + 28)
            if kind == _FATBIN_CUBIN:
                counts[sm] = counts.get(sm, 0) + 1
            entry += entry_header + payload
        position = end
    return counts


def mmcv_extension() -> Path:
    """The path of mmcv's compiled ops (``mmcv/_ext*.so``) without importing them."""
    import importlib.util
    spec = importlib.util.find_spec('mmcv')
    if spec is None or not spec.submodule_search_locations:
        raise CudaBuildError('mmcv is not installed')
    found = sorted(Path(list(spec.submodule_search_locations)[0]).glob('_ext*.so'))
    if not found:
        raise CudaBuildError('mmcv has no compiled ops (mmcv/_ext*.so): it was installed without MMCV_WITH_OPS=1')
    return found[0]


def check_extension_archs(library: Path, archs: Sequence[str]) -> str:
    """A line describing the CUDA kernels of ``library``.

    Raises:
        CudaBuildError: it lacks kernels for one of ``archs``.
    """
    counts = fatbin_archs(library)
    missing = [sm for sm in sm_numbers(archs) if sm not in counts]
    if missing:
        held = ', '.join(f'sm_{sm}' for sm in sorted(counts)) or 'no CUDA kernels (a CPU-only build)'
        raise CudaBuildError(f'{library.name} holds {held}; missing: {", ".join(f"sm_{sm}" for sm in missing)}. '
                             f'Rebuild: {ARCH_VARIABLE}="{";".join(archs)}" bash tools/install.sh')
    return f'{library.name}: ' + ', '.join(f'sm_{sm} ({counts[sm]} kernel images)' for sm in sorted(counts))


def check_ops_on_gpu() -> str:
    """Run mmcv's ``nms`` and ``RoIAlign`` on the GPU and on the CPU with the same inputs; a line with the result.

    Raises:
        CudaBuildError: the GPU results differ from the CPU's (or the ops have no CUDA kernels).
    """
    torch = _import_torch()
    from mmcv.ops import RoIAlign, nms
    generator = torch.Generator().manual_seed(0)
    corners = torch.rand(200, 2, generator=generator) * 100
    boxes = torch.cat([corners, corners + 5 + torch.rand(200, 2, generator=generator) * 40], dim=1)
    scores = torch.rand(200, generator=generator)
    _, keep_cpu = nms(boxes, scores, 0.5)
    _, keep_gpu = nms(boxes.cuda(), scores.cuda(), 0.5)
    features = torch.rand(2, 8, 32, 32, generator=generator)
    rois = torch.cat([torch.randint(0, 2, (50, 1), generator=generator).float(), boxes[:50] / 5], dim=1)
    align = RoIAlign((7, 7), spatial_scale=1.0, sampling_ratio=2, aligned=True)
    pooled_cpu = align(features, rois)
    pooled_gpu = align.cuda()(features.cuda(), rois.cuda()).cpu()
    if not torch.equal(keep_cpu, keep_gpu.cpu()):
        raise CudaBuildError(f'nms on the GPU kept {keep_gpu.numel()} boxes, on the CPU {keep_cpu.numel()}: the '
                             f'CUDA build is broken. Rebuild with the matching toolkit (see docs/en/get_started.md)')
    difference = (pooled_cpu - pooled_gpu).abs().max().item()
    if difference > 1e-4:
        raise CudaBuildError(f'RoIAlign on the GPU differs from the CPU by {difference:.2e}: the CUDA build is '
                             f'broken. Rebuild with the matching toolkit (see docs/en/get_started.md)')
    return (f'nms ({keep_cpu.numel()} of 200 boxes kept) and RoIAlign (max difference {difference:.1e}) on '
            f'{torch.cuda.get_device_name(0)} agree with the CPU')


def _torch_cuda() -> str:
    torch = _import_torch()
    if not torch.version.cuda:
        raise CudaBuildError(f'torch {torch.__version__} was built without CUDA: install a CUDA build of torch '
                             f'(tools/install.sh installs the pinned one) to build CUDA ops')
    return '.'.join(torch.version.cuda.split('.')[:2])


def _nvidia_tree() -> Path:
    """The ``site-packages/nvidia/cuXX`` folder of torch's CUDA wheels in this environment."""
    import importlib.util
    spec = importlib.util.find_spec('nvidia')
    major = _torch_cuda().split('.')[0]
    for location in (spec.submodule_search_locations if spec else []):
        tree = Path(location) / f'cu{major}'
        if tree.is_dir():
            return tree
    raise CudaBuildError(f'no nvidia/cu{major} folder in this environment: torch was not installed from its CUDA '
                         f'wheels. Install them (tools/install.sh does) or set CUDA_HOME to a CUDA {_torch_cuda()} '
                         f'toolkit')


def main(argv: Optional[List[str]] = None) -> int:
    """Commands for tools/install.sh; each prints its answer on stdout and its reasoning on stderr.

    ``archs``: the architectures to build for (``;``-separated, empty for the CPU build). ``torch-cuda``: torch's CUDA
    release. ``system-toolkit``: the matching system ``CUDA_HOME`` (exit 1 if none). ``registry-requirements``: the
    pip requirements of a registry compiler. ``assemble DEST``: a ``CUDA_HOME`` from the installed registry packages.
    ``check-archs ARCHS``: mmcv's ops hold kernels for them. ``check-gpu``: nms and RoIAlign, GPU against CPU.
    """
    parser = argparse.ArgumentParser(description='CUDA build steps of tools/install.sh')
    commands = parser.add_subparsers(dest='command', required=True)
    for name in ('archs', 'torch-cuda', 'system-toolkit', 'registry-requirements', 'check-gpu'):
        commands.add_parser(name)
    commands.add_parser('assemble').add_argument('destination', type=Path)
    commands.add_parser('check-archs').add_argument('archs')
    args = parser.parse_args(argv)

    def log(message: str) -> None:
        print(f'[install] {message}', file=sys.stderr)

    try:
        if args.command == 'archs':
            print(';'.join(wanted_archs()))
        elif args.command == 'torch-cuda':
            print(_torch_cuda())
        elif args.command == 'system-toolkit':
            choice = os.environ.get(TOOLKIT_VARIABLE, '').strip() or 'auto'
            if choice not in TOOLKIT_CHOICES:
                raise CudaBuildError(f'{TOOLKIT_VARIABLE}={choice!r}: choose one of {", ".join(TOOLKIT_CHOICES)}')
            if choice == 'registry':
                log(f'{TOOLKIT_VARIABLE}=registry: the system CUDA toolkit is not looked for')
                return 1
            found = find_system_toolkit(_torch_cuda(), system_toolkit_candidates(), log)
            if found is None and choice == 'system':
                raise CudaBuildError(f'{TOOLKIT_VARIABLE}=system, but no system CUDA {_torch_cuda()} toolkit was '
                                     f'found (above): set CUDA_HOME to one, or unset {TOOLKIT_VARIABLE}')
            if found is None:
                return 1
            print(found)
        elif args.command == 'registry-requirements':
            print('\n'.join(registry_requirements(_torch_cuda())))
        elif args.command == 'assemble':
            print(assemble_registry_toolkit(_nvidia_tree(), args.destination))
        elif args.command == 'check-archs':
            print(check_extension_archs(mmcv_extension(), parse_arch_list(args.archs)))
        elif args.command == 'check-gpu':
            print(check_ops_on_gpu())
    except CudaBuildError as error:
        print(f'[install] ERROR: {error}', file=sys.stderr)
        return 2
    return 0


if __name__ == '__main__':
    sys.exit(main())
