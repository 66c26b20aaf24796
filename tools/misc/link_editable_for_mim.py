# Copyright (c) mmgem contributors. All rights reserved.
"""Make ``mim`` find an editable install of mmgem.

``mim search/list/run/train/test mmgem`` (openmim 0.3.9) look for
``<distribution location>/mmgem/.mim/{configs,tools,model-index.yml}``.
mmdet's ``setup.py`` trick, which mmgem's ``setup.py`` repeats
(``add_mim_extension`` links ``mmgem/.mim`` to the checkout's ``configs``,
``tools`` and ``model-index.yml``), was made for ``setup.py develop``
installs, whose distribution location is the checkout. A PEP 660 editable
install (``pip install -e .``, which is what ``tools/install.sh`` runs, and
what ``setup.py develop`` itself runs since setuptools 80) puts the
distribution's ``dist-info`` in site-packages and no ``mmgem`` folder there,
so mim looks for ``site-packages/mmgem/.mim`` and fails
(``FileNotFoundError ... model-index.yml``, ``UnboundLocalError: prefix``).

This script links ``<site-packages>/mmgem`` to the checkout's ``mmgem``
package (imports then go through the link: the same files, edits show at
once) and adds the link to the distribution's ``RECORD``, so that
``pip uninstall mmgem`` removes it. ``tools/install.sh`` runs it right after
``pip install -e``::

    python tools/misc/link_editable_for_mim.py

Exit status 0 when the link is in place (made now or already there), 1 with
a message naming the problem otherwise. It changes nothing for a regular
install (``pip install .``), whose site-packages ``mmgem`` folder already
holds ``.mim``.
"""
import argparse
import csv
import io
import json
import os
import os.path as osp
import sys
import tempfile
from importlib import metadata
from typing import Optional
from urllib.parse import unquote, urlparse

#: What ``setup.py``'s ``add_mim_extension`` puts in ``mmgem/.mim``.
MIM_FILES = ('configs', 'tools', 'model-index.yml')


def editable_source(dist: metadata.Distribution) -> Optional[str]:
    """The checkout an editable install was made from, from ``direct_url.json`` (PEP 610).

    Args:
        dist (importlib.metadata.Distribution): The installed distribution.

    Returns:
        str | None: The checkout's absolute path, or None for a
        non-editable install.
    """
    text = dist.read_text('direct_url.json')
    if not text:
        return None
    info = json.loads(text)
    if not info.get('dir_info', {}).get('editable', False):
        return None
    url = urlparse(info.get('url', ''))
    if url.scheme != 'file':
        return None
    return osp.abspath(unquote(url.path))


def _write_record(path: str, rows: list) -> None:
    """Rewrite ``RECORD`` atomically (temporary file, fsync, rename), keeping its mode."""
    buf = io.StringIO()
    csv.writer(buf, lineterminator='\n').writerows(rows)
    mode = os.stat(path).st_mode & 0o777
    fd, tmp = tempfile.mkstemp(prefix='.RECORD.', dir=osp.dirname(path))
    try:
        with os.fdopen(fd, 'w', encoding='utf-8', newline='') as f:
            f.write(buf.getvalue())
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        if osp.exists(tmp):
            os.remove(tmp)
        raise


def link_for_mim(dist: metadata.Distribution, package: str = 'mmgem') -> str:
    """Link ``<site-packages>/<package>`` to an editable install's source package.

    Args:
        dist (importlib.metadata.Distribution): The installed distribution
            (an editable install, see :func:`editable_source`).
        package (str): The import package's name. Defaults to ``'mmgem'``.

    Returns:
        str: What was done, one line: ``linked ...``, ``already linked ...``
        or ``regular install ...`` (nothing to do).

    Raises:
        RuntimeError: The install is neither editable nor regular, the
            checkout's ``<package>/.mim`` lacks one of :data:`MIM_FILES`
            (reinstall with ``pip install -e``), or something that is not a
            link already sits at ``<site-packages>/<package>``.
    """
    site = osp.abspath(str(dist.locate_file('')))
    link = osp.join(site, package)
    source = editable_source(dist)
    if source is None:
        if osp.isfile(osp.join(link, '.mim', 'model-index.yml')):
            return f'regular install at {link}: nothing to link'
        raise RuntimeError(f'{dist.metadata["Name"]} at {site} is neither an editable install '
                           f'(direct_url.json) nor a regular one with {link}/.mim')
    target = osp.join(source, package)
    missing = [name for name in MIM_FILES if not osp.exists(osp.join(target, '.mim', name))]
    if missing:
        raise RuntimeError(f'{target}/.mim lacks {", ".join(missing)}: setup.py makes them '
                           f'during `pip install -e {source}`; run it again')
    records = [f for f in dist.files or () if f.name == 'RECORD'
               and f.parent.name.endswith('.dist-info')]
    if len(records) != 1:
        raise RuntimeError(f'{dist.metadata["Name"]} at {site}: no single dist-info RECORD')
    record = str(records[0].locate())
    if osp.islink(link) and osp.realpath(link) == osp.realpath(target):
        done = f'already linked {link} -> {target}'
    elif osp.lexists(link) and not osp.islink(link):
        raise RuntimeError(f'{link} exists and is not a link: remove it (a leftover of a '
                           'regular install?) and run this again')
    else:  # no link yet, or one to an earlier install's checkout: replaced atomically
        tmp = osp.join(site, f'.{package}.link.{os.getpid()}')
        os.symlink(target, tmp, target_is_directory=True)
        try:
            os.replace(tmp, link)
        except BaseException:
            os.remove(tmp)
            raise
        done = f'linked {link} -> {target}'

    with open(record, encoding='utf-8', newline='') as f:
        rows = list(csv.reader(f))
    if not any(row and row[0] == package for row in rows):
        _write_record(record, rows + [[package, '', '']])
    return done


def main(argv: Optional[list] = None) -> int:
    """Command line: link the installed ``mmgem`` for mim; see the module docstring.

    Args:
        argv (list, optional): Arguments; ``sys.argv[1:]`` when None.

    Returns:
        int: The exit status.
    """
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--dist', default='mmgem', help='distribution name (default: mmgem)')
    parser.add_argument('--package', default='mmgem', help='import package (default: mmgem)')
    args = parser.parse_args(argv)
    try:
        dist = metadata.distribution(args.dist)
        print(link_for_mim(dist, args.package))
    except (metadata.PackageNotFoundError, RuntimeError, OSError) as err:
        print(f'link_editable_for_mim: {err}', file=sys.stderr)
        return 1
    return 0


if __name__ == '__main__':
    sys.exit(main())
