#!/bin/sh
# Starts the repo's tslab kernel for Jupyter (see kernel.json). tslab compiles the files a cell imports
# relative to its working directory, so the kernel always runs at the package root: notebooks import
# library code as "./src/...", whichever folder the notebook lives in.
set -eu
root=$(cd "$(dirname "$0")/../../.." && pwd)
cd "$root"
exec node_modules/.bin/tslab kernel --config-path "$1"
