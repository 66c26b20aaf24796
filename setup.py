# Copyright (c) mmgem contributors. All rights reserved.
import os
import os.path as osp
import shutil
import sys
import warnings

from setuptools import find_packages, setup

#: What ``mim`` finds in ``<package>/.mim``: configs and tools (``mim train``,
#: ``mim run``), the model index (``mim search``, ``mim list``).
MIM_FILES = ('configs', 'tools', 'model-index.yml')


def add_mim_extension() -> None:
    """Ship configs, tools and the model index inside the package, the OpenMMLab way.

    ``mim train``/``mim test``/``mim run`` look for
    ``<package>/.mim/{configs,tools}``, ``mim search``/``mim list`` for
    ``<package>/.mim/model-index.yml``. Editable installs (``pip install -e
    .``, ``setup.py develop``) get symlinks so edits show up at once; wheels
    and sdists get copies. mim finds an installed package's files from its
    ``dist-info`` location, which for a PEP 660 editable install is
    site-packages, not the source tree: ``tools/install.sh`` therefore runs
    ``tools/misc/link_editable_for_mim.py`` after ``pip install -e``, which
    links ``site-packages/mmgem`` to the checkout's package.
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
        if osp.isdir(src):
            shutil.copytree(src, dst)
        else:
            shutil.copyfile(src, dst)


def read_requirements(name: str) -> list:
    """Requirement lines of ``requirements/<name>.txt`` (no comments, no ``-r``)."""
    path = osp.join(osp.dirname(osp.abspath(__file__)), 'requirements', f'{name}.txt')
    with open(path, encoding='utf-8') as f:
        lines = [line.split('#')[0].strip() for line in f]
    return [line for line in lines if line and not line.startswith('-')]


if __name__ == '__main__':
    add_mim_extension()
    setup(
        # tools/ is a package for `python -m tools...`, shipped only in .mim
        packages=find_packages(exclude=('configs', 'configs.*', 'tools', 'tools.*', 'tests',
                                        'tests.*')),
        package_data={
            'mmgem': [
                '.mim/configs/**/*', '.mim/tools/**/*',
                '.mim/model-index.yml'
            ]
        },
        # mmcv/mmdet/torch are installed by tools/install.sh (mmcv is built
        # from source), so they are not install_requires here.
        extras_require={
            'tests': read_requirements('tests'),
            'optional': read_requirements('optional'),
        },
    )
