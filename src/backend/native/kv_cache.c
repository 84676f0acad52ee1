/*
 * In-place KV cache for the wasm backend (wasm_kv_store.ts): per layer keys stored transposed, kt [B, H, hs, cap], and
 * values v [B, H, cap, hs], the layouts attn_fwd_cached reads without copying. Appending T tokens writes 2·T·C floats;
 * gathering moves only the kept positions.
 */
#include "simd.h"

/*
 * Writes T tokens' keys or values at positions [past, past + T): source element (b, t, h, d) at
 * src[b·sbs + t·sts + h·shs + d]; destination kt [B, H, hs, cap] (transposed = 1) or v [B, H, cap, hs] (0).
 */
EXPORT(kv_write)
void kv_write(const float *src, int sbs, int sts, int shs, int B, int T, int H, int hs, float *dst, int cap, int past,
              int transposed) {
  for (int b = 0; b < B; b++) {
    for (int h = 0; h < H; h++) {
      float *head = dst + (b * H + h) * hs * cap;
      for (int t = 0; t < T; t++) {
        const float *s = src + b * sbs + t * sts + h * shs;
        if (transposed) {
          for (int d = 0; d < hs; d++) head[d * cap + past + t] = s[d];
        } else {
          for (int d = 0; d < hs; d++) head[(past + t) * hs + d] = s[d];
        }
      }
    }
  }
}

/*
 * Keeps positions idx[0..n) (in that order) as positions [0, n) of every segment of buf: `segments` runs of cap
 * positions × width floats (kt: B·H·hs segments of width 1; v: B·H segments of width hs). tmp: n·width floats.
 */
EXPORT(kv_gather)
void kv_gather(float *buf, int segments, int width, int cap, const int *idx, int n, float *tmp) {
  for (int s = 0; s < segments; s++) {
    float *seg = buf + s * cap * width;
    for (int i = 0; i < n; i++)
      for (int w = 0; w < width; w++) tmp[i * width + w] = seg[idx[i] * width + w];
    for (int i = 0; i < n * width; i++) seg[i] = tmp[i];
  }
}
