/*
 * Fused multi-head attention for the wasm backend: scores = scale·Q·Kᵀ + mask, P = softmax(scores), Y = P·V, and its
 * gradient, in one call over every (batch, head) instead of ~10 tfjs ops whose batched matMuls take tfjs-backend-wasm's
 * slow generic loop (https://github.com/tensorflow/tfjs/pull/2532).
 *
 * Q, K, V and Y are read and written in place through strides, so the caller passes the fused QKV projection
 * [B·T, 3C] without splitting heads: element (b, h, t, d) of Q lives at q[b·qbs + t·qs + h·hs + d]; K and V share
 * the strides kbs, ks; Y uses ybs, ys. Decoding reads K and V from the head-major KV cache of kv_cache.c instead.
 *
 * Masked columns are skipped: per row i, columns whose mask lies more than SKIP below the row's largest mask value get
 * P = 0 without computing their scores. exp(s - max) is exactly 0 in float32 for them (as in the reference softmax)
 * whenever scores stay below SKIP - 88 in magnitude, so the result is the reference's; only the work shrinks
 * (causal masks halve it). Rows are processed in blocks of 4 over the union of their column ranges.
 */
#include "simd.h"

#define SKIP 1e6f

/* Per row of the mask [T, S]: the column range [lo, hi) outside which every mask value is negligible (see SKIP). */
static void row_ranges(const float *mask, int T, int S, int *lo, int *hi) {
  for (int i = 0; i < T; i++) {
    const float *m = mask + i * S;
    float top = m[0];
    for (int j = 1; j < S; j++) top = m[j] > top ? m[j] : top;
    const float cut = top - SKIP;
    int a = 0, b = S;
    while (a < S - 1 && !(m[a] > cut)) a++;
    while (b > a + 1 && !(m[b - 1] > cut)) b--;
    lo[i] = a;
    hi[i] = b;
  }
}

/* Union of the column ranges of rows [i0, i0 + mr). */
static void block_range(const int *lo, const int *hi, int i0, int mr, int *blo, int *bhi) {
  int a = lo[i0], b = hi[i0];
  for (int r = 1; r < mr; r++) {
    a = lo[i0 + r] < a ? lo[i0 + r] : a;
    b = hi[i0 + r] > b ? hi[i0 + r] : b;
  }
  *blo = a;
  *bhi = b;
}

/* Per block of 4 columns [j0, j0 + 4): the rows [clo, chi) whose column range meets it (for dK, dV). */
static void column_ranges(const int *lo, const int *hi, int T, int S, int *clo, int *chi) {
  for (int j0 = 0, c = 0; j0 < S; j0 += 4, c++) {
    int a = T, b = 0;
    for (int i = 0; i < T; i++) {
      if (lo[i] < j0 + 4 && hi[i] > j0) {
        a = i < a ? i : a;
        b = i + 1;
      }
    }
    clo[c] = a < b ? a : 0;
    chi[c] = a < b ? b : 0;
  }
}

/* dst[d·Sp + j] = src[j·stride + d] for j < S, zero for S ≤ j < Sp (hs a multiple of 4): 4×4 blocks through SIMD. */
static void transpose_rows(const float *src, int stride, int S, int hs, int Sp, float *dst) {
  int j = 0;
  for (; j + 4 <= S; j += 4) {
    const float *s0 = src + j * stride;
    for (int d = 0; d < hs; d += 4) {
      const v128_t r0 = wasm_v128_load(s0 + d), r1 = wasm_v128_load(s0 + stride + d);
      const v128_t r2 = wasm_v128_load(s0 + 2 * stride + d), r3 = wasm_v128_load(s0 + 3 * stride + d);
      const v128_t t0 = wasm_i32x4_shuffle(r0, r1, 0, 4, 1, 5), t1 = wasm_i32x4_shuffle(r2, r3, 0, 4, 1, 5);
      const v128_t t2 = wasm_i32x4_shuffle(r0, r1, 2, 6, 3, 7), t3 = wasm_i32x4_shuffle(r2, r3, 2, 6, 3, 7);
      wasm_v128_store(dst + d * Sp + j, wasm_i32x4_shuffle(t0, t1, 0, 1, 4, 5));
      wasm_v128_store(dst + (d + 1) * Sp + j, wasm_i32x4_shuffle(t0, t1, 2, 3, 6, 7));
      wasm_v128_store(dst + (d + 2) * Sp + j, wasm_i32x4_shuffle(t2, t3, 0, 1, 4, 5));
      wasm_v128_store(dst + (d + 3) * Sp + j, wasm_i32x4_shuffle(t2, t3, 2, 3, 6, 7));
    }
  }
  for (int d = 0; d < hs; d++) {
    for (int jj = j; jj < S; jj++) dst[d * Sp + jj] = src[jj * stride + d];
    for (int jj = S; jj < Sp; jj++) dst[d * Sp + jj] = 0.0f;
  }
}

