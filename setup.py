# Copyright (c) mmgem contributors. All rights reserved.
import os
import os.path as osp
import shutil
import sys
import warnings

from setuptools import find_packages, setup

MIM_FILES = ('configs', 'tools')


def add_mim_extension() -> None:
    """Ship configs and tools inside the package, the OpenMMLab way.

    ``mim train``/``mim test`` look for ``<package>/.mim/{configs,tools}``.
    Editable installs (``pip install -e .``, ``setup.py develop``) get symlinks
    so edits show up at once; wheels and sdists get copies.
    """
    if 'develop' in sys.argv or 'editable_wheel' in sys.argv:
        mode = 'symlink'
    elif any(cmd in sys.argv for cmd in ('sdist', 'bdist_wheel', 'install')):
        mode = 'copy'
    else:
        return

    repo_path = osp.dirname(osp.abspath(__file__))
    mim_path = osp.join(repo_path, 'mmgem', '.mim')
    os.makedirs(mim_path, exist_ok=True)
    for name in MIM_FILES:
        src = osp.join(repo_path, name)
        dst = osp.join(mim_path, name)
        if osp.islink(dst) or osp.isfile(dst):
            os.remove(dst)
        elif osp.isdir(dst):
            shutil.rmtree(dst)
        if mode == 'symlink':
            try:
                os.symlink(osp.relpath(src, mim_path), dst)
                continue
            except OSError:
                warnings.warn(f'Failed to symlink {src} to {dst}; copying instead.')
        shutil.copytree(src, dst)


if __name__ == '__main__':
    add_mim_extension()
    setup(
        packages=find_packages(exclude=('configs', 'tools', 'tests')),
        package_data={'mmgem': ['.mim/configs/**/*', '.mim/tools/**/*']},
    )
