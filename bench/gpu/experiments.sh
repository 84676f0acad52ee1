#!/usr/bin/env bash
# On the GPU machine's quiet CPU cores (repository root, .device/ carried; see prepare.sh): the experiments on the
# zoo's models, each process pinned to a core of its own, with --png=false (no Chromium there; render the PNGs here
# afterwards with `npx tsx experiments/render_pngs.ts figures/k_sweep ...`). The parts to run are the arguments
# (default: all of them):
#   code         core 2: the k-sweep on code (figures/k_sweep), then theory (reads it)
#   prose        core 4: the k-sweep on prose (its own folder, k_sweep_prose: merge its rows into figures/k_sweep/results.json)
#   train_once   core 6: train once vs train per k (code)
#   decode_cost  cores 8, 10: decode-cost curves of `small` and `deep` (wasm, and the PyTorch twin with 2 threads)
#
#   bash bench/gpu/experiments.sh [code] [prose] [train_once] [decode_cost]
# Everything it writes comes back as one file, $OUT/experiments.tar (the machine returns at most 8 files).
# EXPERIMENT_ARGS adds flags to every experiment.
set -uo pipefail
cd "$(dirname "$0")/../.."
d=.device
out=/tmp/experiments
rm -rf "$out" figures/k_sweep figures/theory figures/train_once && mkdir -p "$out" # this machine's copy: only new files
for f in $(find $d -name '*.xz' ! -name node.xz ! -name '*.node.xz'); do xz -dkf "$f"; done # carried compressed
xz -dc $d/node.xz > /tmp/node && chmod +x /tmp/node
[ -e ../models ] || ln -s "$PWD/models" ../models # zoo models from the bundle in $d: two folders up
pin() { local c=$1; shift; if command -v taskset > /dev/null; then taskset -c "$c" "$@"; else "$@"; fi; }
args=(--png=false ${EXPERIMENT_ARGS:-})
start=$(date +%s)
parts=${*:-code prose train_once decode_cost}
part() { [[ " $parts " == *" $1 "* ]]; }
part code && ( pin 2 /tmp/node $d/k_sweep.js --corpora=code "${args[@]}" > "$out/k_sweep_code.log" 2>&1 && pin 2 /tmp/node $d/theory.js "${args[@]}" > "$out/theory.log" 2>&1 ) &
part prose && pin 4 /tmp/node $d/k_sweep.js --corpora=prose --out="$out/k_sweep_prose" "${args[@]}" > "$out/k_sweep_prose.log" 2>&1 &
part train_once && pin 6 /tmp/node $d/train_once.js "${args[@]}" > "$out/train_once.log" 2>&1 &
part decode_cost && MTP_PYTHON=${MTP_PYTHON:-$(command -v python3)} pin 8,10 /tmp/node $d/decode_cost.js --presets=small,deep --runs=40 --ns=1,2,4,8,16,64 \
  --baseline=false --readme=false > "$out/decode_cost.log" 2>&1 &
while [ -n "$(jobs -r)" ]; do sleep 20; echo "$(( $(date +%s) - start )) s: $(tail -qn1 "$out"/*.log 2>/dev/null | cut -c1-60 | paste -sd'|')"; done
cp -r figures/k_sweep figures/theory figures/train_once "$out/" 2>/dev/null
cp $d/results/decode_cost.json "$out/" 2>/dev/null
tail -n 3 "$out"/*.log
tar -C /tmp -cf "${OUT:-/tmp}/experiments.tar" experiments && ls -la "${OUT:-/tmp}/experiments.tar"
