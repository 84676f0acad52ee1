#!/usr/bin/env bash
# On the GPU machine (repository root, .device/ carried; see prepare.sh): trains the tiny code models each decoder
# drafts for (plain + Medusa-1 heads, parallel k = 4, sequential D = 3; one wasm process per core), then measures
# one decoding step per decoder (bench/step_profile.ts) and AR vs every lossless decoder and tree shape
# (bench/decode.ts) on a quiet pinned CPU core (wasm) and on the GPU (WebGPU through Dawn/Vulkan). Results in $OUT.
#
#   bash bench/gpu/decoding.sh            (STEPS overrides the training steps, default 800)
set -euo pipefail
cd "$(dirname "$0")/../.."
source bench/gpu/setup.sh
steps=${STEPS:-800}
z=/tmp/zoo
date
mkdir -p $z
train() { local name=$1 core=$2 n=$3; shift 3; taskset -c "$core" /tmp/node $d/mtp.js train --preset=tiny --train.backend=wasm --train.steps="$n" --overwrite --out=$z/$name "$@" > $z/$name.log 2>&1; }
train par4 1 "$steps" --mtp.kind=parallel --mtp.k=4 &
train seq3 2 "$steps" --mtp.kind=sequential --mtp.depth=3 &
(train plain 3 "$steps" && train medusa5 3 $((steps / 2)) --mtp.kind=medusa --mtp.heads=5 --init=$z/plain/model.ckpt) &
# meanwhile: one step per decoder on random weights, on a quiet core and on the GPU
(taskset -c 12 /tmp/node $d/step_profile.js --backend=wasm --presets=small,medium --tokens=96 --runs=7 --name=wasm_step_random > $z/wasm_step_random.txt 2>&1; cp $d/results/wasm_step_random.json $out/) &
(sleep 2; taskset -c 8 /tmp/node $d/step_profile.js --backend=webgpu --presets=small --tokens=48 --runs=3 --name=gpu_step_random 2>&1 | grep -v '^Warning' > $z/gpu_step_random.txt; cp $d/results/gpu_step_random.json $out/) &
wait
date; for m in par4 seq3 plain medusa5; do tail -n 2 $z/$m.log; done | tee $out/zoo_train.txt
ckpts=$z/par4/model.ckpt,$z/seq3/model.ckpt,$z/medusa5/model.ckpt
taskset -c 5 /tmp/node $d/step_profile.js --backend=wasm --presets= --ckpt=$ckpts,$z/plain/model.ckpt --tokens=96 --runs=7 --name=wasm_step_trained > $z/wasm_step_trained.txt 2>&1 && cp $d/results/wasm_step_trained.json $out/ &
taskset -c 6 /tmp/node $d/decode.js --backend=wasm --ckpt=$ckpts --trees=chain,dense,sparse63 --prompts=6 --tokens=96 --runs=3 --name=wasm_decode > $z/wasm_decode.txt 2>&1 && cp $d/results/wasm_decode.json $out/ &
taskset -c 8 /tmp/node $d/decode.js --backend=webgpu --ckpt=$ckpts --trees=chain,sparse63 --prompts=3 --tokens=48 --runs=2 --name=gpu_decode 2>&1 | grep -v '^Warning' > $z/gpu_decode.txt && cp $d/results/gpu_decode.json $out/ || true
wait
date
for f in $z/*.txt $z/*.log; do echo "== $f"; cat "$f"; done > $out/decoding_log.txt
