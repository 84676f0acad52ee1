/*
 * Shared helpers of the mtp-lab wasm kernels: SIMD exp/sigmoid and the register-blocked matrix tiles the attention
 * kernels are built from. Header-only, everything inlined: the module must not use its shadow stack or static data,
 * because it runs inside tfjs-backend-wasm's memory (see build.sh).
 */
#ifndef MTP_SIMD_H
#define MTP_SIMD_H

#include <wasm_simd128.h>

#define INLINE static inline __attribute__((always_inline))
#define EXPORT(name) __attribute__((export_name(#name)))

/*
 * a·b + c for 4 lanes, the multiply-add of every hot loop. Built with -mrelaxed-simd (kernels_relaxed.wasm) it is one
 * f32x4.relaxed_madd, which the engine runs as a fused multiply-add (one rounding) where the CPU has one (x64 with
 * FMA3, ARM64) and as a multiply then an add otherwise; built without (kernels.wasm) it is always the two rounded
 * operations. Either way each call site's arithmetic does not depend on how many rows a kernel is given, so a token's
 * logits keep the same bits whatever the step's shape, within one module.
 */
#ifdef __wasm_relaxed_simd__
#define MADD(a, b, c) wasm_f32x4_relaxed_madd((a), (b), (c))
#else
#define MADD(a, b, c) wasm_f32x4_add(wasm_f32x4_mul((a), (b)), (c))
#endif

/*
 * exp(x) for 4 lanes, Cephes expf: x = n·ln2 + r with |r| ≤ ln2/2, a degree-6 polynomial for exp(r), then 2ⁿ through
 * the exponent bits. Relative error ≈ 2e-7. Inputs below -87.34 (where expf leaves the normal range) give exactly 0,
 * so that masked attention entries (score - 1e9) vanish as in the reference; inputs above 88 are clamped to 88.
 * n is rounded by adding 1.5·2²³ (+127, the exponent bias), which leaves n + 127 in the low mantissa bits: cheaper
 * than f32x4.nearest and i32x4.trunc_sat, which V8 expands into long sequences on x64 (as it does f32x4.min/max,
 * hence pmin/pmax, whose NaN handling does not matter here). The polynomial's Horner steps are MADDs: in the relaxed
 * build that makes bias + GELU about a fifth faster; the exact zero below -87.34 is kept either way.
 */
INLINE v128_t vexp(v128_t x) {
  const v128_t lo = wasm_f32x4_splat(-87.336548f);
  const v128_t under = wasm_f32x4_lt(x, lo);
  x = wasm_f32x4_pmin(wasm_f32x4_pmax(x, lo), wasm_f32x4_splat(88.0f));
  const v128_t magic = wasm_f32x4_splat(12582912.0f + 127.0f);
  const v128_t t = wasm_f32x4_add(wasm_f32x4_mul(x, wasm_f32x4_splat(1.44269504088896341f)), magic);
  const v128_t n = wasm_f32x4_sub(t, magic);
  v128_t r = wasm_f32x4_sub(x, wasm_f32x4_mul(n, wasm_f32x4_splat(0.693359375f)));
  r = wasm_f32x4_add(r, wasm_f32x4_mul(n, wasm_f32x4_splat(2.12194440e-4f)));
  v128_t p = wasm_f32x4_splat(1.9875691500e-4f);
  p = MADD(p, r, wasm_f32x4_splat(1.3981999507e-3f));
  p = MADD(p, r, wasm_f32x4_splat(8.3334519073e-3f));
  p = MADD(p, r, wasm_f32x4_splat(4.1665795894e-2f));
  p = MADD(p, r, wasm_f32x4_splat(1.6666665459e-1f));
  p = MADD(p, r, wasm_f32x4_splat(5.0000001201e-1f));
  v128_t y = wasm_f32x4_add(MADD(p, wasm_f32x4_mul(r, r), r), wasm_f32x4_splat(1.0f));
  return wasm_v128_andnot(wasm_f32x4_mul(y, wasm_i32x4_shl(t, 23)), under);
}

INLINE float sexp(float x) { return wasm_f32x4_extract_lane(vexp(wasm_f32x4_splat(x)), 0); }

