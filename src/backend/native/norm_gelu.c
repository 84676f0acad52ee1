/*
 * Row-wise kernels of the transformer block for the wasm backend, each replacing a chain of small tfjs ops (and their
 * gradients) by one pass over the data:
 *  - LayerNorm over the last axis, y = (x - mean)·rstd·g + b with rstd = 1/sqrt(var + eps), and its backward;
 *  - bias + GELU, out = z·σ(1.702·z) with z = h + bias (the sigmoid form of the PyTorch twin), and its backward;
 *  - column sums (the gradient of a bias broadcast over rows).
 * Matrices are row-major [N, C]; per-column gradients are summed over rows.
 */
#include "simd.h"

EXPORT(col_sum)
void col_sum(const float *x, float *out, int N, int C) {
  int c = 0;
  for (; c + 4 <= C; c += 4) {
    v128_t a0 = wasm_f32x4_splat(0.0f), a1 = a0;
    int n = 0;
    for (; n + 2 <= N; n += 2) {
      a0 = wasm_f32x4_add(a0, wasm_v128_load(x + n * C + c));
      a1 = wasm_f32x4_add(a1, wasm_v128_load(x + (n + 1) * C + c));
    }
    if (n < N) a0 = wasm_f32x4_add(a0, wasm_v128_load(x + n * C + c));
    wasm_v128_store(out + c, wasm_f32x4_add(a0, a1));
  }
  for (; c < C; c++) {
    float s = 0.0f;
    for (int n = 0; n < N; n++) s += x[n * C + c];
    out[c] = s;
  }
}

/* stats: [N, 2] = (mean, rstd) per row, kept for the backward. */
EXPORT(ln_fwd)
void ln_fwd(const float *x, const float *g, const float *b, float *y, float *stats, int N, int C, float eps) {
  const float invC = 1.0f / (float)C;
  for (int n = 0; n < N; n++) {
    const float *xr = x + n * C;
    float *yr = y + n * C;
    v128_t vs = wasm_f32x4_splat(0.0f);
    int c = 0;
    for (; c + 4 <= C; c += 4) vs = wasm_f32x4_add(vs, wasm_v128_load(xr + c));
    float sum = hsum(vs);
    for (; c < C; c++) sum += xr[c];
    const float mean = sum * invC;
    const v128_t vm = wasm_f32x4_splat(mean);
    vs = wasm_f32x4_splat(0.0f);
    for (c = 0; c + 4 <= C; c += 4) {
      const v128_t d = wasm_f32x4_sub(wasm_v128_load(xr + c), vm);
      vs = wasm_f32x4_add(vs, wasm_f32x4_mul(d, d));
    }
    float ss = hsum(vs);
    for (; c < C; c++) ss += (xr[c] - mean) * (xr[c] - mean);
    const float rstd = 1.0f / __builtin_sqrtf(ss * invC + eps);
    const v128_t vr = wasm_f32x4_splat(rstd);
    for (c = 0; c + 4 <= C; c += 4) {
      const v128_t xh = wasm_f32x4_mul(wasm_f32x4_sub(wasm_v128_load(xr + c), vm), vr);
      wasm_v128_store(yr + c, wasm_f32x4_add(wasm_f32x4_mul(xh, wasm_v128_load(g + c)), wasm_v128_load(b + c)));
    }
    for (; c < C; c++) yr[c] = (xr[c] - mean) * rstd * g[c] + b[c];
    stats[2 * n] = mean;
    stats[2 * n + 1] = rstd;
  }
}

