/**
 * float32 ⇄ float16 (src/zoo/float16.ts): every float16 pattern survives the round trip; float32 → float16 equals
 * the nearest float16 found by search (ties to even); normal values come back within 2^-11 relatively; overflow,
 * subnormals, signed zeros, infinities and NaN.
 */
import { describe, expect, it } from 'vitest';
import { float16Bits, float16Value, fromFloat16, toFloat16, FLOAT16_MAX, FLOAT16_MIN_NORMAL } from '../src/zoo/float16';
import { Rng } from '../src/util/rng';

const f32 = new Float32Array(1);
const u32 = new Uint32Array(f32.buffer);

/** A float32 from its bit pattern. */
function fromBits(b: number): number {
  u32[0] = b >>> 0;
  return f32[0];
}

/** Every finite float16 value ≥ 0, ascending, with its bit pattern, computed from the definition. */
const POSITIVE: { value: number; bits: number }[] = [];
for (let h = 0; h < 0x7c00; h++) {
  const e = h >> 10;
  const m = h & 0x3ff;
  POSITIVE.push({ value: e === 0 ? m * 2 ** -24 : (1 + m / 1024) * 2 ** (e - 15), bits: h });
}

/** The float16 nearest to x by search (ties to the even pattern; beyond the midpoint above 65504: Infinity). */
function nearestBySearch(x: number): number {
  const sign = x < 0 || Object.is(x, -0) ? 0x8000 : 0;
  const a = Math.abs(x);
  if (a >= 65520) return sign | 0x7c00;
  let lo = 0;
  let hi = POSITIVE.length - 1;
  while (hi - lo > 1) {
    const mid = (lo + hi) >> 1;
    if (POSITIVE[mid].value <= a) lo = mid;
    else hi = mid;
  }
  const below = POSITIVE[lo];
  const above = POSITIVE[hi];
  if (a <= below.value) return sign | below.bits;
  const dBelow = a - below.value;
  const dAbove = above.value - a;
  if (dBelow < dAbove) return sign | below.bits;
  if (dAbove < dBelow) return sign | above.bits;
  return sign | ((below.bits & 1) === 0 ? below.bits : above.bits);
}

describe('float16', () => {
  it('round-trips every float16 bit pattern (NaNs stay NaN)', () => {
    const all = new Uint16Array(65536).map((_, i) => i);
    const values = fromFloat16(all);
    const back = toFloat16(values);
    let nans = 0;
    for (let h = 0; h < 65536; h++) {
      const isNaN16 = (h & 0x7c00) === 0x7c00 && (h & 0x3ff) !== 0;
      if (isNaN16) {
        nans += 1;
        expect(Number.isNaN(values[h]), `0x${h.toString(16)}`).toBe(true);
        expect((back[h] & 0x7c00) === 0x7c00 && (back[h] & 0x3ff) !== 0, `0x${h.toString(16)} back`).toBe(true);
      } else if (back[h] !== h) {
        expect.fail(`0x${h.toString(16)} → ${values[h]} → 0x${back[h].toString(16)}`);
      }
    }
    expect(nans).toBe(2 * 1023);
  });

  it('decodes values by the definition', () => {
    for (const { value, bits } of POSITIVE) {
      if (float16Value(bits) !== value) expect.fail(`0x${bits.toString(16)}: ${float16Value(bits)} ≠ ${value}`);
      if (float16Value(bits | 0x8000) !== -value) expect.fail(`-0x${bits.toString(16)}`);
    }
  });

  it('rounds every float32 to the nearest float16, ties to even (random bit patterns over all exponents)', () => {
    const rng = new Rng(7);
    let checked = 0;
    for (let i = 0; i < 200_000; i++) {
      const x = fromBits(Math.floor(rng.next() * 2 ** 32));
      if (!Number.isFinite(x)) continue;
      const want = nearestBySearch(x);
      const got = float16Bits(x);
      if (got !== want) expect.fail(`${x}: got 0x${got.toString(16)}, nearest is 0x${want.toString(16)}`);
      checked += 1;
    }
    expect(checked).toBeGreaterThan(190_000);
  });

  it('rounds exact midpoints to even, in the normal and subnormal ranges', () => {
    const cases: [number, number][] = [
      [1 + 2 ** -11, 1], // between 1 (even) and 1 + 2^-10
      [1 + 3 * 2 ** -11, 1 + 2 ** -9], // between 1 + 2^-10 (odd) and 1 + 2^-9 (even)
      [2 ** -25, 0], // between 0 (even) and 2^-24
      [3 * 2 ** -25, 2 ** -23], // between 2^-24 (odd) and 2^-23
      [2 ** -14 - 2 ** -25, 2 ** -14], // between the largest subnormal (odd) and the smallest normal (even)
    ];
    for (const [x, want] of cases) {
      expect(Math.fround(x), `${x} is a float32`).toBe(x);
      expect(fromFloat16(toFloat16([x]))[0], String(x)).toBe(want);
      expect(fromFloat16(toFloat16([-x]))[0], String(-x)).toBe(-want);
    }
  });

  it('brings normal values back within 2^-11 relatively, subnormals within 2^-25 absolutely', () => {
    const rng = new Rng(11);
    const xs = new Float32Array(100_000);
    for (let i = 0; i < xs.length; i++) {
      const magnitude = 2 ** (-24 + rng.next() * 40); // 2^-24 … 2^16, both signs
      xs[i] = (rng.next() < 0.5 ? -1 : 1) * Math.min(magnitude, FLOAT16_MAX);
    }
    const back = fromFloat16(toFloat16(xs));
    let normals = 0;
    for (let i = 0; i < xs.length; i++) {
      const x = xs[i];
      const err = Math.abs(back[i] - x);
      if (Math.abs(x) >= FLOAT16_MIN_NORMAL) {
        normals += 1;
        if (err > 2 ** -11 * Math.abs(x)) expect.fail(`${x} → ${back[i]}: relative error ${err / Math.abs(x)} > 2^-11`);
      } else if (err > 2 ** -25) expect.fail(`${x} → ${back[i]}: absolute error ${err} > 2^-25`);
    }
    expect(normals).toBeGreaterThan(50_000);
  });

  it('overflows to ±Infinity beyond 65504 (from the midpoint 65520 on)', () => {
    const back = fromFloat16(toFloat16([65504, 65519.99, 65520, 1e6, -1e6, 3e38, Infinity, -Infinity]));
    expect(Array.from(back)).toEqual([65504, 65504, Infinity, Infinity, -Infinity, Infinity, Infinity, -Infinity]);
  });

  it('keeps signed zeros, flushes float32 subnormals to zero, and keeps NaN', () => {
    const back = fromFloat16(toFloat16([0, -0, 1e-40, -1e-40, 2 ** -24, -(2 ** -24), NaN]));
    expect(Object.is(back[0], 0)).toBe(true);
    expect(Object.is(back[1], -0)).toBe(true);
    expect(Object.is(back[2], 0)).toBe(true);
    expect(Object.is(back[3], -0)).toBe(true);
    expect(back[4]).toBe(2 ** -24);
    expect(back[5]).toBe(-(2 ** -24));
    expect(Number.isNaN(back[6])).toBe(true);
  });
});
