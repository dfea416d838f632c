import shutil
from pathlib import Path

from setuptools import find_packages, setup
from setuptools.command.build_py import build_py

ROOT = Path(__file__).resolve().parent
# Copied into the package as mmmetaformer/.mim/ (the OpenMMLab convention), where mmmetaformer.config_file() and the
# model index find them in an installed wheel.
PACKAGED = ('configs', 'tools', 'model-index.yml')

version = {}
exec((ROOT / 'mmmetaformer' / 'version.py').read_text(), version)


class BuildWithConfigs(build_py):
    """build_py that also copies configs/, tools/ and model-index.yml into the built package's .mim folder (in the
    build directory, never the source tree). An editable install reads them from the checkout instead."""

    def run(self) -> None:
        super().run()
        if self.editable_mode:
            return
        target = Path(self.build_lib) / 'mmmetaformer' / '.mim'
        shutil.rmtree(target, ignore_errors=True)
        for name in PACKAGED:
            source = ROOT / name
            if source.is_dir():
                shutil.copytree(source, target / name, ignore=shutil.ignore_patterns('__pycache__', '*.pyc'))
            else:
                target.mkdir(parents=True, exist_ok=True)
                shutil.copy2(source, target / name)


setup(
    name='mmmetaformer',
    version=version['__version__'],
    description='MetaFormer backbones (PoolFormer, PoolFormerV2, IdentityFormer, RandFormer, ConvFormer, '
                'CAFormer) for mmdet, mmseg and mmpretrain',
    long_description=(ROOT / 'README.md').read_text(),
    long_description_content_type='text/markdown',
    packages=find_packages(include=['mmmetaformer', 'mmmetaformer.*']),
    python_requires='>=3.9',
    # The OpenMMLab stack is installed by tools/install.sh (OneDL fork, same module names); listing the upstream
    # names here would make pip fetch their sdists beside it. Versions are checked at import instead. torch: the
    # first release with every torch feature the code uses (the table in tests/test_setup.py).
    install_requires=['torch>=2.5'],
    license='Apache-2.0',
    cmdclass={'build_py': BuildWithConfigs},
)
