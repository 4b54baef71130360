// The three passes of a convolution over column tiles, written once for every
// dimensionality and device on top of a Backend.
//
// The matrices. With L output positions per image, groups G, M = C_out/G
// output channels and K = C_in/G * taps column rows per group, a *tile* holds
// some output positions (part of one image, or a run of whole images) and its
// columns are one (K x P) matrix per group (channels-first) or one (P x K)
// matrix (channels-last: rows ordered (kd, kh, kw, c), so that im2col copies
// contiguous channel runs and the GEMM writes channels-last rows):
//
//   forward      out[g]  = W[g] @ cols[g]          channels-first  (M x P)
//                out[g]  = cols[g] @ W[g]^T        channels-last   (P x M)
//   grad_input   cols[g] = W[g]^T @ gy[g];  gI += col2im(cols)
//   grad_weight  gW[g]  += gy[g] @ cols[g]^T       (im2col recomputed, never stored)
//
// Each pass walks the plan pass_plan.h made for it (plan_pass): the path, the
// tiles and blocks, the workers and their buffers are decided there, before
// any work; here they are only carried out.
//
// Paths inside the passes (chosen from the problem and the backend's Tuning):
//  * columns: im2col into a tile-sized buffer, then GEMM. CPU tiles are sized
//    to the L2 cache so the GEMM reads columns that im2col has just written;
//    CUDA tiles are whole images, as many as the workspace limit allows.
//  * 1x1, stride 1, no padding: the input already is the column matrix; the
//    GEMM reads it (and writes grad_input) in place, no im2col / col2im.
//  * channels-last input: channels-last columns and output (backends that can).
//
// Work items, and why results do not depend on the thread count:
//  * forward: one item per tile; every output element is one GEMM dot product.
//  * grad_input: one item per (sequence of tiles that write the same images,
//    block of input channels); an item adds its tiles in order.
//  * grad_weight: one item per (chunk of tiles, block of columns): each item
//    sums its chunk into its own partial matrix; the partials are added in
//    chunk order.
// A worker only lends its buffers.
#pragma once

#include <ATen/core/Tensor.h>

#include <optional>

#include "backend.h"
#include "conv_plan.h"
#include "pass_plan.h"

namespace myconv::detail {

// out (N, C_out, D', H', W') <- the convolution of x (N, C_in, D, H, W) with
// weight (C_out, C_in/G, kD, kH, kW) and bias; x and out in the problem's layout.
void forward_columns(const Backend& backend, const PassPlan& plan, const ConvProblem& p, const at::Tensor& x,
                     const at::Tensor& weight, const std::optional<at::Tensor>& bias, const at::Tensor& out);

// gi (N, C_in, D, H, W) <- the input gradient for grad_output gy; gy and gi in
// the problem's layout.
void grad_input_columns(const Backend& backend, const PassPlan& plan, const ConvProblem& p, const at::Tensor& gy,
                        const at::Tensor& weight, const at::Tensor& gi);

// The weight gradient for input x and grad_output gy, as (C_out, C_in/G, kD,
// kH, kW), laid out in the problem's layout.
at::Tensor grad_weight_columns(const Backend& backend, const PassPlan& plan, const ConvProblem& p, const at::Tensor& x,
                               const at::Tensor& gy);

} // namespace myconv::detail
