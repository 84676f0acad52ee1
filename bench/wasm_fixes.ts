/**
 * Speed of the wasm BatchMatMul before and after `registerWasmFixes()`, on the shapes a transformer step uses:
 * attention QKᵀ [64,128,32] × [64,128,32]ᵀ (B·H = 64, T = 128, d_head = 32), the 2-D products of a dense layer's
 * backprop (transpose flags), and activations [16,128,128] × weights [128,512] (batch folded into rows).
 * "after" includes the package's own GEMM (native/gemm.c), which the wrapper uses once loadNativeKernels() has bound
 * it to the backend. Each case's results before and after are compared too.
 *
 * Run: npx tsx bench/wasm_fixes.ts
 */
import * as tf from '@tensorflow/tfjs';
import '@tensorflow/tfjs-backend-wasm';
import { registerWasmFixes } from '../src/backend/wasm_fixes';
import { loadNativeKernels } from '../src/backend/wasm_native';

const REPEATS = 15;

interface Case {
  name: string;
  a: number[];
  b: number[];
  transposeA: boolean;
  transposeB: boolean;
}

const CASES: Case[] = [
  { name: 'QKᵀ     [64,128,32]·[64,128,32]ᵀ', a: [64, 128, 32], b: [64, 128, 32], transposeA: false, transposeB: true },
  { name: 'dK      [64,128,128]ᵀ·[64,128,32]', a: [64, 128, 128], b: [64, 128, 32], transposeA: true, transposeB: false },
  { name: 'dX      [2048,512]·[128,512]ᵀ', a: [2048, 512], b: [128, 512], transposeA: false, transposeB: true },
  { name: 'dW      [2048,128]ᵀ·[2048,512]', a: [2048, 128], b: [2048, 512], transposeA: true, transposeB: false },
  { name: 'dense   [16,128,128]·[128,512]', a: [16, 128, 128], b: [128, 512], transposeA: false, transposeB: false },
];

function medianMs(run: () => tf.Tensor): number {
  for (let i = 0; i < 3; i++) run().dispose();
  const times: number[] = [];
  for (let i = 0; i < REPEATS; i++) {
    const t0 = performance.now();
    const out = run();
    out.dataSync();
    times.push(performance.now() - t0);
    out.dispose();
  }
  times.sort((x, y) => x - y);
  return times[Math.floor(times.length / 2)];
}

async function main(): Promise<void> {
  await tf.setBackend('wasm');
  await tf.ready();
  const inputs = CASES.map((c, i) => [
    tf.randomNormal(c.a, 0, 1, 'float32', 2 * i),
    tf.randomNormal(c.b, 0, 1, 'float32', 2 * i + 1),
  ]);
  const run = (i: number) => () => tf.matMul(inputs[i][0], inputs[i][1], CASES[i].transposeA, CASES[i].transposeB);

  const before = CASES.map((_, i) => medianMs(run(i)));
  const reference = CASES.map((_, i) => run(i)());
  registerWasmFixes();
  await loadNativeKernels();
  const after = CASES.map((_, i) => medianMs(run(i)));

  const lines = CASES.map((c, i) => {
    const out = run(i)();
    const diff = tf.max(tf.abs(tf.sub(out, reference[i]))).dataSync()[0];
    const scale = tf.max(tf.abs(reference[i])).dataSync()[0];
    const speedup = before[i] / after[i];
    return `${c.name.padEnd(36)} ${before[i].toFixed(1).padStart(7)} ms -> ${after[i].toFixed(1).padStart(6)} ms  ` +
      `(${speedup.toFixed(1)}×, max rel diff ${(diff / scale).toExponential(1)})`;
  });
  process.stdout.write(`wasm BatchMatMul, median of ${REPEATS}, before -> after registerWasmFixes()\n${lines.join('\n')}\n`);
}

main().catch((e: unknown) => {
  process.stderr.write(`${e instanceof Error ? e.stack : String(e)}\n`);
  process.exit(1);
});