/* Lanes j..j+3 that lie in [lo, hi), as an all-ones/zero mask. */
INLINE v128_t lanes_in(int j, int lo, int hi) {
  const v128_t idx = wasm_i32x4_add(wasm_i32x4_splat(j), wasm_i32x4_make(0, 1, 2, 3));
  return wasm_v128_and(wasm_i32x4_ge(idx, wasm_i32x4_splat(lo)), wasm_i32x4_lt(idx, wasm_i32x4_splat(hi)));
}

/* Mask values m[j..j+3] for j < S, reading none at or past S (0 there: those lanes lie outside the row's range). */
INLINE v128_t load_mask(const float *m, int j, int S) {
  if (j + 4 <= S) return wasm_v128_load(m + j);
  return wasm_f32x4_make(m[j], j + 1 < S ? m[j + 1] : 0.0f, j + 2 < S ? m[j + 2] : 0.0f, 0.0f);
}

/*
 * Row softmax in place: p holds scale·q·k on [lo & ~3, round4(hi)); becomes softmax(p + m) on [lo, hi) and 0 on the
 * rest of [0, Sp). Whole 4-lane chunks with the lanes outside [lo, hi) masked, so short rows need no scalar tail.
 */
static void softmax_row(float *p, const float *m, int lo, int hi, int S, int Sp) {
  const int j0 = lo & ~3, j1 = (hi + 3) & ~3;
  const v128_t ninf = wasm_f32x4_splat(-3.4e38f);
  v128_t vmax = ninf;
  for (int j = j0; j < j1; j += 4) {
    const v128_t in = lanes_in(j, lo, hi);
    const v128_t s = wasm_v128_bitselect(wasm_f32x4_add(wasm_v128_load(p + j), load_mask(m, j, S)), ninf, in);
    wasm_v128_store(p + j, s);
    vmax = wasm_f32x4_pmax(vmax, s);
  }
  const v128_t vtop = wasm_f32x4_splat(hmax(vmax));
  v128_t vsum = wasm_f32x4_splat(0.0f);
  for (int j = j0; j < j1; j += 4) {
    const v128_t e = wasm_v128_and(vexp(wasm_f32x4_sub(wasm_v128_load(p + j), vtop)), lanes_in(j, lo, hi));
    wasm_v128_store(p + j, e);
    vsum = wasm_f32x4_add(vsum, e);
  }
  const v128_t vinv = wasm_f32x4_splat(1.0f / hsum(vsum));
  for (int j = j0; j < j1; j += 4) wasm_v128_store(p + j, wasm_f32x4_mul(wasm_v128_load(p + j), vinv));
  const v128_t zero = wasm_f32x4_splat(0.0f);
  for (int j = 0; j < j0; j += 4) wasm_v128_store(p + j, zero);
  for (int j = j1; j < Sp; j += 4) wasm_v128_store(p + j, zero);
}

/*
 * Softmax backward for one row in place: d holds dP on [lo & ~3, round4(hi)); becomes scale·P⊙(dP - Σ P⊙dP) there
 * (P is 0 outside [lo, hi)) and 0 on the rest of [0, Sp).
 */
