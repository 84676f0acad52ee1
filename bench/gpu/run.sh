#!/usr/bin/env bash
# On the GPU machine (repository root, .device/ carried): unpacks node, dawn.node and the loaders, then runs the
# bundled benchmarks on the webgpu backend. Results land in $OUT (or bench/results).
# TRAIN_ARGS overrides the training bench's flags (default --presets=tiny,small,medium --torch=false: fused training programs and plain ops, in one run).
set -euo pipefail
cd "$(dirname "$0")/../.."
source bench/gpu/setup.sh
/tmp/node $d/train_throughput.js --backends=webgpu --readme=false ${TRAIN_ARGS:---presets=tiny,small,medium --torch=false} 2>&1 | grep -v '^Warning' | tee "$out/gpu_train.txt"
cp $d/results/train_throughput.json "$out/gpu_train_throughput.json" 2>/dev/null || true
if [ -f $d/decode_cost.js ]; then /tmp/node $d/decode_cost.js --backend=webgpu --presets=small,medium --baseline=false --torch=false --readme=false 2>&1 | tee "$out/gpu_decode_cost.txt" || true; cp $d/results/decode_cost.json "$out/gpu_decode_cost.json" 2>/dev/null || true; fi
ckpts=$(ls $d/ckpt/*.ckpt 2>/dev/null | paste -sd, -)
if [ -n "$ckpts" ]; then
  /tmp/node $d/decode.js --backend=webgpu --ckpt="$ckpts" --prompts=4 --tokens=96 --runs=3 --name=gpu_decode 2>&1 | tee "$out/gpu_decode.txt"
  cp $d/results/gpu_decode.json "$out/" 2>/dev/null || true
fi
