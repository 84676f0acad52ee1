/*
 * Single-precision matrix product for the wasm backend, C[M, N] = op(A)·op(B) (+ bias, + R), op a transpose or not.
 *
 * Blocked for the caches and packed (GotoBLAS scheme): B in panels of KC rows × NC columns laid out in strips of
 * 8 columns, A in strips of MR rows, and an MR×8 register tile (8 accumulators: V8 spills larger tiles) streaming both.
 * Transposes are handled by the packing, which tfjs-backend-wasm cannot do (its XNNPACK path needs untransposed
 * operands, so backprop pays a transpose copy, https://github.com/tensorflow/tfjs/pull/2532); and weights change every
 * training step, so XNNPACK's cached weight packing does not help there. The optional epilogue adds a bias row and a
 * residual matrix as the tiles are stored (a linear layer with its residual connection in one pass).
 *
 * Layouts (row-major): A is [M, K] (ta = 0) or [K, M] (ta = 1); B is [K, N] (tb = 0) or [N, K] (tb = 1); bias [N];
 * R [M, N]. Requires N % 8 == 0. scratch: gemm_scratch(N) floats. Below DIRECT_B_ROWS rows (decoding) an
 * untransposed B is read where it lies. Every path sums each element over k in order from 0, then adds the bias, then
 * R, so a row of C does not depend on how many other rows are computed with it.
 */
#include "simd.h"

#define MR 4
#define KC 256
/* Columns per packed B panel: KC·NC floats (256 KB) stay in a core's L2 (1 MB here) beside A and C. */
#define NC 256

/* Packs rows [k0, k0 + kc), columns [n0, n0 + nc) of op(B) into strips: Bp[(j/8)·kc·8 + k·8 + j%8]. */
static void pack_b(const float *B, int N, int K, int tb, int k0, int kc, int n0, int nc, float *Bp) {
  for (int j0 = 0; j0 < nc; j0 += 8) {
    float *o = Bp + j0 * kc;
    if (!tb) {
      for (int k = 0; k < kc; k++) {
        const float *b = B + (k0 + k) * N + n0 + j0;
        wasm_v128_store(o + 8 * k, wasm_v128_load(b));
        wasm_v128_store(o + 8 * k + 4, wasm_v128_load(b + 4));
      }
    } else {
      for (int c = 0; c < 8; c++) {
        const float *b = B + (n0 + j0 + c) * K + k0;
        for (int k = 0; k < kc; k++) o[8 * k + c] = b[k];
      }
    }
  }
}

/* Packs rows [i0, i0 + mr) and columns [k0, k0 + kc) of op(A): Ap[k·MR + r] (full strips with 4×4 SIMD moves). */
static void pack_a(const float *A, int M, int K, int ta, int i0, int mr, int k0, int kc, float *Ap) {
  if (ta && mr == MR) {
    for (int k = 0; k < kc; k++) wasm_v128_store(Ap + k * MR, wasm_v128_load(A + (k0 + k) * M + i0));
  } else if (ta) {
    for (int k = 0; k < kc; k++) {
      const float *a = A + (k0 + k) * M + i0;
      for (int r = 0; r < mr; r++) Ap[k * MR + r] = a[r];
    }
  } else {
    int k = 0;
    if (mr == MR) {
      const float *a = A + i0 * K + k0;
      for (; k + 4 <= kc; k += 4) {
        const v128_t r0 = wasm_v128_load(a + k), r1 = wasm_v128_load(a + K + k);
        const v128_t r2 = wasm_v128_load(a + 2 * K + k), r3 = wasm_v128_load(a + 3 * K + k);
        const v128_t t0 = wasm_i32x4_shuffle(r0, r1, 0, 4, 1, 5), t1 = wasm_i32x4_shuffle(r2, r3, 0, 4, 1, 5);
        const v128_t t2 = wasm_i32x4_shuffle(r0, r1, 2, 6, 3, 7), t3 = wasm_i32x4_shuffle(r2, r3, 2, 6, 3, 7);
        wasm_v128_store(Ap + k * MR, wasm_i32x4_shuffle(t0, t1, 0, 1, 4, 5));
        wasm_v128_store(Ap + (k + 1) * MR, wasm_i32x4_shuffle(t0, t1, 2, 3, 6, 7));
        wasm_v128_store(Ap + (k + 2) * MR, wasm_i32x4_shuffle(t2, t3, 0, 1, 4, 5));
        wasm_v128_store(Ap + (k + 3) * MR, wasm_i32x4_shuffle(t2, t3, 2, 3, 6, 7));
      }
    }
    for (int r = 0; r < mr; r++) {
      const float *a = A + (i0 + r) * K + k0;
      for (int kk = k; kk < kc; kk++) Ap[kk * MR + r] = a[kk];
    }
  }
}

