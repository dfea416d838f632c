from pathlib import Path

from setuptools import find_packages, setup

version = {}
exec((Path(__file__).parent / 'mmmetaformer' / 'version.py').read_text(), version)

setup(
    name='mmmetaformer',
    version=version['__version__'],
    description='MetaFormer backbones (PoolFormer, PoolFormerV2, IdentityFormer, RandFormer, ConvFormer, '
                'CAFormer) for mmdet, mmseg and mmpretrain',
    long_description=(Path(__file__).parent / 'README.md').read_text(),
    long_description_content_type='text/markdown',
    packages=find_packages(include=['mmmetaformer', 'mmmetaformer.*']),
    python_requires='>=3.9',
    # The OpenMMLab stack is installed by tools/install.sh (OneDL fork, same module names); listing the upstream
    # names here would make pip fetch their sdists beside it. Versions are checked at import instead.
    install_requires=['torch>=2.1'],
    license='Apache-2.0',
)
