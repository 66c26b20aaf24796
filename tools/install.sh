#!/usr/bin/env bash
# Install everything mmgem needs into the current Python, idempotently.
#
#   bash tools/install.sh            # what `make install` and `make demo` call
#   bash tools/install.sh --with-mim # also openmim (`make mim`, `make test`)
#   PYTHON=/path/to/python bash tools/install.sh
#
# Steps (each is skipped when already satisfied, so a second run takes seconds):
#   1. build tools (setuptools>=77,<81: mmcv's setup.py and mmengine's
#      `mmdet::` config bases import pkg_resources, removed in setuptools 81)
#   2. torch: an installed torch is kept; otherwise torch==2.13.0 exactly
#      (an unpinned torch pulls a multi-GB CUDA build)
#   3. mmengine
#   4. mmcv 2.1.0 built from source with its compiled ops (MMCV_WITH_OPS=1,
#      CUDA ops when nvcc and a CUDA torch are present). The first build took
#      about 23 min on a loaded 2-core machine and 7 min on a quiet one; pip
#      keeps the wheel in its cache, so later installs (also in fresh clones)
#      take seconds.
#   5. mmdet 3.3.0, runtime and test requirements (requirements/optional.txt,
#      e.g. tensorboard, is not installed: it is optional)
#   6. mmgem itself, editable, and a link site-packages/mmgem -> the checkout's
#      mmgem so that `mim search/run/train mmgem` find its .mim folder
#      (tools/misc/link_editable_for_mim.py says why)
#   7. a check that `import mmcv.ops, mmdet, mmgem` works
#   8. with --with-mim only: openmim, with requirements/mim.txt but without
#      opendatalab/openxlab (which pin an old setuptools; mim needs them only
#      for `mim download --dataset`)
# Any failure stops the script with the failing step named.
set -Eeuo pipefail

WITH_MIM=0
for arg in "$@"; do
    case "${arg}" in
        --with-mim) WITH_MIM=1 ;;
        *) echo "tools/install.sh: unknown argument ${arg} (known: --with-mim)" >&2; exit 2 ;;
    esac
done

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PY="${PYTHON:-python3}"
STEP="start"
trap 'echo "tools/install.sh: FAILED in step: ${STEP}" >&2' ERR

step() {
    STEP="$*"
    echo "==> [mmgem install] ${STEP}"
}

pip_install() {
    "${PY}" -m pip install --disable-pip-version-check -q "$@"
}

# Exit 0 when every requirement given is installed at a matching version.
satisfied() {
    "${PY}" - "$@" <<'EOF' 2>/dev/null
import sys
from importlib.metadata import PackageNotFoundError, version
from packaging.requirements import Requirement
for spec in sys.argv[1:]:
    req = Requirement(spec)
    try:
        if not req.specifier.contains(version(req.name), prereleases=True):
            sys.exit(1)
    except PackageNotFoundError:
        sys.exit(1)
EOF
}

# Requirement lines of a requirements file, without comments.
reqs() {
    grep -vE '^\s*(#|$)' "$1"
}

step "1/7 build tools"
mapfile -t BUILD < <(reqs "${ROOT}/requirements/build.txt")
satisfied "${BUILD[@]}" || pip_install "${BUILD[@]}"

step "2/7 torch"
if "${PY}" -c "import torch" 2>/dev/null; then
    echo "keeping installed torch $("${PY}" -c 'import torch; print(torch.__version__)')"
else
    pip_install "torch==2.13.0"
fi

step "3/7 mmengine"
mapfile -t MM < <(reqs "${ROOT}/requirements/mminstall.txt")
satisfied "mmengine>=0.10.7,<1.0" || pip_install "mmengine>=0.10.7,<1.0"

step "4/7 mmcv 2.1.0 with compiled ops"
if satisfied "mmcv==2.1.0" && "${PY}" -c "import mmcv.ops" 2>/dev/null; then
    echo "mmcv 2.1.0 with ops already installed"
else
    if command -v nvcc >/dev/null 2>&1 && \
        "${PY}" -c "import torch, sys; sys.exit(0 if torch.version.cuda else 1)"; then
        export FORCE_CUDA=1
        echo "building mmcv with CUDA ops"
    else
        echo "building mmcv with CPU ops (first time: 7-23 min on 2 cores; cached afterwards)"
    fi
    # mmcv-lite or an mmcv without ops would shadow the build: remove it first.
    "${PY}" -m pip uninstall -y -q mmcv mmcv-lite >/dev/null 2>&1 || true
    MMCV_WITH_OPS=1 MAX_JOBS="${MAX_JOBS:-$(nproc)}" \
        pip_install --no-build-isolation "mmcv==2.1.0"
    "${PY}" -c "import mmcv.ops"
fi

step "5/7 mmdet, runtime and test requirements"
if ! satisfied "${MM[@]}" || ! satisfied $(reqs "${ROOT}/requirements/runtime.txt") \
    || ! satisfied $(reqs "${ROOT}/requirements/tests.txt"); then
    pip_install "${MM[@]}" -r "${ROOT}/requirements/runtime.txt" \
        -r "${ROOT}/requirements/tests.txt"
fi
# Nothing here pins setuptools, but an environment with a full openmim
# (openxlab) may have an old one; put ours back.
satisfied "${BUILD[@]}" || pip_install "${BUILD[@]}"

step "6/7 mmgem (editable)"
# a fresh clone at the path of an earlier install lacks the .mim links setup.py makes
if (cd / && "${PY}" -c "import mmgem, os, sys; sys.exit(0 if os.path.realpath(mmgem.__path__[0]) == os.path.realpath('${ROOT}/mmgem') else 1)") 2>/dev/null \
    && [ -e "${ROOT}/mmgem/.mim/configs" ] && [ -e "${ROOT}/mmgem/.mim/tools" ] \
    && [ -e "${ROOT}/mmgem/.mim/model-index.yml" ]; then
    echo "mmgem already installed from ${ROOT}"
else
    pip_install --no-deps --no-build-isolation -e "${ROOT}"
fi
# mim looks for <site-packages>/mmgem/.mim, which a PEP 660 editable install lacks: link
# site-packages/mmgem to the checkout's package (recorded, so `pip uninstall mmgem` removes it)
"${PY}" "${ROOT}/tools/misc/link_editable_for_mim.py"

step "7/7 check imports"
(cd / && "${PY}" - <<'EOF'
import mmcv
import mmcv.ops  # noqa: F401
import mmdet
import mmengine
import torch
import cvxpy
import mmgem
print(f'torch {torch.__version__}, mmcv {mmcv.__version__}, mmdet {mmdet.__version__}, '
      f'mmengine {mmengine.__version__}, cvxpy {cvxpy.__version__}, '
      f'mmgem {mmgem.__version__}')
print('cvxpy solvers:', ', '.join(sorted(cvxpy.installed_solvers())))
EOF
)

if [[ "${WITH_MIM}" == 1 ]]; then
    step "8/8 openmim (without opendatalab/openxlab)"
    mapfile -t MIM < <(reqs "${ROOT}/requirements/mim.txt")
    if satisfied "openmim>=0.3.9" "${MIM[@]}"; then
        echo "openmim already installed"
    else
        pip_install "${MIM[@]}"
        pip_install --no-deps "openmim>=0.3.9"
    fi
    (cd / && "${PY}" -c "import mim.commands.search, mim.commands.run, mim.commands.train")
    satisfied "${BUILD[@]}" || pip_install "${BUILD[@]}"
fi
echo "==> [mmgem install] done"
