#!/usr/bin/env bash
# Jupyter with the repo's TypeScript kernel (notebooks/kernels/tslab), no global `tslab install` needed.
#
#   scripts/notebook.sh [jupyter-notebook args...]   trust notebooks/*.ipynb, open the classic Notebook at the package
#                                                     root (npm run notebook)
#   scripts/notebook.sh --execute                     run every notebooks/*.ipynb in place, saving outputs (npm run test:notebooks)
#
# Jupyter comes from Debian (/usr/bin/jupyter); MTP_JUPYTER overrides the binary.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
export JUPYTER_PATH="$root/notebooks${JUPYTER_PATH:+:$JUPYTER_PATH}"
jupyter=${MTP_JUPYTER:-/usr/bin/jupyter}
apt_line="apt-get install -y --no-install-recommends jupyter-nbconvert jupyter-client python3-nbclient jupyter-notebook"

need() { # need SUBCOMMAND: fail with the install line unless `jupyter SUBCOMMAND` works
  if ! "$jupyter" "$1" --version >/dev/null 2>&1; then
    echo "error: '$jupyter $1' not found. Install Jupyter from Debian: $apt_line" >&2
    exit 1
  fi
}

if [[ "${1:-}" == "--execute" ]]; then
  need nbconvert
  for nb in notebooks/*.ipynb; do
    echo "executing $nb"
    "$jupyter" nbconvert --to notebook --execute --inplace \
      --ExecutePreprocessor.kernel_name=tslab --ExecutePreprocessor.timeout=600 \
      --ExecutePreprocessor.record_timing=False "$nb"
  done
  exit 0
fi

need notebook
# The classic Notebook runs the scripts of saved outputs only in a trusted notebook, and nbconvert leaves the lessons
# unsigned: sign them in this user's Jupyter signature database, so their saved figures draw interactively (Plotly
# loaded from this server, src/plot/notebook.ts) instead of showing only the static PNGs. They are this repository's
# own files, as is this script; MTP_TRUST_NOTEBOOKS=0 skips it. `jupyter trust` is not in Debian's jupyter-notebook,
# nbformat's module is.
if [[ "${MTP_TRUST_NOTEBOOKS:-1}" != 0 ]]; then
  if "$jupyter" trust --version >/dev/null 2>&1; then
    "$jupyter" trust notebooks/*.ipynb >/dev/null || echo "warning: could not trust notebooks/*.ipynb" >&2
  else
    /usr/bin/python3 -m nbformat.sign notebooks/*.ipynb >/dev/null || echo "warning: could not trust notebooks/*.ipynb" >&2
  fi
fi
extra=()
[[ "$(id -u)" == 0 ]] && extra+=(--allow-root)
exec "$jupyter" notebook --notebook-dir="$root" "${extra[@]}" "$@"
