// Direct grouped convolution on the CPU (depthwise and other grouped
// convolutions with a tiny per-group K), without columns, for 1 to 3 spatial
// dimensions. Every output element is summed by one thread, over taps in a
// fixed order: deterministic and independent of the thread count. Each
// parallel task runs one "body" (an output plane, an input plane, ...); for
// float and double the bodies are multiversioned whole, so their inner loops
// are vectorised for the machine's widest vector unit.
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <vector>

#include "cpu_kernels.h"

namespace myconv::detail {
namespace {

struct GroupedShape {
  int64_t batch, channels, out_channels, groups, cg, mg;
  GroupedShape(const ConvGeometry& g, int64_t batch, int64_t out_channels, int64_t groups)
      : batch(batch), channels(g.channels), out_channels(out_channels), groups(groups),
        cg(g.channels / groups), mg(out_channels / groups) {}
};

// Stride 1, channels-first: out (od x oh x ow) = bias + the sum over `planes`
// input volumes (d x h x w, plane_stride apart) of weights (planes, kd, kh,
// kw) times the input zero-padded by (pd, ph, pw). Each volume is copied into
// a padded volume of rows of width wp, so that a tap is one long shifted
// multiply-add over the flattened volume (into `wide`, whose position
// (z, r, c) is at (z * hp + r) * wp + c); the valid positions are kept at the
// end.
struct Stride1Volume {
  int64_t d, h, w, kd, kh, kw, dd, dh, dw, pd, ph, pw, od, oh, ow;
  int64_t dp() const { return d + 2 * pd; }
  int64_t hp() const { return h + 2 * ph; }
  int64_t wp() const { return w + 2 * pw; }
  int64_t padded_size() const { return dp() * hp() * wp() + (kw - 1) * dw; }
  int64_t wide_size() const { return ((od - 1) * hp() + oh) * wp(); }
  int64_t tap_offset(int64_t a, int64_t b, int64_t c) const { return (a * dd * hp() + b * dh) * wp() + c * dw; }
  int64_t taps() const { return kd * kh * kw; }
};

// The stride-1 volume of a geometry, as a convolution of its input.
Stride1Volume stride1_volume(const ConvGeometry& g) {
  return {g.depth, g.height, g.width, g.kernel_d, g.kernel_h, g.kernel_w, g.dilation_d, g.dilation_h, g.dilation_w,
          g.pad_d, g.pad_h, g.pad_w, g.out_d, g.out_h, g.out_w};
}

// Copies an input volume into the padded volume's interior.
template <typename scalar_t, typename acc_t>
inline void fill_padded(acc_t* __restrict padded, const scalar_t* __restrict volume, const Stride1Volume& q) {
  const int64_t hp = q.hp(), wp = q.wp();
  for (int64_t z = 0; z < q.d; ++z) {
    for (int64_t r = 0; r < q.h; ++r) {
      acc_t* dst = padded + ((z + q.pd) * hp + r + q.ph) * wp + q.pw;
      const scalar_t* src = volume + (z * q.h + r) * q.w;
      for (int64_t c = 0; c < q.w; ++c) {
        dst[c] = static_cast<acc_t>(src[c]);
      }
    }
  }
}

template <typename scalar_t, typename acc_t>
inline void stride1_plane(acc_t* __restrict out, acc_t* __restrict padded, acc_t* __restrict wide,
                          const scalar_t* __restrict in, int64_t plane_stride, int64_t planes,
                          const acc_t* __restrict weights, acc_t bias, const Stride1Volume& q) {
  const int64_t hp = q.hp(), wp = q.wp(), n = q.wide_size();
  for (int64_t i = 0; i < q.padded_size(); ++i) {
    padded[i] = 0;
  }
  for (int64_t i = 0; i < n; ++i) {
    wide[i] = bias;
  }
  for (int64_t p = 0; p < planes; ++p) {
    fill_padded(padded, in + p * plane_stride, q);
    for (int64_t a = 0; a < q.kd; ++a) {
      for (int64_t b = 0; b < q.kh; ++b) {
        for (int64_t c = 0; c < q.kw; ++c) {
          const acc_t wv = weights[((p * q.kd + a) * q.kh + b) * q.kw + c];
          const acc_t* __restrict src = padded + q.tap_offset(a, b, c);
          for (int64_t i = 0; i < n; ++i) {
            wide[i] += wv * src[i];
          }
        }
      }
    }
  }
  for (int64_t z = 0; z < q.od; ++z) {
    for (int64_t r = 0; r < q.oh; ++r) {
      for (int64_t c = 0; c < q.ow; ++c) {
        out[(z * q.oh + r) * q.ow + c] = wide[(z * hp + r) * wp + c];
      }
    }
  }
}

// Stride 1, channels-first, one output channel: gw (planes, kd, kh, kw) = for
// each tap the dot product, over images, of grad_output and the shifted
// padded input. The grad_output volume is spread to the padded rows (zeros
// past ow and oh), so that a tap is one long dot product; each is summed in
// kLanes partial sums (one vector register), added in a fixed order at the
// end.
constexpr int64_t kLanes = 16;
template <typename scalar_t, typename acc_t>
inline void stride1_grad_weight(acc_t* __restrict gw, acc_t* __restrict lanes, acc_t* __restrict padded,
                                acc_t* __restrict wide, const scalar_t* __restrict gy, int64_t gy_image,
                                const scalar_t* __restrict x, int64_t x_image, int64_t planes, int64_t batch,
                                const Stride1Volume& q) {
  const int64_t hp = q.hp(), wp = q.wp(), n = q.wide_size(), taps = q.taps();
  for (int64_t i = 0; i < q.padded_size(); ++i) {
    padded[i] = 0;
  }
  for (int64_t i = 0; i < n; ++i) {
    wide[i] = 0;
  }
  for (int64_t p = 0; p < planes; ++p) {
    for (int64_t i = 0; i < taps * kLanes; ++i) {
      lanes[i] = 0;
    }
    for (int64_t b = 0; b < batch; ++b) {
      fill_padded(padded, x + b * x_image + p * q.d * q.h * q.w, q);
      const scalar_t* g = gy + b * gy_image;
      for (int64_t z = 0; z < q.od; ++z) {
        for (int64_t r = 0; r < q.oh; ++r) {
          for (int64_t c = 0; c < q.ow; ++c) {
            wide[(z * hp + r) * wp + c] = static_cast<acc_t>(g[(z * q.oh + r) * q.ow + c]);
          }
        }
      }
      for (int64_t a = 0, k = 0; a < q.kd; ++a) {
        for (int64_t bb = 0; bb < q.kh; ++bb) {
          for (int64_t c = 0; c < q.kw; ++c, ++k) {
            const acc_t* __restrict src = padded + q.tap_offset(a, bb, c);
            acc_t* __restrict l = lanes + k * kLanes;
            int64_t i = 0;
            for (; i + kLanes <= n; i += kLanes) {
              for (int64_t j = 0; j < kLanes; ++j) {
                l[j] += wide[i + j] * src[i + j];
              }
            }
            for (int64_t j = 0; i + j < n; ++j) {
              l[j] += wide[i + j] * src[i + j];
            }
          }
        }
      }
    }
    for (int64_t k = 0; k < taps; ++k) {
      acc_t total = 0;
      for (int64_t j = 0; j < kLanes; ++j) {
        total += lanes[k * kLanes + j];
      }
      gw[p * taps + k] = total;
    }
  }
}

// Channels-first, output plane (n, o): acc (L) = bias + sum over the group's
// input planes and the taps of the weight times the shifted input rows.
// x: the group's first input plane of image n; w: o's (cg, kD, kH, kW) weights.
template <typename scalar_t, typename acc_t>
inline void forward_plane(acc_t* __restrict acc, const scalar_t* __restrict x, const scalar_t* __restrict w,
                          acc_t bias, int64_t cg, const ConvGeometry& g) {
  const int64_t W = g.width, OH = g.out_h, OW = g.out_w, sw = g.stride_w;
  for (int64_t l = 0; l < g.cols(); ++l) {
    acc[l] = bias;
  }
  for (int64_t ci = 0, k = 0; ci < cg; ++ci) {
    const scalar_t* plane = x + ci * g.pixels();
    for (int64_t kd = 0; kd < g.kernel_d; ++kd) {
      for (int64_t kh = 0; kh < g.kernel_h; ++kh) {
        for (int64_t kw = 0; kw < g.kernel_w; ++kw, ++k) {
          const acc_t wv = static_cast<acc_t>(w[k]);
          const int64_t w_offset = kw * g.dilation_w - g.pad_w;
          const ValidRange v = valid_range(w_offset, sw, W, OW);
          for (int64_t od = 0; od < g.out_d; ++od) {
            for (int64_t oh = 0; oh < OH; ++oh) {
              const int64_t row = input_row(g, od, oh, kd, kh);
              if (row < 0) {
                continue;
              }
              const scalar_t* __restrict in = plane + row * W + w_offset;
              acc_t* __restrict out = acc + (od * OH + oh) * OW;
              if (sw == 1) {
                for (int64_t o = v.begin; o < v.end; ++o) {
                  out[o] += wv * static_cast<acc_t>(in[o]);
                }
              } else {
                for (int64_t o = v.begin; o < v.end; ++o) {
                  out[o] += wv * static_cast<acc_t>(in[o * sw]);
                }
              }
            }
          }
        }
      }
    }
  }
}

// Channels-first, input plane (n, c): acc (pixels) = sum over the group's
// output channels and the taps of the weight times grad_output rows, shifted
// back. gy: the group's first grad_output plane of image n; w: the first
// output channel's weights of input channel c (the next output channel's are
// w_ostride further).
template <typename scalar_t, typename acc_t>
inline void grad_input_plane(acc_t* __restrict acc, const scalar_t* __restrict gy, const scalar_t* __restrict w,
                             int64_t w_ostride, int64_t mg, const ConvGeometry& g) {
  const int64_t W = g.width, OH = g.out_h, OW = g.out_w, sw = g.stride_w;
  for (int64_t q = 0; q < g.pixels(); ++q) {
    acc[q] = 0;
  }
  for (int64_t j = 0; j < mg; ++j) {
    const scalar_t* gp = gy + j * g.cols();
    for (int64_t kd = 0, k = 0; kd < g.kernel_d; ++kd) {
      for (int64_t kh = 0; kh < g.kernel_h; ++kh) {
        for (int64_t kw = 0; kw < g.kernel_w; ++kw, ++k) {
          const acc_t wv = static_cast<acc_t>(w[j * w_ostride + k]);
          const int64_t w_offset = kw * g.dilation_w - g.pad_w;
          const ValidRange v = valid_range(w_offset, sw, W, OW);
          for (int64_t od = 0; od < g.out_d; ++od) {
            for (int64_t oh = 0; oh < OH; ++oh) {
              const int64_t row = input_row(g, od, oh, kd, kh);
              if (row < 0) {
                continue;
              }
              const scalar_t* __restrict in = gp + (od * OH + oh) * OW;
              acc_t* __restrict out = acc + row * W + w_offset;
              if (sw == 1) {
                for (int64_t o = v.begin; o < v.end; ++o) {
                  out[o] += wv * static_cast<acc_t>(in[o]);
                }
              } else {
                for (int64_t o = v.begin; o < v.end; ++o) {
                  out[o * sw] += wv * static_cast<acc_t>(in[o]);
                }
              }
            }
          }
        }
      }
    }
  }
}

// Channels-first, output channel o: gw (cg * taps) = for each (ci, tap), the
// products of grad_output and shifted input rows, added into a row
// accumulator over (n, od, oh) in order, then the row summed left to right.
// gy: o's plane of image 0; x: the group's first input plane of image 0.
template <typename scalar_t, typename acc_t>
inline void grad_weight_channel(acc_t* __restrict gw, acc_t* __restrict row_acc, const scalar_t* __restrict gy,
                                int64_t gy_image, const scalar_t* __restrict x, int64_t x_image, int64_t cg,
                                int64_t batch, const ConvGeometry& g) {
  const int64_t W = g.width, OH = g.out_h, OW = g.out_w, sw = g.stride_w;
  for (int64_t ci = 0, k = 0; ci < cg; ++ci) {
    for (int64_t kd = 0; kd < g.kernel_d; ++kd) {
      for (int64_t kh = 0; kh < g.kernel_h; ++kh) {
        for (int64_t kw = 0; kw < g.kernel_w; ++kw, ++k) {
          for (int64_t o = 0; o < OW; ++o) {
            row_acc[o] = 0;
          }
          const int64_t w_offset = kw * g.dilation_w - g.pad_w;
          const ValidRange v = valid_range(w_offset, sw, W, OW);
          for (int64_t n = 0; n < batch; ++n) {
            const scalar_t* gp = gy + n * gy_image;
            const scalar_t* xp = x + n * x_image + ci * g.pixels();
            for (int64_t od = 0; od < g.out_d; ++od) {
              for (int64_t oh = 0; oh < OH; ++oh) {
                const int64_t row = input_row(g, od, oh, kd, kh);
                if (row < 0) {
                  continue;
                }
                const scalar_t* __restrict a = gp + (od * OH + oh) * OW;
                const scalar_t* __restrict b = xp + row * W + w_offset;
                if (sw == 1) {
                  for (int64_t o = v.begin; o < v.end; ++o) {
                    row_acc[o] += static_cast<acc_t>(a[o]) * static_cast<acc_t>(b[o]);
                  }
                } else {
                  for (int64_t o = v.begin; o < v.end; ++o) {
                    row_acc[o] += static_cast<acc_t>(a[o]) * static_cast<acc_t>(b[o * sw]);
                  }
                }
              }
            }
          }
          acc_t total = 0;
          for (int64_t o = 0; o < OW; ++o) {
            total += row_acc[o];
          }
          gw[k] = total;
        }
      }
    }
  }
}

// Channels-last, output row q = (od, oh) of an image: acc (OW x C_out) = bias
// + each tap's input pixels times the tap's weights, vectorised over
// channels. x: the image; wt: weights as (tap, ci, o).
template <typename scalar_t, typename acc_t>
inline void forward_row_channels_last(acc_t* __restrict acc, const scalar_t* __restrict x,
                                      const acc_t* __restrict wt, const scalar_t* __restrict bias, int64_t q,
                                      const GroupedShape& s, const ConvGeometry& g) {
  const int64_t co = s.out_channels, C = s.channels, cg = s.cg, mg = s.mg;
  const int64_t OW = g.out_w, KW = g.kernel_w, od = q / g.out_h, oh = q % g.out_h;
  for (int64_t ow = 0; ow < OW; ++ow) {
    for (int64_t o = 0; o < co; ++o) {
      acc[ow * co + o] = bias ? static_cast<acc_t>(bias[o]) : acc_t(0);
    }
  }
  for (int64_t kd = 0; kd < g.kernel_d; ++kd) {
    for (int64_t kh = 0; kh < g.kernel_h; ++kh) {
      const int64_t row = input_row(g, od, oh, kd, kh);
      if (row < 0) {
        continue;
      }
      for (int64_t kw = 0; kw < KW; ++kw) {
        const int64_t k = (kd * g.kernel_h + kh) * KW + kw;
        const int64_t w_offset = kw * g.dilation_w - g.pad_w;
        const ValidRange v = valid_range(w_offset, g.stride_w, g.width, OW);
        for (int64_t ow = v.begin; ow < v.end; ++ow) {
          const scalar_t* __restrict px = x + (row * g.width + ow * g.stride_w + w_offset) * C;
          acc_t* __restrict pa = acc + ow * co;
          if (cg == 1 && mg == 1) {
            const acc_t* __restrict wk = wt + k * co;
            for (int64_t o = 0; o < co; ++o) {
              pa[o] += wk[o] * static_cast<acc_t>(px[o]);
            }
          } else {
            for (int64_t ci = 0; ci < cg; ++ci) {
              const acc_t* __restrict wk = wt + (k * cg + ci) * co;
              for (int64_t o = 0; o < co; ++o) {
                pa[o] += wk[o] * static_cast<acc_t>(px[(o / mg) * cg + ci]);
              }
            }
          }
        }
      }
    }
  }
}

// Channels-last, input row r = (id, ih) of an image: acc (W x C_in) = for
// each pixel, tap by tap, the grad_output pixels whose windows read it times
// the tap's weights. gy: the image's grad_output; wt: weights as (tap, ci, o).
template <typename scalar_t, typename acc_t>
inline void grad_input_row_channels_last(acc_t* __restrict acc, const scalar_t* __restrict gy,
                                         const acc_t* __restrict wt, int64_t r, const GroupedShape& s,
                                         const ConvGeometry& g) {
  const int64_t co = s.out_channels, C = s.channels, cg = s.cg, mg = s.mg;
  const int64_t id = r / g.height, ih = r % g.height;
  for (int64_t q = 0; q < g.width * C; ++q) {
    acc[q] = 0;
  }
  for (int64_t kd = 0; kd < g.kernel_d; ++kd) {
    const int64_t d_off = id + g.pad_d - kd * g.dilation_d;  // = od * stride_d
    if (d_off < 0 || d_off % g.stride_d != 0 || d_off / g.stride_d >= g.out_d) {
      continue;
    }
    for (int64_t kh = 0; kh < g.kernel_h; ++kh) {
      const int64_t h_off = ih + g.pad_h - kh * g.dilation_h;  // = oh * stride_h
      if (h_off < 0 || h_off % g.stride_h != 0 || h_off / g.stride_h >= g.out_h) {
        continue;
      }
      const int64_t out_row = (d_off / g.stride_d) * g.out_h + h_off / g.stride_h;
      for (int64_t kw = 0; kw < g.kernel_w; ++kw) {
        const int64_t k = (kd * g.kernel_h + kh) * g.kernel_w + kw;
        for (int64_t iw = 0; iw < g.width; ++iw) {
          const int64_t w_off = iw + g.pad_w - kw * g.dilation_w;  // = ow * stride_w
          if (w_off < 0 || w_off % g.stride_w != 0 || w_off / g.stride_w >= g.out_w) {
            continue;
          }
          const scalar_t* __restrict pg = gy + (out_row * g.out_w + w_off / g.stride_w) * co;
          acc_t* __restrict pa = acc + iw * C;
          if (cg == 1 && mg == 1) {
            const acc_t* __restrict wk = wt + k * co;
            for (int64_t c = 0; c < C; ++c) {
              pa[c] += wk[c] * static_cast<acc_t>(pg[c]);
            }
          } else {
            for (int64_t c = 0; c < C; ++c) {
              const int64_t group = c / cg, ci = c % cg;
              const acc_t* wk = wt + (k * cg + ci) * co + group * mg;
              acc_t sum = 0;
              for (int64_t j = 0; j < mg; ++j) {
                sum += wk[j] * static_cast<acc_t>(pg[group * mg + j]);
              }
              pa[c] += sum;
            }
          }
        }
      }
    }
  }
}

// Channels-last, output channels [o0, o0 + ob): acc (tap, ci,
// kGradWeightBlock), each (tap, ci) row summed over (n, od, oh, ow) in order
// in a local accumulator that stays in vector registers.
constexpr int64_t kGradWeightBlock = 32;
template <typename scalar_t, typename acc_t>
inline void grad_weight_block_channels_last(acc_t* __restrict acc, const scalar_t* __restrict gy,
                                            const scalar_t* __restrict x, int64_t o0, int64_t ob,
                                            const GroupedShape& s, const ConvGeometry& g) {
  const int64_t co = s.out_channels, C = s.channels, cg = s.cg, mg = s.mg;
  for (int64_t kd = 0, k = 0; kd < g.kernel_d; ++kd) {
    for (int64_t kh = 0; kh < g.kernel_h; ++kh) {
      for (int64_t kw = 0; kw < g.kernel_w; ++kw, ++k) {
        const int64_t w_offset = kw * g.dilation_w - g.pad_w;
        const ValidRange v = valid_range(w_offset, g.stride_w, g.width, g.out_w);
        for (int64_t ci = 0; ci < cg; ++ci) {
          acc_t sum[kGradWeightBlock] = {};
          for (int64_t n = 0; n < s.batch; ++n) {
            for (int64_t od = 0; od < g.out_d; ++od) {
              for (int64_t oh = 0; oh < g.out_h; ++oh) {
                const int64_t row = input_row(g, od, oh, kd, kh);
                if (row < 0) {
                  continue;
                }
                for (int64_t ow = v.begin; ow < v.end; ++ow) {
                  const scalar_t* __restrict pg = gy + (((n * g.out_d + od) * g.out_h + oh) * g.out_w + ow) * co + o0;
                  const scalar_t* __restrict px =
                      x + (n * g.pixels() + row * g.width + ow * g.stride_w + w_offset) * C;
                  if (cg == 1 && mg == 1 && ob == kGradWeightBlock) {
                    for (int64_t j = 0; j < kGradWeightBlock; ++j) {
                      sum[j] += static_cast<acc_t>(pg[j]) * static_cast<acc_t>(px[o0 + j]);
                    }
                  } else {
                    for (int64_t j = 0; j < ob; ++j) {
                      sum[j] += static_cast<acc_t>(pg[j]) * static_cast<acc_t>(px[((o0 + j) / mg) * cg + ci]);
                    }
                  }
                }
              }
            }
          }
          for (int64_t j = 0; j < kGradWeightBlock; ++j) {
            acc[(k * cg + ci) * kGradWeightBlock + j] = sum[j];
          }
        }
      }
    }
  }
}

// The bodies as functions: generic templates, and multiversioned overloads
// for float and double (the loader picks the clone for the machine).
#define MYCONV_DIRECT_BODIES(T)                                                                            \
  MYCONV_VECTOR_CLONES void stride1_grad_weight(T* gw, T* lanes, T* padded, T* wide, const T* gy,          \
                                                int64_t gy_image, const T* x, int64_t x_image,             \
                                                int64_t planes, int64_t batch, const Stride1Volume& q) {   \
    stride1_grad_weight<T, T>(gw, lanes, padded, wide, gy, gy_image, x, x_image, planes, batch, q);        \
  }                                                                                                        \
  MYCONV_VECTOR_CLONES void stride1_plane(T* out, T* padded, T* wide, const T* in, int64_t plane_stride,   \
                                          int64_t planes, const T* weights, T bias, const Stride1Volume& q) { \
    stride1_plane<T, T>(out, padded, wide, in, plane_stride, planes, weights, bias, q);                    \
  }                                                                                                        \
  MYCONV_VECTOR_CLONES void forward_plane(T* acc, const T* x, const T* w, T bias, int64_t cg,              \
                                          const ConvGeometry& g) {                                         \
    forward_plane<T, T>(acc, x, w, bias, cg, g);                                                           \
  }                                                                                                        \
  MYCONV_VECTOR_CLONES void grad_input_plane(T* acc, const T* gy, const T* w, int64_t w_ostride,           \
                                             int64_t mg, const ConvGeometry& g) {                          \
    grad_input_plane<T, T>(acc, gy, w, w_ostride, mg, g);                                                  \
  }                                                                                                        \
  MYCONV_VECTOR_CLONES void grad_weight_channel(T* gw, T* row, const T* gy, int64_t gy_image, const T* x,  \
                                                int64_t x_image, int64_t cg, int64_t batch,                \
                                                const ConvGeometry& g) {                                   \
    grad_weight_channel<T, T>(gw, row, gy, gy_image, x, x_image, cg, batch, g);                            \
  }                                                                                                        \
  MYCONV_VECTOR_CLONES void forward_row_channels_last(T* acc, const T* x, const T* wt, const T* bias,      \
                                                      int64_t q, const GroupedShape& s,                    \
                                                      const ConvGeometry& g) {                             \
    forward_row_channels_last<T, T>(acc, x, wt, bias, q, s, g);                                            \
  }                                                                                                        \
  MYCONV_VECTOR_CLONES void grad_input_row_channels_last(T* acc, const T* gy, const T* wt, int64_t r,      \
                                                         const GroupedShape& s, const ConvGeometry& g) {   \
    grad_input_row_channels_last<T, T>(acc, gy, wt, r, s, g);                                              \
  }                                                                                                        \
  MYCONV_VECTOR_CLONES void grad_weight_block_channels_last(T* acc, const T* gy, const T* x, int64_t o0,   \
                                                            int64_t ob, const GroupedShape& s,             \
                                                            const ConvGeometry& g) {                       \
    grad_weight_block_channels_last<T, T>(acc, gy, x, o0, ob, s, g);                                       \
  }
MYCONV_DIRECT_BODIES(float)
MYCONV_DIRECT_BODIES(double)
#undef MYCONV_DIRECT_BODIES

// The weight as (tap, ci, o) in the accumulation type, for the channels-last
// bodies (a tap's weights for all output channels are contiguous).
template <typename scalar_t>
std::vector<at::opmath_type<scalar_t>> taps_major(const scalar_t* w, const GroupedShape& s, int64_t kk) {
  std::vector<at::opmath_type<scalar_t>> out(kk * s.cg * s.out_channels);
  for (int64_t o = 0; o < s.out_channels; ++o) {
    for (int64_t ci = 0; ci < s.cg; ++ci) {
      for (int64_t k = 0; k < kk; ++k) {
        out[(k * s.cg + ci) * s.out_channels + o] =
            static_cast<at::opmath_type<scalar_t>>(w[(o * s.cg + ci) * kk + k]);
      }
    }
  }
  return out;
}

// Stores n accumulators as scalar_t.
template <typename acc_t, typename scalar_t>
void store(const acc_t* acc, int64_t n, scalar_t* dst) {
  for (int64_t i = 0; i < n; ++i) {
    dst[i] = static_cast<scalar_t>(acc[i]);
  }
}

// Runs body(task, acc, scratch) for the tasks [0, count) over ATen's
// threads; each thread has an accumulator of `size` and scratch of
// `scratch_size` elements; after its body, a task's accumulator is stored, as
// scalar_t, at out + task * size.
template <typename acc_t, typename scalar_t, typename Body>
void accumulate_tasks(int64_t count, int64_t work_per_task, int64_t size, int64_t scratch_size, scalar_t* out,
                      const Body& body) {
  at::parallel_for(0, count, grain_for(work_per_task), [&](int64_t begin, int64_t end) {
    std::vector<acc_t> acc(size), scratch(scratch_size);
    for (int64_t task = begin; task < end; ++task) {
      body(task, acc.data(), scratch.data());
      store(acc.data(), size, out + task * size);
    }
  });
}

bool unit_strides(const ConvGeometry& g) {
  return g.stride_d == 1 && g.stride_h == 1 && g.stride_w == 1;
}

template <typename scalar_t>
void grouped_forward(const scalar_t* x, const scalar_t* w, const scalar_t* bias, const ConvGeometry& g,
                     const GroupedShape& s, bool channels_last, scalar_t* out) {
  using acc_t = at::opmath_type<scalar_t>;
  const int64_t L = g.cols(), kk = g.taps(), plane = g.pixels();
  const auto bias_of = [&](int64_t o) { return bias ? static_cast<acc_t>(bias[o]) : acc_t(0); };
  if (channels_last) {  // one task per output row (n, od, oh)
    const std::vector<acc_t> wt = taps_major(w, s, kk);
    const int64_t row = g.out_w * s.out_channels, rows = g.out_d * g.out_h;
    accumulate_tasks<acc_t>(s.batch * rows, row * s.cg * kk, row, 0, out, [&](int64_t r, acc_t* acc, acc_t*) {
      forward_row_channels_last(acc, x + (r / rows) * plane * s.channels, wt.data(), bias, r % rows, s, g);
    });
    return;
  }
  // Channels-first: one task per output plane (n, o)
  const auto group_planes = [&](int64_t p) {  // the input planes of p's group
    return x + ((p / s.out_channels) * s.channels + (p % s.out_channels / s.mg) * s.cg) * plane;
  };
  if (unit_strides(g)) {
    const Stride1Volume q = stride1_volume(g);
    const std::vector<acc_t> wacc(w, w + s.out_channels * s.cg * kk);  // weights in acc_t
    accumulate_tasks<acc_t>(s.batch * s.out_channels, L * s.cg * kk, L, q.padded_size() + q.wide_size(), out,
                            [&](int64_t p, acc_t* acc, acc_t* scratch) {
      const int64_t o = p % s.out_channels;
      stride1_plane(acc, scratch, scratch + q.padded_size(), group_planes(p), plane, s.cg,
                    wacc.data() + o * s.cg * kk, bias_of(o), q);
    });
    return;
  }
  accumulate_tasks<acc_t>(s.batch * s.out_channels, L * s.cg * kk, L, 0, out, [&](int64_t p, acc_t* acc, acc_t*) {
    const int64_t o = p % s.out_channels;
    forward_plane(acc, group_planes(p), w + o * s.cg * kk, bias_of(o), s.cg, g);
  });
}

// The stride-1 input gradient is the stride-1 convolution of grad_output with
// the flipped kernel and padding (k - 1) * dilation - padding per axis; the
// volume of that convolution, or nothing where it does not apply (strides,
// padding beyond the dilated kernel, or a transposed convolution's
// output_padding leaving input rows past the last window).
std::optional<Stride1Volume> flipped_volume(const ConvGeometry& g) {
  if (!unit_strides(g)) {
    return std::nullopt;
  }
  const int64_t fpd = (g.kernel_d - 1) * g.dilation_d - g.pad_d, fph = (g.kernel_h - 1) * g.dilation_h - g.pad_h,
                fpw = (g.kernel_w - 1) * g.dilation_w - g.pad_w;
  if (fpd < 0 || fph < 0 || fpw < 0 || g.depth != g.out_d + 2 * fpd - (g.kernel_d - 1) * g.dilation_d ||
      g.height != g.out_h + 2 * fph - (g.kernel_h - 1) * g.dilation_h ||
      g.width != g.out_w + 2 * fpw - (g.kernel_w - 1) * g.dilation_w) {
    return std::nullopt;
  }
  return Stride1Volume{g.out_d, g.out_h, g.out_w, g.kernel_d, g.kernel_h, g.kernel_w, g.dilation_d, g.dilation_h,
                       g.dilation_w, fpd, fph, fpw, g.depth, g.height, g.width};
}

template <typename scalar_t>
void grouped_grad_input(const scalar_t* gy, const scalar_t* w, const ConvGeometry& g, const GroupedShape& s,
                        bool channels_last, scalar_t* gi) {
  using acc_t = at::opmath_type<scalar_t>;
  const int64_t L = g.cols(), kk = g.taps(), plane = g.pixels();
  if (channels_last) {  // one task per input row (n, id, ih)
    const std::vector<acc_t> wt = taps_major(w, s, kk);
    const int64_t row = g.width * s.channels, rows = g.depth * g.height;
    accumulate_tasks<acc_t>(s.batch * rows, row * s.mg * kk, row, 0, gi, [&](int64_t r, acc_t* acc, acc_t*) {
      grad_input_row_channels_last(acc, gy + (r / rows) * L * s.out_channels, wt.data(), r % rows, s, g);
    });
    return;
  }
  // Channels-first: one task per input plane (n, c)
  const auto group_grads = [&](int64_t p) {  // the grad_output planes of p's group
    return gy + ((p / s.channels) * s.out_channels + (p % s.channels / s.cg) * s.mg) * L;
  };
  if (const auto q = flipped_volume(g)) {
    // flipped[c][j][tap] = w[group * mg + j][c % cg][kk - 1 - tap]
    std::vector<acc_t> flipped(s.channels * s.mg * kk);
    for (int64_t c = 0; c < s.channels; ++c) {
      for (int64_t j = 0; j < s.mg; ++j) {
        for (int64_t k = 0; k < kk; ++k) {
          flipped[(c * s.mg + j) * kk + k] =
              static_cast<acc_t>(w[(((c / s.cg) * s.mg + j) * s.cg + c % s.cg) * kk + (kk - 1 - k)]);
        }
      }
    }
    accumulate_tasks<acc_t>(s.batch * s.channels, L * s.mg * kk, plane, q->padded_size() + q->wide_size(), gi,
                            [&](int64_t p, acc_t* acc, acc_t* scratch) {
      stride1_plane(acc, scratch, scratch + q->padded_size(), group_grads(p), L, s.mg,
                    flipped.data() + (p % s.channels) * s.mg * kk, acc_t(0), *q);
    });
    return;
  }
  accumulate_tasks<acc_t>(s.batch * s.channels, L * s.mg * kk, plane, 0, gi, [&](int64_t p, acc_t* acc, acc_t*) {
    const int64_t c = p % s.channels;
    grad_input_plane(acc, group_grads(p), w + ((c / s.cg) * s.mg * s.cg + c % s.cg) * kk, s.cg * kk, s.mg, g);
  });
}

template <typename scalar_t>
void grouped_grad_weight(const scalar_t* gy, const scalar_t* x, const ConvGeometry& g, const GroupedShape& s,
                         bool channels_last, scalar_t* gw) {
  using acc_t = at::opmath_type<scalar_t>;
  const int64_t L = g.cols(), kk = g.taps(), plane = g.pixels();
  if (channels_last) {  // one task per block of output channels
    const int64_t blocks = (s.out_channels + kGradWeightBlock - 1) / kGradWeightBlock;
    at::parallel_for(0, blocks, 1, [&](int64_t begin, int64_t end) {
      std::vector<acc_t> acc(kk * s.cg * kGradWeightBlock);
      for (int64_t blk = begin; blk < end; ++blk) {
        const int64_t o0 = blk * kGradWeightBlock, ob = std::min(kGradWeightBlock, s.out_channels - o0);
        grad_weight_block_channels_last(acc.data(), gy, x, o0, ob, s, g);
        for (int64_t j = 0; j < ob; ++j) {
          for (int64_t ci = 0; ci < s.cg; ++ci) {
            for (int64_t k = 0; k < kk; ++k) {
              gw[((o0 + j) * s.cg + ci) * kk + k] =
                  static_cast<scalar_t>(acc[(k * s.cg + ci) * kGradWeightBlock + j]);
            }
          }
        }
      }
    });
    return;
  }
  // Channels-first: one task per output channel o
  const int64_t work = s.batch * L * s.cg * kk;
  const auto group_inputs = [&](int64_t o) { return x + (o / s.mg) * s.cg * plane; };
  if (unit_strides(g)) {
    const Stride1Volume q = stride1_volume(g);
    const int64_t lanes = kk * kLanes;
    accumulate_tasks<acc_t>(s.out_channels, work, s.cg * kk, lanes + q.padded_size() + q.wide_size(), gw,
                            [&](int64_t o, acc_t* acc, acc_t* scratch) {
      stride1_grad_weight(acc, scratch, scratch + lanes, scratch + lanes + q.padded_size(), gy + o * L,
                          s.out_channels * L, group_inputs(o), s.channels * plane, s.cg, s.batch, q);
    });
    return;
  }
  accumulate_tasks<acc_t>(s.out_channels, work, s.cg * kk, g.out_w, gw, [&](int64_t o, acc_t* acc, acc_t* row) {
    grad_weight_channel(acc, row, gy + o * L, s.out_channels * L, group_inputs(o), s.channels * plane, s.cg,
                        s.batch, g);
  });
}

} // namespace

void grouped_forward_cpu(const at::Tensor& x, const at::Tensor& w, const std::optional<at::Tensor>& bias,
                         const ConvGeometry& g, int64_t groups, bool channels_last, const at::Tensor& out) {
  const GroupedShape s(g, x.size(0), w.size(0), groups);
  check_layout(x, channels_last);
  check_layout(out, channels_last);
  MYCONV_CPU_DISPATCH(x.scalar_type(), "myconv_grouped_forward_cpu", [&] {
    grouped_forward<scalar_t>(x.const_data_ptr<scalar_t>(), w.const_data_ptr<scalar_t>(),
                              bias ? bias->const_data_ptr<scalar_t>() : nullptr, g, s, channels_last,
                              out.mutable_data_ptr<scalar_t>());
  });
}

void grouped_grad_input_cpu(const at::Tensor& gy, const at::Tensor& w, const ConvGeometry& g, int64_t groups,
                            bool channels_last, const at::Tensor& gi) {
  const GroupedShape s(g, gy.size(0), w.size(0), groups);
  check_layout(gy, channels_last);
  check_layout(gi, channels_last);
  MYCONV_CPU_DISPATCH(gy.scalar_type(), "myconv_grouped_grad_input_cpu", [&] {
    grouped_grad_input<scalar_t>(gy.const_data_ptr<scalar_t>(), w.const_data_ptr<scalar_t>(), g, s, channels_last,
                                 gi.mutable_data_ptr<scalar_t>());
  });
}

void grouped_grad_weight_cpu(const at::Tensor& gy, const at::Tensor& x, const ConvGeometry& g, int64_t groups,
                             bool channels_last, const at::Tensor& gw) {
  const GroupedShape s(g, gy.size(0), gw.size(0), groups);
  check_layout(gy, channels_last);
  check_layout(x, channels_last);
  MYCONV_CPU_DISPATCH(gy.scalar_type(), "myconv_grouped_grad_weight_cpu", [&] {
    grouped_grad_weight<scalar_t>(gy.const_data_ptr<scalar_t>(), x.const_data_ptr<scalar_t>(), g, s, channels_last,
                                  gw.mutable_data_ptr<scalar_t>());
  });
}

} // namespace myconv::detail
