// LibTorch modules whose convolutions run through myconv's operators:
// myconv::nn::Conv1d / Conv2d / Conv3d and ConvTranspose1d / 2d / 3d, drop-ins
// for their torch::nn namesakes.
//
// They take torch's own options (myconv::nn::Conv2dOptions is
// torch::nn::Conv2dOptions: .stride(), .padding() with torch::kSame /
// torch::kValid, .dilation(), .groups(), .bias(), .padding_mode()), build on
// torch::nn::ConvNdImpl (parameters "weight" and "bias" with torch's shapes
// and initialisation, the same checks of the options, reset(), clone()), and
// are held like torch's modules (myconv::nn::Conv2d is a ModuleHolder:
// ->forward(x), ->to(device / dtype), torch::nn::Sequential). So parameters
// and torch::save'd state move between torch::nn::Conv2d and
// myconv::nn::Conv2d unchanged. They are not torch::nn::Conv2dImpl, so
// module->as<torch::nn::Conv2d>() does not find them (use
// ->as<myconv::nn::Conv2d>()). One difference from torch::nn: padding
// torch::kSame with a non-zeros padding_mode pads as Python's nn.Conv2d does
// (torch's C++ module pads the dimensions in the wrong order).
//
//   myconv::nn::Conv2d conv(myconv::nn::Conv2dOptions(3, 16, 3).stride(2).padding(1));
//   myconv::nn::ConvTranspose2d up(myconv::nn::ConvTranspose2dOptions(16, 3, 3).stride(2).padding(1));
//   at::Tensor y = up->forward(conv->forward(x), std::vector<int64_t>{64, 64});  // output_size
#pragma once

#include <c10/util/overloaded.h>
#include <torch/nn/functional/padding.h>
#include <torch/nn/modules/common.h>
#include <torch/nn/modules/conv.h>
#include <torch/nn/options/conv.h>
#include <torch/nn/pimpl.h>

#include <cstdint>
#include <optional>
#include <ostream>
#include <sstream>
#include <string>
#include <variant>
#include <vector>

#include "ops.h"

namespace myconv::nn {

using Conv1dOptions = torch::nn::Conv1dOptions;
using Conv2dOptions = torch::nn::Conv2dOptions;
using Conv3dOptions = torch::nn::Conv3dOptions;
using ConvTranspose1dOptions = torch::nn::ConvTranspose1dOptions;
using ConvTranspose2dOptions = torch::nn::ConvTranspose2dOptions;
using ConvTranspose3dOptions = torch::nn::ConvTranspose3dOptions;

namespace detail {

// myconv's D-dimensional ops.
template <size_t D>
at::Tensor conv(const at::Tensor& x, const at::Tensor& w, const std::optional<at::Tensor>& b, at::IntArrayRef stride,
                at::IntArrayRef padding, at::IntArrayRef dilation, int64_t groups) {
  static_assert(D >= 1 && D <= 3);
  if constexpr (D == 1) {
    return myconv::conv1d(x, w, b, stride, padding, dilation, groups);
  } else if constexpr (D == 2) {
    return myconv::conv2d(x, w, b, stride, padding, dilation, groups);
  } else {
    return myconv::conv3d(x, w, b, stride, padding, dilation, groups);
  }
}

template <size_t D>
at::Tensor conv_padding(const at::Tensor& x, const at::Tensor& w, const std::optional<at::Tensor>& b,
                        at::IntArrayRef stride, c10::string_view padding, at::IntArrayRef dilation, int64_t groups) {
  if constexpr (D == 1) {
    return myconv::conv1d_padding(x, w, b, stride, padding, dilation, groups);
  } else if constexpr (D == 2) {
    return myconv::conv2d_padding(x, w, b, stride, padding, dilation, groups);
  } else {
    return myconv::conv3d_padding(x, w, b, stride, padding, dilation, groups);
  }
}

template <size_t D>
at::Tensor conv_transpose(const at::Tensor& x, const at::Tensor& w, const std::optional<at::Tensor>& b,
                          at::IntArrayRef stride, at::IntArrayRef padding, at::IntArrayRef output_padding,
                          int64_t groups, at::IntArrayRef dilation) {
  if constexpr (D == 1) {
    return myconv::conv_transpose1d(x, w, b, stride, padding, output_padding, groups, dilation);
  } else if constexpr (D == 2) {
    return myconv::conv_transpose2d(x, w, b, stride, padding, output_padding, groups, dilation);
  } else {
    return myconv::conv_transpose3d(x, w, b, stride, padding, output_padding, groups, dilation);
  }
}

// F::pad's mode for a convolution's (non-zeros) padding_mode.
inline torch::nn::functional::PadFuncOptions::mode_t pad_mode(
    const torch::nn::detail::conv_padding_mode_t& padding_mode) {
  using Mode = torch::nn::functional::PadFuncOptions::mode_t;
  return std::visit(c10::overloaded([](torch::enumtype::kZeros) -> Mode { return torch::kConstant; },
                                    [](torch::enumtype::kReflect) -> Mode { return torch::kReflect; },
                                    [](torch::enumtype::kReplicate) -> Mode { return torch::kReplicate; },
                                    [](torch::enumtype::kCircular) -> Mode { return torch::kCircular; }),
                    padding_mode);
}

inline std::optional<at::Tensor> optional_bias(const at::Tensor& bias) {
  return bias.defined() ? std::optional<at::Tensor>(bias) : std::nullopt;
}

// torch's pretty_print with myconv's name: "myconv::nn::Conv2d(3, 16, ...)".
inline void print_as_myconv(const std::string& torch_text, std::ostream& stream) {
  const std::string prefix = "torch::nn::";
  stream << (torch_text.rfind(prefix, 0) == 0 ? "myconv::nn::" + torch_text.substr(prefix.size()) : torch_text);
}

} // namespace detail

/// A convolution of D spatial dimensions through myconv::convNd; see Conv1d,
/// Conv2d, Conv3d.
template <size_t D>
class ConvImpl : public torch::nn::ConvNdImpl<D, ConvImpl<D>> {
  using Base = torch::nn::ConvNdImpl<D, ConvImpl<D>>;