/*
 * C[r, 0..8) = Σ_k Ap[k·MR + r]·Bp[k·ldb ..] for r < mr (ldb = 8 when B is packed, N when read in place), the sum
 * continuing from C's values when `accumulate` (the later blocks of K), then + bias[0..8) and + R[r·ldc + 0..8) when
 * given (callers pass them with the last block of K only). So each element is summed over k in order from 0 and then
 * gets its bias and residual, as micro_wide does it: a row's result has the same bits whatever M is (a token decoded
 * alone, verified with a few drafts, or fed in a prefill), which keeps greedy speculative decoding token-identical.
 */
INLINE void micro(const int mr, int kc, const float *Ap, const float *Bp, int ldb, float *C, int ldc, int accumulate,
                  const float *bias, const float *R) {
  v128_t acc[MR][2];
  for (int r = 0; r < MR; r++) {
    acc[r][0] = r < mr && accumulate ? wasm_v128_load(C + r * ldc) : wasm_f32x4_splat(0.0f);
    acc[r][1] = r < mr && accumulate ? wasm_v128_load(C + r * ldc + 4) : wasm_f32x4_splat(0.0f);
  }
  for (int k = 0; k < kc; k++) {
    const v128_t b0 = wasm_v128_load(Bp + ldb * k), b1 = wasm_v128_load(Bp + ldb * k + 4);
    for (int r = 0; r < mr; r++) {
      const v128_t a = wasm_v128_load32_splat(Ap + k * MR + r);
      acc[r][0] = MADD(a, b0, acc[r][0]);
      acc[r][1] = MADD(a, b1, acc[r][1]);
    }
  }
  for (int r = 0; r < mr; r++) {
    float *c = C + r * ldc;
    if (bias) {
      acc[r][0] = wasm_f32x4_add(acc[r][0], wasm_v128_load(bias));
      acc[r][1] = wasm_f32x4_add(acc[r][1], wasm_v128_load(bias + 4));
    }
    if (R) {
      acc[r][0] = wasm_f32x4_add(acc[r][0], wasm_v128_load(R + r * ldc));
      acc[r][1] = wasm_f32x4_add(acc[r][1], wasm_v128_load(R + r * ldc + 4));
    }
    wasm_v128_store(c, acc[r][0]);
    wasm_v128_store(c + 4, acc[r][1]);
  }
}

static void micro_rows(int mr, int kc, const float *Ap, const float *Bp, int ldb, float *C, int ldc, int accumulate,
                       const float *bias, const float *R) {
  switch (mr) {
    case 4: micro(4, kc, Ap, Bp, ldb, C, ldc, accumulate, bias, R); break;
    case 3: micro(3, kc, Ap, Bp, ldb, C, ldc, accumulate, bias, R); break;
    case 2: micro(2, kc, Ap, Bp, ldb, C, ldc, accumulate, bias, R); break;
    default: micro(1, kc, Ap, Bp, ldb, C, ldc, accumulate, bias, R); break;
  }
}

/*
 * C[r, 0..4·nv) = Σ_k A[r·lda + k]·B[k·ldb ..] (+ bias, + R) for r < mr ≤ 2 rows, A and B read in place: one or two
 * tokens' products (decoding), which stream the weights once. One row takes 24 columns (6 accumulators): enough
 * independent multiply-adds in flight to hide a fused multiply-add's latency, few enough that V8 keeps them in
 * registers (2 rows × 24 spilled). Against 16-column strips: 25-38 % faster relaxed, 6-27 % faster plain.
 */
INLINE void micro_wide(const int mr, const int nv, int kc, const float *A, int lda, const float *B, int ldb, float *C,
                       int ldc, const float *bias, const float *R) {
  v128_t acc[2][6];
  for (int r = 0; r < 2; r++)
    for (int v = 0; v < 6; v++) acc[r][v] = wasm_f32x4_splat(0.0f);
  for (int k = 0; k < kc; k++) {
    const float *b = B + ldb * k;
    for (int r = 0; r < mr; r++) {
      const v128_t a = wasm_v128_load32_splat(A + r * lda + k);
      for (int v = 0; v < nv; v++) acc[r][v] = MADD(a, wasm_v128_load(b + 4 * v), acc[r][v]);
    }
  }
  for (int r = 0; r < mr; r++) {
    float *c = C + r * ldc;
    for (int v = 0; v < nv; v++) {
      if (bias) acc[r][v] = wasm_f32x4_add(acc[r][v], wasm_v128_load(bias + 4 * v));
      if (R) acc[r][v] = wasm_f32x4_add(acc[r][v], wasm_v128_load(R + r * ldc + 4 * v));
      wasm_v128_store(c + 4 * v, acc[r][v]);
    }
  }
}

