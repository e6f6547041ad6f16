// preproc_check: run the pre-processing kernel once (or N times, timed) and report the result.
//
//   preproc_check --pattern H W [options]      a deterministic test image (see pattern())
//   preproc_check --in img.u8 --h H --w W      a raw HWC uint8 file
// options: --c C (3) --out-h 96 --out-w 128 --mean a,b,c --std a,b,c --pad 114 --bgr
//          --out out.f32 (raw CHW float32) --repeat N (time N calls)
// Prints one JSON line: shape, scale, pad, checksum, microseconds per call.
#include "edgesdk_preproc.h"

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

namespace {

// Must equal edgesdk.runtime.native.pattern_image.
uint8_t pattern(int y, int x, int ch) { return (uint8_t)((x * 7 + y * 13 + ch * 29 + ((x * y) % 17) * 3) & 255); }

bool parse_floats(const char* s, float* out, int n) {
  for (int i = 0; i < n; ++i) {
    char* end = nullptr;
    out[i] = std::strtof(s, &end);
    if (end == s) return false;
    s = end;
    if (*s == ',') ++s;
  }
  return true;
}

int usage(const char* msg) {
  std::fprintf(stderr, "preproc_check: %s\n", msg);
  return 2;
}

}  // namespace

int main(int argc, char** argv) {
  int h = 0, w = 0, c = 3, out_h = 96, out_w = 128, repeat = 1, bgr = 0;
  float mean[4] = {123.675f, 116.28f, 103.53f, 0.0f}, stdv[4] = {58.395f, 57.12f, 57.375f, 1.0f}, pad = 114.0f;
  std::string in_path, out_path;
  bool use_pattern = false;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    auto need = [&](int n) { return i + n < argc; };
    if (a == "--pattern" && need(2)) { use_pattern = true; h = std::atoi(argv[++i]); w = std::atoi(argv[++i]); }
    else if (a == "--in" && need(1)) in_path = argv[++i];
    else if (a == "--h" && need(1)) h = std::atoi(argv[++i]);
    else if (a == "--w" && need(1)) w = std::atoi(argv[++i]);
    else if (a == "--c" && need(1)) c = std::atoi(argv[++i]);
    else if (a == "--out-h" && need(1)) out_h = std::atoi(argv[++i]);
    else if (a == "--out-w" && need(1)) out_w = std::atoi(argv[++i]);
    else if (a == "--mean" && need(1)) { if (!parse_floats(argv[++i], mean, c)) return usage("bad --mean"); }
    else if (a == "--std" && need(1)) { if (!parse_floats(argv[++i], stdv, c)) return usage("bad --std"); }
    else if (a == "--pad" && need(1)) pad = std::strtof(argv[++i], nullptr);
    else if (a == "--bgr") bgr = 1;
    else if (a == "--out" && need(1)) out_path = argv[++i];
    else if (a == "--repeat" && need(1)) repeat = std::atoi(argv[++i]);
    else return usage(("unknown or incomplete option " + a).c_str());
  }
  if (h <= 0 || w <= 0 || c < 1 || c > 4 || repeat < 1) return usage("need --pattern H W or --in FILE --h H --w W");

  std::vector<uint8_t> img((size_t)h * w * c);
  if (use_pattern) {
    for (int y = 0; y < h; ++y)
      for (int x = 0; x < w; ++x)
        for (int ch = 0; ch < c; ++ch) img[((size_t)y * w + x) * c + ch] = pattern(y, x, ch);
  } else {
    FILE* f = std::fopen(in_path.c_str(), "rb");
    if (!f) return usage(("cannot open " + in_path).c_str());
    const size_t got = std::fread(img.data(), 1, img.size(), f);
    std::fclose(f);
    if (got != img.size()) return usage("input file is smaller than h*w*c bytes");
  }

  std::vector<float> out((size_t)c * out_h * out_w);
  float scale = 0.0f;
  int padv[4] = {0, 0, 0, 0};
  int rc = 0;
  const auto t0 = std::chrono::steady_clock::now();
  for (int r = 0; r < repeat && rc == 0; ++r)
    rc = edgesdk_letterbox_normalize(img.data(), h, w, c, w * c, out.data(), out_h, out_w, mean, stdv, pad, bgr,
                                     &scale, padv);
  const double us =
      std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now() - t0).count() / repeat;
  if (rc != 0) {
    std::fprintf(stderr, "preproc_check: edgesdk_letterbox_normalize returned %d\n", rc);
    return 1;
  }
  double sum = 0.0;
  for (float v : out) sum += v;
  if (!out_path.empty()) {
    FILE* f = std::fopen(out_path.c_str(), "wb");
    if (!f || std::fwrite(out.data(), sizeof(float), out.size(), f) != out.size()) {
      std::fprintf(stderr, "preproc_check: cannot write %s\n", out_path.c_str());
      return 1;
    }
    std::fclose(f);
  }
  std::printf(
      "{\"shape\": [%d, %d, %d], \"scale\": %.9g, \"pad\": [%d, %d], \"resized\": [%d, %d], "
      "\"checksum\": %.9g, \"us_per_call\": %.1f, \"abi\": %d}\n",
      c, out_h, out_w, (double)scale, padv[0], padv[1], padv[2], padv[3], sum, us, edgesdk_preproc_abi_version());
  return 0;
}