 public:
  ConvImpl(int64_t in_channels, int64_t out_channels, torch::ExpandingArray<D> kernel_size)
      : ConvImpl(torch::nn::ConvOptions<D>(in_channels, out_channels, kernel_size)) {}
  explicit ConvImpl(torch::nn::ConvOptions<D> options_)
      : Base(torch::nn::detail::ConvNdOptions<D>(options_.in_channels(), options_.out_channels(),
                                                 options_.kernel_size())
                 .stride(options_.stride())
                 .padding(options_.padding())
                 .dilation(options_.dilation())
                 .transposed(false)
                 .output_padding(0)
                 .groups(options_.groups())
                 .bias(options_.bias())
                 .padding_mode(options_.padding_mode())) {
    order_same_padding();
  }

  void reset() override {
    Base::reset();
    order_same_padding();
  }

  at::Tensor forward(const at::Tensor& input) {
    const auto& o = this->options;
    const auto bias = detail::optional_bias(this->bias);
    if (!std::holds_alternative<torch::enumtype::kZeros>(o.padding_mode())) {
      namespace F = torch::nn::functional;
      const at::Tensor padded = F::pad(
          input, F::PadFuncOptions(this->_reversed_padding_repeated_twice).mode(detail::pad_mode(o.padding_mode())));
      return detail::conv<D>(padded, this->weight, bias, *o.stride(), std::vector<int64_t>(D, 0), *o.dilation(),
                             o.groups());
    }
    return std::visit(
        c10::overloaded(
            [&](torch::enumtype::kValid) {
              return detail::conv_padding<D>(input, this->weight, bias, *o.stride(), "valid", *o.dilation(),
                                             o.groups());
            },
            [&](torch::enumtype::kSame) {
              return detail::conv_padding<D>(input, this->weight, bias, *o.stride(), "same", *o.dilation(),
                                             o.groups());
            },
            [&](const torch::ExpandingArray<D>& padding) {
              return detail::conv<D>(input, this->weight, bias, *o.stride(), *padding, *o.dilation(), o.groups());
            }),
        o.padding());
  }

  void pretty_print(std::ostream& stream) const override {
    std::ostringstream text;
    Base::pretty_print(text);
    detail::print_as_myconv(text.str(), stream);
  }

 private:
  // The F::pad amounts of 'same' padding (for a non-zeros padding_mode) last
  // dimension first, as F::pad reads them and as Python's nn.ConvNd lists
  // them (torch's C++ ConvNdImpl lists them first dimension first, which pads
  // the wrong sides of a non-square kernel). The extra zero of an odd total
  // goes after, as for padding="same" in myconv's and torch's ops.
  void order_same_padding() {
    const auto& o = this->options;
    if (!std::holds_alternative<torch::enumtype::kSame>(o.padding())) {
      return;
    }
    auto& pad = this->_reversed_padding_repeated_twice;
    pad.assign(2 * D, 0);
    for (size_t d = 0; d < D; ++d) {
      const int64_t total = (*o.dilation())[d] * ((*o.kernel_size())[d] - 1), before = total / 2;
      pad[2 * (D - 1 - d)] = before;
      pad[2 * (D - 1 - d) + 1] = total - before;
    }
  }
};

/// A transposed convolution of D spatial dimensions through
/// myconv::conv_transposeNd; see ConvTranspose1d, ConvTranspose2d,
/// ConvTranspose3d. forward(input, output_size) picks the output padding that
/// gives output_size, as PyTorch's Python modules do (output_size: the
/// spatial sizes, or the whole output shape).
template <size_t D>
class ConvTransposeImpl : public torch::nn::ConvTransposeNdImpl<D, ConvTransposeImpl<D>> {
  using Base = torch::nn::ConvTransposeNdImpl<D, ConvTransposeImpl<D>>;