static void softmax_grad_row(float *d, const float *p, int lo, int hi, int Sp, float scale) {
  const int j0 = lo & ~3, j1 = (hi + 3) & ~3;
  v128_t vdot = wasm_f32x4_splat(0.0f);
  for (int j = j0; j < j1; j += 4) vdot = wasm_f32x4_add(vdot, wasm_f32x4_mul(wasm_v128_load(p + j), wasm_v128_load(d + j)));
  const v128_t vd = wasm_f32x4_splat(hsum(vdot)), vs = wasm_f32x4_splat(scale);
  for (int j = j0; j < j1; j += 4) {
    const v128_t g = wasm_f32x4_mul(wasm_v128_load(p + j), wasm_f32x4_sub(wasm_v128_load(d + j), vd));
    wasm_v128_store(d + j, wasm_f32x4_mul(g, vs));
  }
  const v128_t zero = wasm_f32x4_splat(0.0f);
  for (int j = 0; j < j0; j += 4) wasm_v128_store(d + j, zero);
  for (int j = j1; j < Sp; j += 4) wasm_v128_store(d + j, zero);
}

static int round4(int n) { return (n + 3) & ~3; }

/* dst[r·hs + d] = src[r·stride + d]: one head's rows made contiguous, so that products stream them from L1. */
static void copy_rows(const float *src, int stride, int rows, int hs, float *dst) {
  for (int r = 0; r < rows; r++)
    for (int d = 0; d < hs; d += 4) wasm_v128_store(dst + r * hs + d, wasm_v128_load(src + r * stride + d));
}

/*
 * One head's forward: Q rows qh (stride qs) against K given transposed, KT [hs, ≥ round4(S)] (row stride ktrs), and
 * V rows (stride vs) → Y rows yh (stride ys); Ph [T, Sp] receives the probabilities.
 */
static void attend_head(const float *qh, int qs, const float *KT, int ktrs, const float *vh, int vs, float *yh, int ys,
                        float *Ph, int Sp, const float *mask, const int *lo, const int *hi, int T, int S, int hs,
                        float scale) {
  for (int i0 = 0; i0 < T; i0 += 4) {
    const int mr = T - i0 < 4 ? T - i0 : 4;
    int blo, bhi;
    block_range(lo, hi, i0, mr, &blo, &bhi);
    const int c0 = blo & ~3, c1 = round4(bhi);
    float *Pi = Ph + i0 * Sp;
    strip_rows(0, mr, c1 - c0, 0, hs, qh + i0 * qs, qs, KT + c0, ktrs, Pi + c0, Sp, scale);
    for (int r = 0; r < mr; r++) softmax_row(Pi + r * Sp, mask + (i0 + r) * S, lo[i0 + r], hi[i0 + r], S, Sp);
    strip_rows(0, mr, hs, blo, bhi, Pi, Sp, vh, vs, yh + i0 * ys, ys, 1.0f);
  }
}

/*
 * Forward over K, V laid out like Q (the fused projection). P receives the probabilities [B, H, T, Sp] with
 * Sp = S rounded up to a multiple of 4, for the backward pass. scratch: hs·Sp + S·hs floats, then 2T ints.
 */
EXPORT(attn_fwd)
void attn_fwd(const float *q, const float *k, const float *v, float *y, float *P, const float *mask, int B, int H, int T,
              int S, int hs, int qbs, int qs, int kbs, int ks, int ybs, int ys, float scale, float *scratch) {
  const int Sp = round4(S);
  float *KT = scratch;
  float *Vh = KT + hs * Sp;
  int *lo = (int *)(Vh + S * hs);
  int *hi = lo + T;
  row_ranges(mask, T, S, lo, hi);
  for (int b = 0; b < B; b++) {
    for (int h = 0; h < H; h++) {
      const float *kh = k + b * kbs + h * hs, *vh = v + b * kbs + h * hs;
      transpose_rows(kh, ks, S, hs, Sp, KT);
      copy_rows(vh, ks, S, hs, Vh);
      attend_head(q + b * qbs + h * hs, qs, KT, Sp, Vh, hs, y + b * ybs + h * hs, ys, P + (b * H + h) * T * Sp, Sp,
                  mask, lo, hi, T, S, hs, scale);
    }
  }
}

