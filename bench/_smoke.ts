import * as tf from '@tensorflow/tfjs';
import { initBackend, backendInfo } from '../src/backend/index';
async function main() {
  let t0 = performance.now();
  console.log(await initBackend(), (performance.now()-t0).toFixed(0), 'ms');
  t0 = performance.now();
  console.log(await initBackend('auto'), (performance.now()-t0).toFixed(2), 'ms');
  console.log(await initBackend('cpu'));
  tf.tensor([1,2]).print();
  console.log(backendInfo());
  for (const n of ['webgl', 'tensorflow', 'foo'] as any[]) { try { await initBackend(n); } catch (e) { console.log('ERR', (e as Error).message); } }
  console.log(tf.getBackend());
  t0 = performance.now();
  const info = await initBackend('webgpu');
  console.log(info, (performance.now()-t0).toFixed(0), 'ms');
  const a = tf.randomNormal([64,64]); const b = tf.randomNormal([64,64]);
  t0 = performance.now();
  const c = await tf.matMul(a, b).data();
  console.log('webgpu matmul', (performance.now()-t0).toFixed(0), 'ms', c[0]);
  const av = await a.data(), bv = await b.data();
  await initBackend('cpu');
  const c2 = await tf.matMul(tf.tensor(av, [64,64]), tf.tensor(bv, [64,64])).data();
  let m = 0; for (let i = 0; i < c.length; i++) m = Math.max(m, Math.abs(c[i]-c2[i])); console.log('maxdiff', m);
}
main().catch(e => { console.error('FATAL', e); process.exit(1); });