 public:
  ConvTransposeImpl(int64_t in_channels, int64_t out_channels, torch::ExpandingArray<D> kernel_size)
      : ConvTransposeImpl(torch::nn::ConvTransposeOptions<D>(in_channels, out_channels, kernel_size)) {}
  explicit ConvTransposeImpl(torch::nn::ConvTransposeOptions<D> options_)
      : Base(torch::nn::detail::ConvNdOptions<D>(options_.in_channels(), options_.out_channels(),
                                                 options_.kernel_size())
                 .stride(options_.stride())
                 .padding(options_.padding())
                 .dilation(options_.dilation())
                 .transposed(true)
                 .output_padding(options_.output_padding())
                 .groups(options_.groups())
                 .bias(options_.bias())
                 .padding_mode(options_.padding_mode())) {}

  at::Tensor forward(const at::Tensor& input, const std::optional<at::IntArrayRef>& output_size = std::nullopt) {
    const auto& o = this->options;
    TORCH_CHECK(std::holds_alternative<torch::enumtype::kZeros>(o.padding_mode()),
                "Only `zeros` padding mode is supported for ConvTranspose", D, "d");
    return detail::conv_transpose<D>(input, this->weight, detail::optional_bias(this->bias), *o.stride(),
                                     *this->padding(), output_padding_for(input, output_size), o.groups(),
                                     *o.dilation());
  }

  void pretty_print(std::ostream& stream) const override {
    std::ostringstream text;
    Base::pretty_print(text);
    detail::print_as_myconv(text.str(), stream);
  }

 protected:
  FORWARD_HAS_DEFAULT_ARGS({1, torch::nn::AnyValue(std::optional<at::IntArrayRef>())})

 private:
  // The options' output_padding, or the one that gives output_size.
  std::vector<int64_t> output_padding_for(const at::Tensor& input,
                                          const std::optional<at::IntArrayRef>& output_size) const {
    const auto& o = this->options;
    if (!output_size.has_value()) {
      return std::vector<int64_t>(o.output_padding()->begin(), o.output_padding()->end());
    }
    const int64_t spatial = static_cast<int64_t>(D), first = input.dim() - spatial;
    at::IntArrayRef size = *output_size;
    if (static_cast<int64_t>(size.size()) == input.dim()) {
      size = size.slice(first);
    }
    TORCH_CHECK(static_cast<int64_t>(size.size()) == spatial, "ConvTranspose", D, "d: for ", input.dim(),
                "-D input, output_size must have ", spatial, " or ", input.dim(), " elements (got ", size.size(),
                ")");
    std::vector<int64_t> min_sizes, max_sizes, output_padding;
    for (int64_t d = 0; d < spatial; ++d) {
      const int64_t s = (*o.stride())[d];
      const int64_t smallest = (input.size(first + d) - 1) * s - 2 * (*this->padding())[d] +
                               (*o.dilation())[d] * ((*o.kernel_size())[d] - 1) + 1;
      min_sizes.push_back(smallest);
      max_sizes.push_back(smallest + s - 1);
    }
    for (int64_t d = 0; d < spatial; ++d) {
      TORCH_CHECK(size[d] >= min_sizes[d] && size[d] <= max_sizes[d], "requested an output size of ", size,
                  ", but valid sizes range from ", at::IntArrayRef(min_sizes), " to ", at::IntArrayRef(max_sizes),
                  " (for an input of ", input.sizes().slice(first), ")");
      output_padding.push_back(size[d] - min_sizes[d]);
    }
    return output_padding;
  }
};

using Conv1dImpl = ConvImpl<1>;
using Conv2dImpl = ConvImpl<2>;
using Conv3dImpl = ConvImpl<3>;
using ConvTranspose1dImpl = ConvTransposeImpl<1>;
using ConvTranspose2dImpl = ConvTransposeImpl<2>;
using ConvTranspose3dImpl = ConvTransposeImpl<3>;

TORCH_MODULE(Conv1d);
TORCH_MODULE(Conv2d);
TORCH_MODULE(Conv3d);
TORCH_MODULE(ConvTranspose1d);
TORCH_MODULE(ConvTranspose2d);
TORCH_MODULE(ConvTranspose3d);

} // namespace myconv::nn
