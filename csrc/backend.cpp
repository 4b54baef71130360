#include "backend.h"

#include <c10/util/Exception.h>

#include <array>
#include <atomic>

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

namespace {

// Indexed by device type; written while the library loads (static
// registration), read afterwards.
std::array<std::atomic<const Backend*>, static_cast<size_t>(c10::DeviceType::COMPILE_TIME_MAX_DEVICE_TYPES)>&
backends() {
  static std::array<std::atomic<const Backend*>, static_cast<size_t>(c10::DeviceType::COMPILE_TIME_MAX_DEVICE_TYPES)>
      table{};
  return table;
}

} // namespace

void register_backend(c10::DeviceType device, const Backend& backend) {
  backends().at(static_cast<size_t>(device)).store(&backend);
}

const Backend* find_backend(c10::DeviceType device) {
  return backends().at(static_cast<size_t>(device)).load();
}

} // namespace myconv::detail