/* dx = rstd·(dxh - mean(dxh) - xh·mean(dxh·xh)) with xh = (x - mean)·rstd, dxh = dy·g; dg = Σ dy·xh, db = Σ dy. */
EXPORT(ln_bwd)
void ln_bwd(const float *dy, const float *x, const float *g, const float *stats, float *dx, float *dg, float *db, int N,
            int C) {
  const float invC = 1.0f / (float)C;
  for (int c = 0; c < C; c++) dg[c] = db[c] = 0.0f;
  for (int n = 0; n < N; n++) {
    const float *xr = x + n * C, *dyr = dy + n * C;
    float *dxr = dx + n * C;
    const float mean = stats[2 * n], rstd = stats[2 * n + 1];
    const v128_t vm = wasm_f32x4_splat(mean), vr = wasm_f32x4_splat(rstd);
    v128_t va = wasm_f32x4_splat(0.0f), vb = va;
    int c = 0;
    for (; c + 4 <= C; c += 4) {
      const v128_t xh = wasm_f32x4_mul(wasm_f32x4_sub(wasm_v128_load(xr + c), vm), vr);
      const v128_t d = wasm_v128_load(dyr + c);
      const v128_t dxh = wasm_f32x4_mul(d, wasm_v128_load(g + c));
      va = wasm_f32x4_add(va, dxh);
      vb = wasm_f32x4_add(vb, wasm_f32x4_mul(dxh, xh));
      wasm_v128_store(dg + c, wasm_f32x4_add(wasm_v128_load(dg + c), wasm_f32x4_mul(d, xh)));
      wasm_v128_store(db + c, wasm_f32x4_add(wasm_v128_load(db + c), d));
    }
    float sa = hsum(va), sb = hsum(vb);
    for (; c < C; c++) {
      const float xh = (xr[c] - mean) * rstd, dxh = dyr[c] * g[c];
      sa += dxh;
      sb += dxh * xh;
      dg[c] += dyr[c] * xh;
      db[c] += dyr[c];
    }
    const float ma = sa * invC, mb = sb * invC;
    const v128_t vma = wasm_f32x4_splat(ma), vmb = wasm_f32x4_splat(mb);
    for (c = 0; c + 4 <= C; c += 4) {
      const v128_t xh = wasm_f32x4_mul(wasm_f32x4_sub(wasm_v128_load(xr + c), vm), vr);
      const v128_t dxh = wasm_f32x4_mul(wasm_v128_load(dyr + c), wasm_v128_load(g + c));
      const v128_t t = wasm_f32x4_sub(wasm_f32x4_sub(dxh, vma), wasm_f32x4_mul(xh, vmb));
      wasm_v128_store(dxr + c, wasm_f32x4_mul(t, vr));
    }
    for (; c < C; c++) {
      const float xh = (xr[c] - mean) * rstd, dxh = dyr[c] * g[c];
      dxr[c] = (dxh - ma - xh * mb) * rstd;
    }
  }
}

#define GELU_K 1.702f

EXPORT(bias_gelu_fwd)
void bias_gelu_fwd(const float *h, const float *bias, float *out, int N, int F) {
  const v128_t k = wasm_f32x4_splat(GELU_K);
  for (int n = 0; n < N; n++) {
    const float *hr = h + n * F;
    float *o = out + n * F;
    int c = 0;
    for (; c + 4 <= F; c += 4) {
      const v128_t z = wasm_f32x4_add(wasm_v128_load(hr + c), wasm_v128_load(bias + c));
      wasm_v128_store(o + c, wasm_f32x4_mul(z, vsigmoid(wasm_f32x4_mul(z, k))));
    }
    for (; c < F; c++) {
      const float z = hr[c] + bias[c];
      o[c] = z * wasm_f32x4_extract_lane(vsigmoid(wasm_f32x4_splat(z * GELU_K)), 0);
    }
  }
}

/* dz = dout·(s + 1.702·z·s·(1 - s)) with s = σ(1.702·z); dh = dz, dbias = Σ dz over rows. */
EXPORT(bias_gelu_bwd)
void bias_gelu_bwd(const float *dout, const float *h, const float *bias, float *dh, float *dbias, int N, int F) {
  const v128_t k = wasm_f32x4_splat(GELU_K), one = wasm_f32x4_splat(1.0f);
  for (int c = 0; c < F; c++) dbias[c] = 0.0f;
  for (int n = 0; n < N; n++) {
    const float *hr = h + n * F, *dr = dout + n * F;
    float *o = dh + n * F;
    int c = 0;
    for (; c + 4 <= F; c += 4) {
      const v128_t z = wasm_f32x4_add(wasm_v128_load(hr + c), wasm_v128_load(bias + c));
      const v128_t s = vsigmoid(wasm_f32x4_mul(z, k));
      const v128_t ds = wasm_f32x4_mul(wasm_f32x4_mul(k, z), wasm_f32x4_mul(s, wasm_f32x4_sub(one, s)));
      const v128_t dz = wasm_f32x4_mul(wasm_v128_load(dr + c), wasm_f32x4_add(s, ds));
      wasm_v128_store(o + c, dz);
      wasm_v128_store(dbias + c, wasm_f32x4_add(wasm_v128_load(dbias + c), dz));
    }
    for (; c < F; c++) {
      const float z = hr[c] + bias[c];
      const float s = wasm_f32x4_extract_lane(vsigmoid(wasm_f32x4_splat(z * GELU_K)), 0);
      o[c] = dr[c] * (s + GELU_K * z * s * (1.0f - s));
      dbias[c] += o[c];
    }
  }
}