/*
 * Forward of T new tokens over a KV cache with capacity cap: keys transposed, kt [B, H, hs, cap], values v
 * [B, H, cap, hs], S ≤ cap positions valid (entries up to round4(S) are read and must be finite). Q and Y as in
 * attn_fwd. scratch: T·Sp floats, then 2T ints.
 */
EXPORT(attn_fwd_cached)
void attn_fwd_cached(const float *q, const float *kt, const float *v, float *y, const float *mask, int B, int H, int T,
                     int S, int hs, int cap, int qbs, int qs, int ybs, int ys, float scale, float *scratch) {
  const int Sp = round4(S);
  float *Ph = scratch;
  int *lo = (int *)(Ph + T * Sp);
  int *hi = lo + T;
  row_ranges(mask, T, S, lo, hi);
  for (int b = 0; b < B; b++) {
    for (int h = 0; h < H; h++) {
      const int head = (b * H + h) * hs * cap;
      attend_head(q + b * qbs + h * hs, qs, kt + head, cap, v + head, hs, y + b * ybs + h * hs, ys, Ph, Sp, mask, lo,
                  hi, T, S, hs, scale);
    }
  }
}

/*
 * Backward: dQ, dK, dV (same layouts as Q, K, V) from dY (layout of Y) and the forward's P.
 * scratch: hs·Sp + T·Sp + 2·T·hs + S·hs floats, then 2T + 2·ceil(S/4) ints.
 */
EXPORT(attn_bwd)
void attn_bwd(const float *dy, const float *P, const float *q, const float *k, const float *v, float *dq, float *dk,
              float *dv, const float *mask, int B, int H, int T, int S, int hs, int qbs, int qs, int kbs, int ks, int ybs,
              int ys, float scale, float *scratch) {
  const int Sp = round4(S);
  float *VT = scratch;
  float *dS = VT + hs * Sp;
  float *Qh = dS + T * Sp;
  float *dYh = Qh + T * hs;
  float *Kh = dYh + T * hs;
  int *lo = (int *)(Kh + S * hs);
  int *hi = lo + T;
  int *clo = hi + T;
  int *chi = clo + (S + 3) / 4;
  row_ranges(mask, T, S, lo, hi);
  column_ranges(lo, hi, T, S, clo, chi);
  for (int b = 0; b < B; b++) {
    for (int h = 0; h < H; h++) {
      const int qo = b * qbs + h * hs, ko = b * kbs + h * hs, yo = b * ybs + h * hs;
      const float *Ph = P + (b * H + h) * T * Sp;
      transpose_rows(v + ko, ks, S, hs, Sp, VT);
      copy_rows(q + qo, qs, T, hs, Qh);
      copy_rows(dy + yo, ys, T, hs, dYh);
      copy_rows(k + ko, ks, S, hs, Kh);
      for (int i0 = 0; i0 < T; i0 += 4) {
        const int mr = T - i0 < 4 ? T - i0 : 4;
        int blo, bhi;
        block_range(lo, hi, i0, mr, &blo, &bhi);
        const int c0 = blo & ~3, c1 = round4(bhi);
        float *dSi = dS + i0 * Sp;
        strip_rows(0, mr, c1 - c0, 0, hs, dYh + i0 * hs, hs, VT + c0, Sp, dSi + c0, Sp, 1.0f);
        for (int r = 0; r < mr; r++) softmax_grad_row(dSi + r * Sp, Ph + (i0 + r) * Sp, lo[i0 + r], hi[i0 + r], Sp, scale);
        strip_rows(0, mr, hs, blo, bhi, dSi, Sp, Kh, hs, dq + qo + i0 * qs, qs, 1.0f);
      }
      for (int j0 = 0, c = 0; j0 < S; j0 += 4, c++) {
        const int mr = S - j0 < 4 ? S - j0 : 4;
        strip_rows(1, mr, hs, clo[c], chi[c], dS + j0, Sp, Qh, hs, dk + ko + j0 * ks, ks, 1.0f);
        strip_rows(1, mr, hs, clo[c], chi[c], Ph + j0, Sp, dYh, hs, dv + ko + j0 * ks, ks, 1.0f);
      }
    }
  }
}
