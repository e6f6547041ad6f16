// Letterbox + normalise + HWC->CHW, written so that the hot loops vectorise (NEON on ARM).
//
// Per output row, two passes:
//  1. vertical: blend the two source rows it falls between, over the whole interleaved HWC row
//     (w * c contiguous bytes -> floats). Contiguous and branch-free: NEON intrinsics widen
//     16 bytes at a time to floats and blend them 4 lanes at a time.
//  2. horizontal: for each output pixel, blend the two columns it falls between, normalise and
//     scatter the channels into the CHW planes. This is the gather; doing it after the vertical
//     pass means it runs once per output row instead of once per source row touched.
// The exact arithmetic (the same in edgesdk.runtime.native's numpy reference) is in
// include/edgesdk_preproc.h. Build with -ffp-contract=off: a fused multiply-add would round once
// where the reference rounds twice.
#include "edgesdk_preproc.h"

#include <algorithm>
#include <cmath>
#include <new>
#include <utility>
#include <vector>

#if defined(__ARM_NEON) || defined(__ARM_NEON__)
#include <arm_neon.h>
#define EDGESDK_USE_NEON 1
#endif

namespace {

struct Axis {
  std::vector<int> i0, i1;  // source indices, already multiplied by the element stride
  std::vector<float> f, g;  // weights of i1 and i0 (g = 1 - f)
};

Axis make_axis(int n_out, int n_in, int stride) {
  Axis a;
  a.i0.resize(n_out);
  a.i1.resize(n_out);
  a.f.resize(n_out);
  a.g.resize(n_out);
  const float ratio = (float)n_in / (float)n_out;
  for (int x = 0; x < n_out; ++x) {
    float s = ((float)x + 0.5f) * ratio - 0.5f;
    if (s < 0.0f) s = 0.0f;
    int i0 = (int)s;
    if (i0 > n_in - 1) i0 = n_in - 1;
    const int i1 = std::min(i0 + 1, n_in - 1);
    const float f = s - (float)i0;
    a.i0[x] = i0 * stride;
    a.i1[x] = i1 * stride;
    a.f[x] = f;
    a.g[x] = 1.0f - f;
  }
  return a;
}

// o[j] = (float)top[j] * gy + (float)bot[j] * fy over n interleaved bytes.
void vertical(const uint8_t* top, const uint8_t* bot, float gy, float fy, float* o, int n) {
  int j = 0;
#ifdef EDGESDK_USE_NEON
  const float32x4_t vg = vdupq_n_f32(gy), vf = vdupq_n_f32(fy);
  for (; j + 16 <= n; j += 16) {
    const uint8x16_t t8 = vld1q_u8(top + j), b8 = vld1q_u8(bot + j);
    const uint16x8_t tl = vmovl_u8(vget_low_u8(t8)), th = vmovl_u8(vget_high_u8(t8));
    const uint16x8_t bl = vmovl_u8(vget_low_u8(b8)), bh = vmovl_u8(vget_high_u8(b8));
    const uint16x4_t tq[4] = {vget_low_u16(tl), vget_high_u16(tl), vget_low_u16(th), vget_high_u16(th)};
    const uint16x4_t bq[4] = {vget_low_u16(bl), vget_high_u16(bl), vget_low_u16(bh), vget_high_u16(bh)};
    for (int q = 0; q < 4; ++q) {
      const float32x4_t t = vcvtq_f32_u32(vmovl_u16(tq[q]));
      const float32x4_t b = vcvtq_f32_u32(vmovl_u16(bq[q]));
      // Separate multiply and add (no fused vfmaq): the same rounding as the scalar reference.
      vst1q_f32(o + j + 4 * q, vaddq_f32(vmulq_f32(t, vg), vmulq_f32(b, vf)));
    }
  }
#endif
  for (; j < n; ++j) o[j] = (float)top[j] * gy + (float)bot[j] * fy;
}

// out_k[x] = (row[i0[x] + m_k] * g[x] + row[i1[x] + m_k] * f[x] - mean_k) * inv_k, for each channel k.
template <int C>
void horizontal(const float* row, const Axis& ax, int new_w, const int* chmap, const float* mean,
                const float* inv, float* const* out) {
  const int* i0 = ax.i0.data();
  const int* i1 = ax.i1.data();
  const float* f = ax.f.data();
  const float* g = ax.g.data();
  int m[C];
  float mk[C], ik[C];
  float* o[C];
  for (int k = 0; k < C; ++k) {
    m[k] = chmap[k];
    mk[k] = mean[k];
    ik[k] = inv[k];
    o[k] = out[k];
  }
  for (int x = 0; x < new_w; ++x) {
    const float* p0 = row + i0[x];
    const float* p1 = row + i1[x];
    const float gx = g[x], fx = f[x];
    for (int k = 0; k < C; ++k) {
      const float v = p0[m[k]] * gx + p1[m[k]] * fx;
      o[k][x] = (v - mk[k]) * ik[k];
    }
  }
}

void horizontal_any(int c, const float* row, const Axis& ax, int new_w, const int* chmap, const float* mean,
                    const float* inv, float* const* out) {
  switch (c) {
    case 1: horizontal<1>(row, ax, new_w, chmap, mean, inv, out); break;
    case 2: horizontal<2>(row, ax, new_w, chmap, mean, inv, out); break;
    case 3: horizontal<3>(row, ax, new_w, chmap, mean, inv, out); break;
    default: horizontal<4>(row, ax, new_w, chmap, mean, inv, out); break;
  }
}

void fill(float* p, size_t n, float v) { std::fill(p, p + n, v); }

}  // namespace

