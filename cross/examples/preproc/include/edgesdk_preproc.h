/* edgesdk native pre-processing: letterbox (bilinear, half-pixel centres) + normalise + HWC->CHW.
 *
 * The arithmetic is specified exactly, in float32, so that edgesdk.runtime.native's numpy
 * reference produces bit-identical output (build with -ffp-contract=off, no -ffast-math):
 *
 *   s      = min(out_w / w, out_h / h)                      (double)
 *   new_w  = clamp(floor(w * s + 0.5), 1, out_w)            new_h likewise
 *   pad_l  = (out_w - new_w) / 2, pad_t = (out_h - new_h) / 2   (integer division)
 *   sx(x)  = max(((float)x + 0.5f) * ((float)w / (float)new_w) - 0.5f, 0)
 *   x0     = min((int)sx, w - 1), x1 = min(x0 + 1, w - 1), fx = sx - x0, gx = 1 - fx   (y likewise)
 *   col(i) = src[y0][i] * gy + src[y1][i] * fy              (per channel; vertical first)
 *   v      = col(x0) * gx + col(x1) * fx
 *   dst[k][pad_t + y][pad_l + x] = (v - mean[k]) * (1.0f / std[k])
 *   padding: (pad_value - mean[k]) * (1.0f / std[k])
 *
 * Channel k of the output reads input channel k, or 2-k for k < 3 when bgr_to_rgb is set.
 */
#ifndef EDGESDK_PREPROC_H
#define EDGESDK_PREPROC_H

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#if defined(__GNUC__)
#define EDGESDK_API __attribute__((visibility("default")))
#else
#define EDGESDK_API
#endif

#define EDGESDK_PREPROC_ABI 1

enum {
  EDGESDK_PREPROC_OK = 0,
  EDGESDK_PREPROC_EINVAL = -1, /* a null pointer, a non-positive size, c outside 1..4, std == 0 */
  EDGESDK_PREPROC_ENOMEM = -2
};

/* The ABI version of this library (EDGESDK_PREPROC_ABI); loaders refuse another. */
EDGESDK_API int edgesdk_preproc_abi_version(void);

/* src: h x w x c uint8, rows src_stride bytes apart (>= w * c).
 * dst: c x out_h x out_w float32, contiguous.
 * mean, std: c floats each, in pixel units (e.g. 123.675 / 58.395; or 0 / 255 for [0, 1]).
 * scale_out (may be null): the resize factor s; pad_out (may be null): {pad_l, pad_t, new_w, new_h}.
 * Returns EDGESDK_PREPROC_OK or a negative error. */
EDGESDK_API int edgesdk_letterbox_normalize(const uint8_t* src, int h, int w, int c, int src_stride,
                                            float* dst, int out_h, int out_w, const float* mean,
                                            const float* std, float pad_value, int bgr_to_rgb,
                                            float* scale_out, int* pad_out);

#ifdef __cplusplus
}
#endif
#endif
