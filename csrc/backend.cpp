#include "backend.h"

#include <c10/util/Exception.h>

namespace myconv::detail {

void Backend::grouped_forward(const at::Tensor&, const at::Tensor&, const std::optional<at::Tensor>&,
                              const ConvGeometry&, int64_t, bool, const at::Tensor&) const {
  TORCH_INTERNAL_ASSERT(false, "myconv: this backend has no direct grouped convolution");
}
void Backend::grouped_grad_input(const at::Tensor&, const at::Tensor&, const ConvGeometry&, int64_t, bool,
                                 const at::Tensor&) const {
  TORCH_INTERNAL_ASSERT(false, "myconv: this backend has no direct grouped convolution");
}
void Backend::grouped_grad_weight(const at::Tensor&, const at::Tensor&, const ConvGeometry&, int64_t, bool,
                                  const at::Tensor&) const {
  TORCH_INTERNAL_ASSERT(false, "myconv: this backend has no direct grouped convolution");
}

} // namespace myconv::detail
