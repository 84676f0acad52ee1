/**
 * IEEE 754 binary16 (float16) ⇄ float32, for storing weights at half the size.
 *
 * float32 → float16 rounds to nearest, ties to even (the IEEE default), so a normal float16 value is within
 * 2^-11 of the float32 value, relatively. Values of magnitude ≥ 65520 (the midpoint between the largest float16,
 * 65504, and 2^16) overflow to ±Infinity; magnitudes below 2^-14 become float16 subnormals (steps of 2^-24, so the
 * absolute error there is at most 2^-25), and those ≤ 2^-25 become ±0 (the sign kept). ±Infinity stays ±Infinity;
 * NaN stays NaN (quiet, with the top 10 bits of its payload). float16 → float32 is exact.
 */

const f32 = new Float32Array(1);
const u32 = new Uint32Array(f32.buffer);

/** The float16 bit pattern nearest to `x` (round to nearest, ties to even). */
export function float16Bits(x: number): number {
  f32[0] = x;
  const b = u32[0];
  const sign = (b >>> 16) & 0x8000;
  const exp = (b >>> 23) & 0xff;
  const mant = b & 0x7fffff;
  if (exp === 0xff) return mant === 0 ? sign | 0x7c00 : sign | 0x7e00 | (mant >>> 13); // ±Infinity; NaN, quiet
  const e = exp - 112; // float16 biased exponent (bias 15 against float32's 127)
  if (e >= 0x1f) return sign | 0x7c00; // ≥ 2^16: overflow
  if (e <= 0) {
    // float16 subnormal (or zero): the value in units of 2^-24 is (1.mant) · 2^(e − 1 + 10) = m24 >> (14 − e)
    const shift = 14 - e;
    if (shift > 24) return sign; // < 2^-25: rounds to zero
    const m24 = mant | 0x800000;
    let m = m24 >>> shift;
    const rest = m24 & ((1 << shift) - 1);
    const half = 1 << (shift - 1);
    if (rest > half || (rest === half && (m & 1) === 1)) m += 1; // may carry into the smallest normal, 0x0400: right
    return sign | m;
  }
  let h = (e << 10) | (mant >>> 13);
  const rest = mant & 0x1fff;
  if (rest > 0x1000 || (rest === 0x1000 && (h & 1) === 1)) h += 1; // a carry into the exponent is right; 0x7c00 = Infinity
  return sign | h;
}

/** The float32 value of a float16 bit pattern (exact). */
export function float16Value(h: number): number {
  const sign = (h & 0x8000) << 16;
  const exp = (h >>> 10) & 0x1f;
  const mant = h & 0x3ff;
  if (exp === 0) return (sign ? -1 : 1) * mant * 2 ** -24; // zero or subnormal
  if (exp === 0x1f) u32[0] = sign | 0x7f800000 | (mant << 13); // Infinity or NaN (payload kept)
  else u32[0] = sign | ((exp + 112) << 23) | (mant << 13);
  return f32[0];
}

let table: Float32Array | undefined;

/** float32 value of every float16 bit pattern (256 KiB, built on first use). */
function decodeTable(): Float32Array {
  if (!table) {
    table = new Float32Array(65536);
    for (let h = 0; h < 65536; h++) table[h] = float16Value(h);
  }
  return table;
}

/** float32 → float16 bit patterns (round to nearest even; see the file comment for overflow, subnormals, NaN). */
export function toFloat16(values: ArrayLike<number>): Uint16Array {
  const out = new Uint16Array(values.length);
  for (let i = 0; i < values.length; i++) out[i] = float16Bits(values[i]);
  return out;
}

/** float16 bit patterns → float32 values (exact). */
export function fromFloat16(bits: Uint16Array): Float32Array {
  const t = decodeTable();
  const out = new Float32Array(bits.length);
  for (let i = 0; i < bits.length; i++) out[i] = t[bits[i]];
  return out;
}

/** Largest finite float16 value. */
export const FLOAT16_MAX = 65504;
/** Smallest positive normal float16 value, 2^-14. */
export const FLOAT16_MIN_NORMAL = 2 ** -14;
