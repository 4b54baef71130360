// What each thread of the CUDA direct grouped kernels does (depthwise and
// other grouped convolutions with a tiny per-group K, Backend::grouped_*),
// written once for the device and the host.
//
// cuda/grouped.cu wraps these functions in __global__ kernels; the
// GoogleTest suite (tests/cpp/test_cuda_grouped.cpp) compiles this very
// header with the host compiler and runs the same functions over the same
// thread -> element mapping, against the CPU backend's direct kernels and
// ATen's convolution. Plain integers and templates only: no CUDA runtime
// here. Memory is reached only through an Access object (start / zero_sum,
// add, store), so that a host test can count writes, trace which products an
// element sums, or record the offsets of a problem too large to allocate.
// Offsets are 64-bit; coordinates come from 32-bit magic-number divisions
// (Divider<uint32_t>, as the column kernels') where the launch fits 31 bits.
//
// Tensors are 5-D (N, C, D, H, W) (1-D and 2-D problems with unit leading
// sizes), all contiguous, or all channels-last contiguous (N, D, H, W, C);
// the weight is (C_out, C_in/groups, kD, kH, kW) contiguous. Every result
// element is summed in a fixed order, whatever the grid: by one thread
// (forward, grad_input); grad_weight by one block per slice of the output
// positions, its lanes' sums combined by a fixed tree, then the slices' sums
// added in slice order. No atomics: bitwise reproducible.
//  - forward: one output element per thread: bias + the sum over taps
//    (kd, kh, kw) in order, and within a tap over the group's input channels;
//  - grad_input: one input element per thread, a gather over the taps
//    (kd, kh, kw) that read it, and within a tap over the group's output
//    channels;
//  - grad_weight: the flattened output positions (n, od, oh, ow) are cut
//    into `slices` equal runs (grouped_grad_weight_slices: from the problem
//    alone, so that few weight elements still fill the GPU); one block of
//    kThreads lanes per (weight element, slice): lane l sums the products of
//    the run's positions l, l + kThreads, ..., then the lanes' sums are
//    added pairwise (lane_tree_step), halving each time; with several slices
//    a second launch adds each element's slice sums in slice order
//    (grouped_slice_sum_element). Channels-last tensors (GroupedGeom::run >
//    1): a block per (run of `run` consecutive output channels, input
//    channel of the group, tap, slice), lane l taking channel l % run of the
//    run and positions l / run, l / run + kThreads / run, ...; the tree
//    stops at `run` sums, one per channel. A warp's loads of a position are
//    then `run` consecutive channels of grad_output (a sector, where C is a
//    multiple of the run) and of the input for depthwise layers (with a
//    channel multiplier they repeat, with several input channels a group
//    they lie cg apart), where a lane per position would read a sector each.
// Sums are in Access::Acc: float for float16 / bfloat16 (at::opmath_type),
// the dtype itself for float and double.
#pragma once

#include <cstdint>

#include "im2col_elements.h"  // MYCONV_HOST_DEVICE, kThreads, kMaxBlocks, blocks_for, grid_stride