extern "C" int edgesdk_preproc_abi_version(void) { return EDGESDK_PREPROC_ABI; }

extern "C" int edgesdk_letterbox_normalize(const uint8_t* src, int h, int w, int c, int src_stride,
                                           float* dst, int out_h, int out_w, const float* mean,
                                           const float* std, float pad_value, int bgr_to_rgb,
                                           float* scale_out, int* pad_out) {
  if (!src || !dst || !mean || !std || h <= 0 || w <= 0 || out_h <= 0 || out_w <= 0 || c < 1 || c > 4 ||
      src_stride < w * c) {
    return EDGESDK_PREPROC_EINVAL;
  }
  float inv[4];
  for (int k = 0; k < c; ++k) {
    if (std[k] == 0.0f) return EDGESDK_PREPROC_EINVAL;
    inv[k] = 1.0f / std[k];
  }
  const double s = std::min((double)out_w / (double)w, (double)out_h / (double)h);
  const int new_w = std::max(1, std::min(out_w, (int)std::floor((double)w * s + 0.5)));
  const int new_h = std::max(1, std::min(out_h, (int)std::floor((double)h * s + 0.5)));
  const int pad_l = (out_w - new_w) / 2, pad_t = (out_h - new_h) / 2;
  if (scale_out) *scale_out = (float)s;
  if (pad_out) {
    pad_out[0] = pad_l;
    pad_out[1] = pad_t;
    pad_out[2] = new_w;
    pad_out[3] = new_h;
  }
  int chmap[4] = {0, 1, 2, 3};
  if (bgr_to_rgb && c >= 3) std::swap(chmap[0], chmap[2]);

  try {
    const Axis ax = make_axis(new_w, w, c);
    const Axis ay = make_axis(new_h, h, 1);
    std::vector<float> row((size_t)w * c);
    const size_t plane = (size_t)out_h * out_w;

    for (int k = 0; k < c; ++k) {
      const float padv = (pad_value - mean[k]) * inv[k];
      float* P = dst + k * plane;
      fill(P, (size_t)pad_t * out_w, padv);
      fill(P + (size_t)(pad_t + new_h) * out_w, (size_t)(out_h - pad_t - new_h) * out_w, padv);
      for (int y = 0; y < new_h; ++y) {
        float* r = P + (size_t)(pad_t + y) * out_w;
        fill(r, pad_l, padv);
        fill(r + pad_l + new_w, out_w - pad_l - new_w, padv);
      }
    }
    float* out[4];
    for (int y = 0; y < new_h; ++y) {
      vertical(src + (size_t)ay.i0[y] * src_stride, src + (size_t)ay.i1[y] * src_stride, ay.g[y], ay.f[y],
               row.data(), w * c);
      for (int k = 0; k < c; ++k) out[k] = dst + k * plane + (size_t)(pad_t + y) * out_w + pad_l;
      horizontal_any(c, row.data(), ax, new_w, chmap, mean, inv, out);
    }
  } catch (const std::bad_alloc&) {
    return EDGESDK_PREPROC_ENOMEM;
  }
  return EDGESDK_PREPROC_OK;
}
