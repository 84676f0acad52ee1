#!/usr/bin/env bash
# On the GPU machine (repository root, .device/ carried): unpacks node, dawn.node and the loaders, then runs the
# bundled benchmarks on the webgpu backend. Results land in $OUT (or bench/results).
# TRAIN_ARGS overrides the training bench's flags (default --presets=tiny,small,medium --torch=false --baseline=false).
set -euo pipefail
cd "$(dirname "$0")/../.."
d=.device
for f in $d/gl/*.deb; do dpkg -x "$f" /; done; ldconfig
xz -dc $d/node.xz > /tmp/node && chmod +x /tmp/node
xz -dc $d/node_modules/webgpu/dist/linux-x64/dawn.node.xz > $d/node_modules/webgpu/dist/linux-x64/dawn.node
rm -rf node_modules && ln -s $d/node_modules node_modules
export XDG_RUNTIME_DIR=/tmp
# the NVIDIA Vulkan driver's manifest lies outside the loader's default folders there
[ -f /usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json ] && export VK_DRIVER_FILES=/usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json
out=${OUT:-bench/results}
/tmp/node $d/train_throughput.js --backends=webgpu --readme=false ${TRAIN_ARGS:---presets=tiny,small,medium --torch=false --baseline=false} 2>&1 | grep -v '^Warning' | tee "$out/gpu_train.txt"
cp $d/results/train_throughput.json "$out/gpu_train_throughput.json" 2>/dev/null || true
if [ -f $d/decode_cost.js ]; then /tmp/node $d/decode_cost.js --backend=webgpu --presets=small,medium --baseline=false --torch=false --readme=false 2>&1 | tee "$out/gpu_decode_cost.txt" || true; cp $d/results/decode_cost.json "$out/gpu_decode_cost.json" 2>/dev/null || true; fi
ckpts=$(ls $d/ckpt/*.ckpt 2>/dev/null | paste -sd, -)
if [ -n "$ckpts" ]; then
  /tmp/node $d/decode.js --backend=webgpu --ckpt="$ckpts" --prompts=4 --tokens=96 --runs=3 --name=gpu_decode 2>&1 | tee "$out/gpu_decode.txt"
  cp $d/results/gpu_decode.json "$out/" 2>/dev/null || true
fi
if [ -f $d/step_profile.js ]; then # one step per decoder: WebGPU, then wasm pinned to one quiet core
  /tmp/node $d/step_profile.js --backend=webgpu --presets=small,medium --tokens=64 --runs=5 2>&1 | grep -v '^Warning' | tee "$out/gpu_step_profile.txt" || true
  cp $d/results/step_profile.json "$out/gpu_step_profile.json" 2>/dev/null || true
  taskset -c 2 /tmp/node $d/step_profile.js --backend=wasm --presets=small,medium --tokens=96 --runs=7 2>&1 | tee "$out/quiet_wasm_step_profile.txt" || true
  cp $d/results/step_profile.json "$out/quiet_wasm_step_profile.json" 2>/dev/null || true
fi