namespace myconv::cuda {

// ---- geometry ------------------------------------------------------------------------

// grad_weight's slices of `positions` output positions (N * OD * OH * OW)
// for `elements` blocks before slicing (weight elements, or runs of them)
// whose lanes take `run` channels a position: as many as keep every lane at
// least 16 positions (a slice at least kSlicePositions / run positions long),
// up to the number that gives kSliceTargetBlocks blocks (a GPU full several
// times over), at most kMaxSlices. A function of the problem only: the sums'
// order, hence their bits, is the same on every device and grid.
constexpr int64_t kSlicePositions = 16 * kThreads;
constexpr int64_t kSliceTargetBlocks = 4096;
constexpr int64_t kMaxSlices = 64;
inline int64_t slices_for(int64_t positions, int64_t elements, int64_t run) {
  if (elements <= 0) {
    return 1;
  }
  const int64_t by_length = positions * run / kSlicePositions;
  const int64_t by_blocks = (kSliceTargetBlocks + elements - 1) / elements;
  return std::clamp<int64_t>(std::min(by_length, by_blocks), 1, kMaxSlices);
}

// The 32-bit divisors of a launch's coordinates (GroupedGeom::narrow).
struct GroupedDivisors {
  Divider<uint32_t> out_c, out_d, out_h, out_w;  // forward: element -> (n, o, od, oh, ow)
  Divider<uint32_t> in_c, in_d, in_h, in_w;      // grad_input: element -> (n, c, d, h, w)
  Divider<uint32_t> mg, cg;                      // a channel's group
  Divider<uint32_t> stride_d, stride_h, stride_w;  // grad_input's tap walks
  Divider<uint32_t> kernel_d, kernel_h, kernel_w, slices;  // grad_weight: item -> (o, ci, kd, kh, kw, slice)
};

// A grouped convolution in plain integers, with the element strides of its
// tensors in their layout. "in" tensors are (N, C_in, D, H, W): x, grad_input;
// "out" tensors (N, C_out, OD, OH, OW): the output, grad_output. Built on the
// host (make_grouped_geom in cuda/grouped_kernels.h).
struct GroupedGeom {
  int64_t batch, channels, out_channels, cg, mg;  // C_in, C_out, C_in/groups, C_out/groups
  int64_t depth, height, width, out_d, out_h, out_w;
  int64_t kernel_d, kernel_h, kernel_w, stride_d, stride_h, stride_w;
  int64_t pad_d, pad_h, pad_w, dilation_d, dilation_h, dilation_w;
  bool channels_last;
  // element strides: one image, one channel, one pixel (along W), one row
  // (along H), one plane (along D)
  int64_t in_image, in_channel, in_pixel, in_row, in_plane;
  int64_t out_image, out_channel, out_pixel, out_row, out_plane;
  // grad_input's walk over the taps of an axis: dilation = q * stride + r
  int64_t dil_q_d, dil_r_d, dil_q_h, dil_r_h, dil_q_w, dil_r_w;
  // grad_weight's lanes per position: 1, or (channels-last tensors) a run
  // of that many consecutive output channels, a power of two up to kLanes
  // (grouped_grad_weight_run: a 32-byte sector's worth).
  int64_t run;
  // grad_weight's slices of the output positions (slices_for, over its
  // blocks before slicing: grouped_grad_weight_items / slices).
  int64_t slices;
  // Every element or item index of the three launches, and every input index
  // plus its padding, fits 31 bits: their coordinates come from 32-bit
  // divisions by magic numbers (`fast`; a multiply-high and a shift, several
  // times cheaper than a GPU's integer division, a multi-instruction
  // sequence). Offsets are 64-bit either way.
  bool narrow;
  GroupedDivisors fast;