/* Below this many rows of C (decoding), an untransposed B is read in place: packing it would cost as much as the product. */
#define DIRECT_B_ROWS 16

/* Offset of an optional pointer (null stays null). */
#define AT(p, off) ((p) ? (p) + (off) : 0)

/*
 * The product for M < DIRECT_B_ROWS: A packed whole (M·KC floats), B read where it lies, one 8-column strip at a time
 * for every row strip, so each strip of B (the weights, usually not in cache) is fetched from memory once.
 */
static void gemm_few_rows(const float *A, const float *B, float *C, int M, int N, int K, int ta, const float *bias,
                          const float *R, float *Ap) {
  if (M == 1 && !ta) {
    int j = 0;
    for (; j + 24 <= N; j += 24) micro_wide(1, 6, K, A, K, B + j, N, C + j, N, AT(bias, j), AT(R, j));
    if (N - j == 16) micro_wide(1, 4, K, A, K, B + j, N, C + j, N, AT(bias, j), AT(R, j));
    if (N - j == 8) micro_wide(1, 2, K, A, K, B + j, N, C + j, N, AT(bias, j), AT(R, j));
    return;
  }
  if (M == 2 && !ta && N % 16 == 0) {
    for (int j = 0; j < N; j += 16) micro_wide(2, 4, K, A, K, B + j, N, C + j, N, AT(bias, j), AT(R, j));
    return;
  }
  for (int k0 = 0; k0 == 0 || k0 < K; k0 += KC) {
    const int kc = K - k0 < KC ? K - k0 : KC;
    const int last = k0 + kc >= K;
    for (int i0 = 0; i0 < M; i0 += MR) pack_a(A, M, K, ta, i0, M - i0 < MR ? M - i0 : MR, k0, kc, Ap + i0 * kc);
    for (int j = 0; j < N; j += 8) {
      for (int i0 = 0; i0 < M; i0 += MR) {
        micro_rows(M - i0 < MR ? M - i0 : MR, kc, Ap + i0 * kc, B + k0 * N + j, N, C + i0 * N + j, N, k0 > 0,
                   last ? AT(bias, j) : 0, last ? AT(R, i0 * N + j) : 0);
      }
    }
  }
}

/* C = op(A)·op(B) (+ bias [N] broadcast over rows, then + R [M, N], each when not null). */
EXPORT(gemm)
void gemm(const float *A, const float *B, float *C, int M, int N, int K, int ta, int tb, const float *bias,
          const float *R, float *scratch) {
  float *Bp = scratch;
  float *Ap = scratch + KC * (N < NC ? N : NC);
  if (!tb && M < DIRECT_B_ROWS) {
    gemm_few_rows(A, B, C, M, N, K, ta, bias, R, Ap);
    return;
  }
  for (int n0 = 0; n0 < N; n0 += NC) {
    const int nc = N - n0 < NC ? N - n0 : NC;
    for (int k0 = 0; k0 == 0 || k0 < K; k0 += KC) {
      const int kc = K - k0 < KC ? K - k0 : KC;
      const int last = k0 + kc >= K;
      pack_b(B, N, K, tb, k0, kc, n0, nc, Bp);
      for (int i0 = 0; i0 < M; i0 += MR) {
        const int mr = M - i0 < MR ? M - i0 : MR;
        pack_a(A, M, K, ta, i0, mr, k0, kc, Ap);
        for (int j = 0; j < nc; j += 8) {
          const int o = i0 * N + n0 + j;
          micro_rows(mr, kc, Ap, Bp + j * kc, 8, C + o, N, k0 > 0, last ? AT(bias, n0 + j) : 0, last ? AT(R, o) : 0);
        }
      }
    }
  }
}

/* Scratch floats gemm needs for N columns. */
EXPORT(gemm_scratch)
int gemm_scratch(int N) { return KC * (N < NC ? N : NC) + KC * (MR > DIRECT_B_ROWS ? MR : DIRECT_B_ROWS); }