/* Logistic sigmoid 1 / (1 + exp(-x)) for 4 lanes. */
INLINE v128_t vsigmoid(v128_t x) {
  const v128_t one = wasm_f32x4_splat(1.0f);
  return wasm_f32x4_div(one, wasm_f32x4_add(one, vexp(wasm_f32x4_neg(x))));
}

INLINE float hsum(v128_t v) {
  v = wasm_f32x4_add(v, wasm_i32x4_shuffle(v, v, 2, 3, 0, 1));
  v = wasm_f32x4_add(v, wasm_i32x4_shuffle(v, v, 1, 0, 3, 2));
  return wasm_f32x4_extract_lane(v, 0);
}

INLINE float hmax(v128_t v) {
  v = wasm_f32x4_pmax(v, wasm_i32x4_shuffle(v, v, 2, 3, 0, 1));
  v = wasm_f32x4_pmax(v, wasm_i32x4_shuffle(v, v, 1, 0, 3, 2));
  return wasm_f32x4_extract_lane(v, 0);
}

/*
 * Register tiles of C = alpha · A·B for mr ≤ 4 rows and 4·nv ≤ 8 columns, summing over k in [k0, k1).
 * mr and nv are compile-time constants at every call site, so the accumulators live in registers.
 *  - nn: A[r, k] = A[r·lda + k] (rows of A are rows of C);
 *  - tn: A[r, k] = A[k·lda + r] (columns of A are rows of C: Aᵀ·B without a transposed copy).
 * B[k, c] = B[k·ldb + c] in both. Strides are in floats.
 */
INLINE void tile(const int tn, const int mr, const int nv, int k0, int k1, const float *A, int lda, const float *B,
                 int ldb, float *C, int ldc, float alpha) {
  v128_t acc[4][2];
  for (int r = 0; r < 4; r++)
    for (int v = 0; v < 2; v++) acc[r][v] = wasm_f32x4_splat(0.0f);
  for (int k = k0; k < k1; k++) {
    const float *b = B + k * ldb;
    const v128_t b0 = wasm_v128_load(b);
    const v128_t b1 = nv > 1 ? wasm_v128_load(b + 4) : b0;
    for (int r = 0; r < mr; r++) {
      const float *a = tn ? A + k * lda + r : A + r * lda + k;
      const v128_t av = wasm_v128_load32_splat(a);
      acc[r][0] = MADD(av, b0, acc[r][0]);
      if (nv > 1) acc[r][1] = MADD(av, b1, acc[r][1]);
    }
  }
  const v128_t s = wasm_f32x4_splat(alpha);
  for (int r = 0; r < mr; r++) {
    wasm_v128_store(C + r * ldc, wasm_f32x4_mul(acc[r][0], s));
    if (nv > 1) wasm_v128_store(C + r * ldc + 4, wasm_f32x4_mul(acc[r][1], s));
  }
}

/* One strip of mr rows times N columns (N a multiple of 4) in tiles of 8 columns, then one of 4 if left. */
INLINE void strip(const int tn, const int mr, int N, int k0, int k1, const float *A, int lda, const float *B, int ldb,
                  float *C, int ldc, float alpha) {
  int c = 0;
  for (; c + 8 <= N; c += 8) tile(tn, mr, 2, k0, k1, A, lda, B + c, ldb, C + c, ldc, alpha);
  if (c < N) tile(tn, mr, 1, k0, k1, A, lda, B + c, ldb, C + c, ldc, alpha);
}

/* strip() for a row count known only at run time (1..4). */
INLINE void strip_rows(const int tn, int mr, int N, int k0, int k1, const float *A, int lda, const float *B, int ldb,
                       float *C, int ldc, float alpha) {
  switch (mr) {
    case 4: strip(tn, 4, N, k0, k1, A, lda, B, ldb, C, ldc, alpha); break;
    case 3: strip(tn, 3, N, k0, k1, A, lda, B, ldb, C, ldc, alpha); break;
    case 2: strip(tn, 2, N, k0, k1, A, lda, B, ldb, C, ldc, alpha); break;
    default: strip(tn, 1, N, k0, k1, A, lda, B, ldb, C, ldc, alpha); break;
  }
}

#endif