  MYCONV_HOST_DEVICE int64_t taps() const { return kernel_d * kernel_h * kernel_w; }
  MYCONV_HOST_DEVICE int64_t positions() const { return out_d * out_h * out_w; }  // per image
};

// Fills the strides and the tap-walk constants of a geometry whose sizes,
// window and layout are set.
inline GroupedGeom with_strides(GroupedGeom g) {
  const auto strides = [&](int64_t c, int64_t d, int64_t h, int64_t w, int64_t& image, int64_t& channel,
                           int64_t& pixel, int64_t& row, int64_t& plane) {
    pixel = g.channels_last ? c : 1;
    channel = g.channels_last ? 1 : d * h * w;
    row = w * pixel;
    plane = h * row;
    image = c * d * h * w;
  };
  strides(g.channels, g.depth, g.height, g.width, g.in_image, g.in_channel, g.in_pixel, g.in_row, g.in_plane);
  strides(g.out_channels, g.out_d, g.out_h, g.out_w, g.out_image, g.out_channel, g.out_pixel, g.out_row,
          g.out_plane);
  g.dil_q_d = g.dilation_d / g.stride_d;
  g.dil_r_d = g.dilation_d % g.stride_d;
  g.dil_q_h = g.dilation_h / g.stride_h;
  g.dil_r_h = g.dilation_h % g.stride_h;
  g.dil_q_w = g.dilation_w / g.stride_w;
  g.dil_r_w = g.dilation_w % g.stride_w;
  const int64_t weights = g.out_channels * g.cg * g.taps();
  g.run = g.run < 1 ? 1 : g.run;
  // (a block per (run of channels, input channel, tap) before slicing)
  const int64_t unsliced = (g.out_channels + g.run - 1) / g.run * g.cg * g.taps();
  g.slices = slices_for(g.batch * g.positions(), unsliced, g.run);
  constexpr int64_t kNarrow = (int64_t{1} << 31) - 1;
  const int64_t outputs = g.batch * g.out_image, inputs = g.batch * g.in_image;
  g.narrow = outputs <= kNarrow && inputs <= kNarrow && g.out_channels <= kNarrow && g.channels <= kNarrow &&
             g.depth + g.pad_d <= kNarrow && g.height + g.pad_h <= kNarrow && g.width + g.pad_w <= kNarrow &&
             g.stride_d <= kNarrow && g.stride_h <= kNarrow && g.stride_w <= kNarrow &&
             g.out_d <= kNarrow && g.out_h <= kNarrow && g.out_w <= kNarrow && g.mg >= 1 && g.cg >= 1 &&
             weights * g.slices <= kNarrow && unsliced * g.run * g.slices <= kNarrow;
  if (g.narrow) {
    const auto d = [](int64_t v) { return Divider<uint32_t>(static_cast<uint32_t>(v < 1 ? 1 : v)); };
    g.fast = {d(g.out_channels), d(g.out_d),    d(g.out_h),    d(g.out_w),      d(g.channels),
              d(g.depth),        d(g.height),   d(g.width),    d(g.mg),         d(g.cg),
              d(g.stride_d),     d(g.stride_h), d(g.stride_w), d(g.kernel_d),   d(g.kernel_h),
              d(g.kernel_w),     d(g.slices)};
  }
  return g;
}

// Elements (threads' or blocks' work items) of each kernel.
MYCONV_HOST_DEVICE inline int64_t grouped_forward_elements(const GroupedGeom& g) {
  return g.batch * g.out_channels * g.positions();  // one per output element, in memory order
}
MYCONV_HOST_DEVICE inline int64_t grouped_grad_input_elements(const GroupedGeom& g) {
  return g.batch * g.channels * g.depth * g.height * g.width;  // one per input element, in memory order
}
MYCONV_HOST_DEVICE inline int64_t grouped_grad_weight_elements(const GroupedGeom& g) {
  return g.out_channels * g.cg * g.taps();  // one per weight element
}

// grad_weight's slices of the output positions (GroupedGeom::slices).
MYCONV_HOST_DEVICE inline int64_t grouped_grad_weight_slices(const GroupedGeom& g) {
  return g.slices;
}

// grad_weight's block work items: one per (weight element, slice), element-major
// (run > 1: one per (run of output channels, input channel, tap, slice)).
MYCONV_HOST_DEVICE inline int64_t grouped_grad_weight_items(const GroupedGeom& g) {
  return (g.out_channels + g.run - 1) / g.run * g.cg * g.taps() * grouped_grad_weight_slices(g);
}

// ---- the block -> element mapping of grad_weight ------------------------------------------

// Lanes (threads of a block) that share one grad_weight element: the block.
constexpr int64_t kLanes = kThreads;
static_assert((kLanes & (kLanes - 1)) == 0, "the lanes' tree needs a power of two");

// Blocks of a launch whose blocks loop over `total` elements: enough to fill
// the GPU, no more than needed.
inline unsigned int reduction_blocks_for(int64_t total) {
  return static_cast<unsigned int>(total < 1 ? 1 : (total < kMaxBlocks ? total : kMaxBlocks));
}

// The block-stride loop of block `block` in a grid of `blocks`: elements
// block, block + blocks, ... below total. Every lane of a block runs the same
// loop (the lanes of one element meet at the block's barriers).
template <typename F>
MYCONV_HOST_DEVICE inline void block_stride(int64_t block, int64_t blocks, int64_t total, F& fn) {
  for (int64_t e = block; e < total; e += blocks) {
    fn(e);
  }
}

// One step of the lanes' tree: the first `half` lanes add the sum `half`
// lanes above theirs. Run for half = kLanes / 2, kLanes / 4, ..., 1 (with a
// barrier after each on the device), it leaves the total in sums[0], always
// added in the same order.
template <typename T>
MYCONV_HOST_DEVICE inline void lane_tree_step(T* sums, int64_t lane, int64_t half) {
  if (lane < half) {
    sums[lane] += sums[lane + half];
  }
}

// ---- per-element work --------------------------------------------------------------------

// Element i of a (N, C, D, H, W) tensor in its layout: (n, c, d, h, w).
struct Coords {
  int64_t n, c, d, h, w;
};

// Element i of a tensor of (C, D, H, W) images in the layout's order, by the
// divisors of C, D, H and W (Divider<uint32_t>, or Divider<int64_t>).
template <typename Div>
MYCONV_HOST_DEVICE inline Coords coords_by(int64_t index, const Div& C, const Div& D, const Div& H, const Div& W,
                                           bool channels_last) {
  using Index = decltype(C.d);
  Index i = static_cast<Index>(index), r = 0;
  Coords p;
  if (channels_last) {  // (n, d, h, w, c)
    i = C.divmod(i, r), p.c = r;
    i = W.divmod(i, r), p.w = r;
    i = H.divmod(i, r), p.h = r;
    i = D.divmod(i, r), p.d = r;
  } else {  // (n, c, d, h, w)
    i = W.divmod(i, r), p.w = r;
    i = H.divmod(i, r), p.h = r;
    i = D.divmod(i, r), p.d = r;
    i = C.divmod(i, r), p.c = r;
  }
  p.n = static_cast<int64_t>(i);
  return p;
}

// Element i of the forward's output (out = true) or of grad_input.
MYCONV_HOST_DEVICE inline Coords coords_of(const GroupedGeom& g, int64_t i, bool out) {
  if (g.narrow) {
    const GroupedDivisors& f = g.fast;
    return out ? coords_by(i, f.out_c, f.out_d, f.out_h, f.out_w, g.channels_last)
               : coords_by(i, f.in_c, f.in_d, f.in_h, f.in_w, g.channels_last);
  }
  using D64 = Divider<int64_t>;
  return out ? coords_by(i, D64(g.out_channels), D64(g.out_d), D64(g.out_h), D64(g.out_w), g.channels_last)
             : coords_by(i, D64(g.channels), D64(g.depth), D64(g.height), D64(g.width), g.channels_last);
}

// The group of output channel o (of input channel c: by = cg).
MYCONV_HOST_DEVICE inline int64_t group_of(const GroupedGeom& g, int64_t channel, int64_t per_group,
                                           const Divider<uint32_t>& fast) {
  if (per_group == 1) {
    return channel;
  }
  return g.narrow ? static_cast<int64_t>(fast.div(static_cast<uint32_t>(channel))) : channel / per_group;
}

// Output position p of the flattened (n, od, oh, ow) as its digits (c unused).
MYCONV_HOST_DEVICE inline Coords position_digits(const GroupedGeom& g, int64_t p) {
  Coords digits{0, 0, 0, 0, 0};
  if (g.narrow) {  // p < N * OD * OH * OW <= the output's elements < 2^31, or p = a step of at most kLanes
    const GroupedDivisors& f = g.fast;
    uint32_t q = static_cast<uint32_t>(p), rest = 0;
    q = f.out_w.divmod(q, rest), digits.w = rest;
    q = f.out_h.divmod(q, rest), digits.h = rest;
    digits.n = f.out_d.divmod(q, rest), digits.d = rest;
    return digits;
  }
  digits.w = p % g.out_w, p /= g.out_w;
  digits.h = p % g.out_h, p /= g.out_h;
  digits.d = p % g.out_d, digits.n = p / g.out_d;
  return digits;
}

// forward element i (output (n, o, od, oh, ow) in the layout's order, so that
// consecutive threads write consecutive elements): io.start(o) (the bias, or
// zero), then io.add(sum, weight, input) for each tap (kd, kh, kw) inside the
// image, in order, and within it each input channel ci of o's group:
// weight (o, ci, kd, kh, kw), input (n, group * cg + ci, id, ih, iw); then
// io.store(i, sum).
template <typename Access>
MYCONV_HOST_DEVICE inline void grouped_forward_element(const GroupedGeom& g, int64_t i, Access& io) {
  const Coords p = coords_of(g, i, /*out=*/true);
  const int64_t o = p.c;
  const int64_t group = group_of(g, o, g.mg, g.fast.mg);
  const int64_t kk = g.taps();
  const int64_t x0 = p.n * g.in_image + group * g.cg * g.in_channel;
  const int64_t w0 = o * g.cg * kk;
  const int64_t id0 = p.d * g.stride_d - g.pad_d, ih0 = p.h * g.stride_h - g.pad_h,
                iw0 = p.w * g.stride_w - g.pad_w;
  auto sum = io.start(o);
  for (int64_t kd = 0; kd < g.kernel_d; ++kd) {
    const int64_t id = id0 + kd * g.dilation_d;
    if (id < 0) {
      continue;
    }
    if (id >= g.depth) {
      break;  // the taps only move further
    }
    for (int64_t kh = 0; kh < g.kernel_h; ++kh) {
      const int64_t ih = ih0 + kh * g.dilation_h;
      if (ih < 0) {
        continue;
      }
      if (ih >= g.height) {
        break;
      }
      const int64_t x_row = x0 + id * g.in_plane + ih * g.in_row;
      const int64_t w_row = w0 + (kd * g.kernel_h + kh) * g.kernel_w;
      for (int64_t kw = 0; kw < g.kernel_w; ++kw) {
        const int64_t iw = iw0 + kw * g.dilation_w;
        if (iw < 0) {
          continue;
        }
        if (iw >= g.width) {
          break;
        }
        const int64_t x_tap = x_row + iw * g.in_pixel;
        for (int64_t ci = 0; ci < g.cg; ++ci) {
          io.add(sum, w_row + kw + ci * kk, x_tap + ci * g.in_channel);
        }
      }
    }
  }
  io.store(i, sum);
}

// The output positions whose taps read input index x along one axis, walked
// tap by tap without a division per tap: tap k reads x from position
// (x + pad - k * dilation) / stride when that is a whole number, i.e. when
// offset = x + pad - k * dilation = q * stride + r has r == 0. Each tap
// lowers the offset by dilation = dil_q * stride + dil_r.
struct TapWalk {
  int64_t q, r;  // offset = q * stride + r, 0 <= r < stride (q < 0: offset < 0)
};

MYCONV_HOST_DEVICE inline TapWalk tap_walk(int64_t x, int64_t pad, int64_t stride, bool narrow,
                                           const Divider<uint32_t>& fast_stride) {
  const int64_t offset = x + pad;  // >= 0
  if (narrow) {
    const uint32_t q = fast_stride.div(static_cast<uint32_t>(offset));
    return {static_cast<int64_t>(q), offset - static_cast<int64_t>(q) * stride};
  }
  const int64_t q = offset / stride;
  return {q, offset - q * stride};
}

MYCONV_HOST_DEVICE inline void next_tap(TapWalk& t, int64_t stride, int64_t dil_q, int64_t dil_r) {
  t.q -= dil_q;
  t.r -= dil_r;
  if (t.r < 0) {
    t.r += stride;
    --t.q;
  }
}

// grad_input element i (input (n, c, d, h, w) in the layout's order): a
// gather. io.add(sum, weight, grad_output) for each tap (kd, kh, kw) that
// reads the element from an existing output position (od, oh, ow), in order,
// and within it each output channel j of c's group: weight (group * mg + j,
// c % cg, kd, kh, kw), grad_output (n, group * mg + j, od, oh, ow); then
// io.store(i, sum). The output positions may be fewer than the window's (a
// transposed convolution's output_padding): taps that would read from the
// missing ones add nothing.
template <typename Access>
MYCONV_HOST_DEVICE inline void grouped_grad_input_element(const GroupedGeom& g, int64_t i, Access& io) {
  const Coords p = coords_of(g, i, /*out=*/false);
  const int64_t group = group_of(g, p.c, g.cg, g.fast.cg);
  const int64_t ci = p.c - group * g.cg;
  const int64_t kk = g.taps();
  const int64_t y0 = p.n * g.out_image + group * g.mg * g.out_channel;
  const int64_t w0 = (group * g.mg * g.cg + ci) * kk;
  const int64_t w_next = g.cg * kk;  // from output channel j's weights to j + 1's
  auto sum = io.zero_sum();
  TapWalk td = tap_walk(p.d, g.pad_d, g.stride_d, g.narrow, g.fast.stride_d);
  for (int64_t kd = 0; kd < g.kernel_d; ++kd, next_tap(td, g.stride_d, g.dil_q_d, g.dil_r_d)) {
    if (td.q < 0) {
      break;  // the offset only falls
    }
    if (td.r != 0 || td.q >= g.out_d) {
      continue;
    }
    TapWalk th = tap_walk(p.h, g.pad_h, g.stride_h, g.narrow, g.fast.stride_h);
    for (int64_t kh = 0; kh < g.kernel_h; ++kh, next_tap(th, g.stride_h, g.dil_q_h, g.dil_r_h)) {
      if (th.q < 0) {
        break;
      }
      if (th.r != 0 || th.q >= g.out_h) {
        continue;
      }
      const int64_t y_row = y0 + td.q * g.out_plane + th.q * g.out_row;
      const int64_t w_row = w0 + (kd * g.kernel_h + kh) * g.kernel_w;
      TapWalk tw = tap_walk(p.w, g.pad_w, g.stride_w, g.narrow, g.fast.stride_w);
      for (int64_t kw = 0; kw < g.kernel_w; ++kw, next_tap(tw, g.stride_w, g.dil_q_w, g.dil_r_w)) {
        if (tw.q < 0) {
          break;
        }
        if (tw.r != 0 || tw.q >= g.out_w) {
          continue;
        }
        const int64_t y_tap = y_row + tw.q * g.out_pixel;
        for (int64_t j = 0; j < g.mg; ++j) {
          io.add(sum, w_row + kw + j * w_next, y_tap + j * g.out_channel);
        }
      }
    }
  }
  io.store(i, sum);
}

// grad_weight item r = (element e, slice s) of `slices`, lane `lane` of
// `lanes`, where e is weight (o, ci, kd, kh, kw) in contiguous order and the
// slice holds flattened output positions [s * total / slices, (s + 1) *
// total / slices) of the total N * OD * OH * OW (p = ((n * OD + od) * OH +
// oh) * OW + ow): io.add(sum, grad_output, input) for the slice's positions
// begin + lane, begin + lane + lanes, ... whose tap (kd, kh, kw) lies inside
// the image: grad_output (n, o, od, oh, ow), input (n, group * cg + ci, id,
// ih, iw). Returns the lane's sum. Consecutive lanes take consecutive
// positions (coalesced along W for channels-first tensors); the position
// advances by `lanes` as a mixed-radix number, without a division per step.
// With g.run > 1, item r is (run u of output channels, ci, kd, kh, kw, s)
// and the lane takes output channel o = u * run + lane % run (none past the
// last channel) and positions begin + lane / run, then every lanes / run:
// consecutive lanes take consecutive channels of a position (coalesced
// along the channels of channels-last tensors).
template <typename Access>
MYCONV_HOST_DEVICE inline auto grouped_grad_weight_partial(const GroupedGeom& g, int64_t r, int64_t slices,
                                                           int64_t lane, int64_t lanes, Access& io) {
  auto sum = io.zero_sum();
  const int64_t total = g.batch * g.positions();
  // the item's element e = (o, ci, kd, kh, kw) and slice
  int64_t kw, kh, kd, ci, slice, o;
  if (g.narrow && slices == g.slices) {
    const GroupedDivisors& f = g.fast;
    uint32_t q = static_cast<uint32_t>(r), rest = 0;
    q = f.slices.divmod(q, rest), slice = rest;
    q = f.kernel_w.divmod(q, rest), kw = rest;
    q = f.kernel_h.divmod(q, rest), kh = rest;
    q = f.kernel_d.divmod(q, rest), kd = rest;
    o = f.cg.divmod(q, rest), ci = rest;
  } else {
    int64_t q = r / slices;
    slice = r - q * slices;
    kw = q % g.kernel_w, q /= g.kernel_w;
    kh = q % g.kernel_h, q /= g.kernel_h;
    kd = q % g.kernel_d, q /= g.kernel_d;
    o = q / g.cg, ci = q - o * g.cg;
  }
  int64_t position_lane = lane, position_lanes = lanes;
  if (g.run > 1) {  // (o is the run's index here)
    o = o * g.run + lane % g.run;
    position_lane = lane / g.run;
    position_lanes = lanes / g.run;
    if (o >= g.out_channels) {
      return sum;
    }
  }
  const int64_t begin = slice * total / slices, end = (slice + 1) * total / slices;
  const int64_t first = begin + position_lane;
  if (first >= end) {
    return sum;
  }
  const int64_t c = group_of(g, o, g.mg, g.fast.mg) * g.cg + ci;
  const int64_t d_off = kd * g.dilation_d - g.pad_d, h_off = kh * g.dilation_h - g.pad_h,
                w_off = kw * g.dilation_w - g.pad_w;
  const int64_t y0 = o * g.out_channel, x0 = c * g.in_channel;
  // the first position, and the step, as digits (n, od, oh, ow)
  const Coords at = position_digits(g, first), step = position_digits(g, position_lanes);
  int64_t ow = at.w, oh = at.h, od = at.d, n = at.n;
  const int64_t step_w = step.w, step_h = step.h, step_d = step.d, step_n = step.n;
  for (int64_t p = first; p < end; p += position_lanes) {
    const int64_t id = od * g.stride_d + d_off, ih = oh * g.stride_h + h_off, iw = ow * g.stride_w + w_off;
    if (id >= 0 && id < g.depth && ih >= 0 && ih < g.height && iw >= 0 && iw < g.width) {
      io.add(sum, y0 + n * g.out_image + od * g.out_plane + oh * g.out_row + ow * g.out_pixel,
             x0 + n * g.in_image + id * g.in_plane + ih * g.in_row + iw * g.in_pixel);
    }
    // p += position_lanes: each digit plus the step's digit and the carry from below
    // (at most one: both are below the digit's base)
    ow += step_w;
    int64_t carry = ow >= g.out_w ? 1 : 0;
    ow -= carry * g.out_w;
    oh += step_h + carry;
    carry = oh >= g.out_h ? 1 : 0;
    oh -= carry * g.out_h;
    od += step_d + carry;
    carry = od >= g.out_d ? 1 : 0;
    od -= carry * g.out_d;
    n += step_n + carry;
  }
  return sum;
}

// Where lane j's total of grad_weight item r goes (j < g.run; the lanes'
// tree leaves channel j's total in lane j): element e's slice s at
// e * slices + s (e itself with one slice); -1 for a lane past the last
// output channel. (64-bit divisions: once per item, by g.run lanes.)
MYCONV_HOST_DEVICE inline int64_t grouped_grad_weight_target(const GroupedGeom& g, int64_t r, int64_t j) {
  if (g.run == 1) {
    return r;
  }
  const int64_t slices = g.slices, taps = g.taps();
  const int64_t slice = r % slices, q = r / slices;  // q = (u * cg + ci) * taps + tap
  const int64_t tap = q % taps, ci = q / taps % g.cg, o = q / taps / g.cg * g.run + j;
  return o < g.out_channels ? ((o * g.cg + ci) * taps + tap) * slices + slice : -1;
}

// grad_weight with several slices, element e: the sum of its slices' sums,
// in slice order (io.add(sum, e * slices + s)), then io.store(e, sum).
template <typename Access>
MYCONV_HOST_DEVICE inline void grouped_slice_sum_element(const GroupedGeom& g, int64_t e, Access& io) {
  const int64_t slices = g.slices;
  auto sum = io.zero_sum();
  for (int64_t s = 0; s < slices; ++s) {
    io.add(sum, e * slices + s);
  }
  io.store(e, sum);
}

// ---- the memory access of the real kernels -------------------------------------------------
// Built inside the kernels from their __restrict__ pointer parameters (three
// inputs, one output; unused inputs are null), and on the host by the tests.

// Every pass sums products first[i] * second[j] in acc_t and stores the sum
// in the dtype: forward, out <- bias + w * x (first = w, second = x);
// grad_input, gi <- w * gy (first = w, second = gy); grad_weight,
// gw <- gy * x (first = gy, second = x).
template <typename scalar_t, typename acc_t>
struct GroupedProductAccess {
  using In = scalar_t;
  using Out = scalar_t;
  using Acc = acc_t;
  const scalar_t* first;
  const scalar_t* second;
  const scalar_t* bias;  // forward's, or null
  scalar_t* out;
  MYCONV_HOST_DEVICE acc_t start(int64_t o) const { return bias != nullptr ? static_cast<acc_t>(bias[o]) : acc_t(0); }
  MYCONV_HOST_DEVICE acc_t zero_sum() const { return acc_t(0); }
  MYCONV_HOST_DEVICE void add(acc_t& sum, int64_t i, int64_t j) const {
    sum += static_cast<acc_t>(first[i]) * static_cast<acc_t>(second[j]);
  }
  MYCONV_HOST_DEVICE void store(int64_t e, acc_t sum) const { out[e] = static_cast<scalar_t>(sum); }
};

// grad_weight's slice sums (with several slices): products summed as
// GroupedProductAccess does, each lane tree's total stored in acc_t.
template <typename scalar_t, typename acc_t>
struct GroupedSliceAccess {
  using In = scalar_t;
  using Out = acc_t;
  using Acc = acc_t;
  const scalar_t* first;
  const scalar_t* second;
  const scalar_t* unused;
  acc_t* out;
  MYCONV_HOST_DEVICE acc_t zero_sum() const { return acc_t(0); }
  MYCONV_HOST_DEVICE void add(acc_t& sum, int64_t i, int64_t j) const {
    sum += static_cast<acc_t>(first[i]) * static_cast<acc_t>(second[j]);
  }
  MYCONV_HOST_DEVICE void store(int64_t r, acc_t sum) const { out[r] = sum; }
};

// The slice sums added into grad_weight: acc_t in, the dtype out.
template <typename scalar_t, typename acc_t>
struct GroupedSliceSumAccess {
  using In = acc_t;
  using Out = scalar_t;
  using Acc = acc_t;
  const acc_t* slice_sums;
  const acc_t* unused_b;
  const acc_t* unused_c;
  scalar_t* out;
  MYCONV_HOST_DEVICE acc_t zero_sum() const { return acc_t(0); }
  MYCONV_HOST_DEVICE void add(acc_t& sum, int64_t r) const { sum += slice_sums[r]; }
  MYCONV_HOST_DEVICE void store(int64_t e, acc_t sum) const { out[e] = static_cast<scalar_t>(sum); }
};

// ---- the work of a launch ------------------------------------------------------------------

// What element i of a launch does, for any Access: the launchers' Work types.
struct GroupedForwardWork {
  template <typename Access>
  MYCONV_HOST_DEVICE static void run(const GroupedGeom& g, int64_t i, Access& io) {
    grouped_forward_element(g, i, io);
  }
};

struct GroupedGradInputWork {
  template <typename Access>
  MYCONV_HOST_DEVICE static void run(const GroupedGeom& g, int64_t i, Access& io) {
    grouped_grad_input_element(g, i, io);
  }
};

// A block's work: each lane's partial sum of item r (element, slice), then
// (the launcher) the lanes' tree down to outputs(g) sums, and for each lane
// j below that whose target(g, r, j) is not -1, io.store(target, sums[j]).
struct GroupedGradWeightWork {
  template <typename Access>
  MYCONV_HOST_DEVICE static auto partial(const GroupedGeom& g, int64_t r, int64_t lane, int64_t lanes, Access& io) {
    return grouped_grad_weight_partial(g, r, g.slices, lane, lanes, io);
  }
  MYCONV_HOST_DEVICE static int64_t outputs(const GroupedGeom& g) { return g.run; }
  MYCONV_HOST_DEVICE static int64_t target(const GroupedGeom& g, int64_t r, int64_t j) {
    return grouped_grad_weight_target(g, r, j);
  }
};

struct GroupedSliceSumWork {
  template <typename Access>
  MYCONV_HOST_DEVICE static void run(const GroupedGeom& g, int64_t e, Access& io) {
    grouped_slice_sum_element(g, e, io);
  }
};

} // namespace myconv::cuda
