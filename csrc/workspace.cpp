#include "workspace.h"

#include <ATen/ops/empty.h>
#include <ATen/ops/from_blob.h>
#include <c10/util/Exception.h>

#include <algorithm>
#include <array>
#include <cstdint>
#include <limits>
#include <utility>

#include "myconv/ops.h"

namespace myconv::detail {

WorkspaceStats& workspace_stats() {
  thread_local WorkspaceStats stats;
  return stats;
}

WorkspaceCharge::WorkspaceCharge(int64_t bytes) : bytes_(bytes) {
  WorkspaceStats& s = workspace_stats();
  s.live += bytes_;
  s.peak = std::max(s.peak, s.live);
}

WorkspaceCharge::~WorkspaceCharge() {
  workspace_stats().live -= bytes_;
}

WorkspaceCharge::WorkspaceCharge(WorkspaceCharge&& other) noexcept : bytes_(std::exchange(other.bytes_, 0)) {}

Workspace::Workspace(int64_t elements, const at::TensorOptions& options)
    : tensor_(elements > 0 ? aligned_empty(elements, options) : at::Tensor()),
      charge_(elements > 0 ? elements * tensor_.element_size() : 0) {}

int64_t buffer_alignment(c10::DeviceType device) {
  return device == c10::DeviceType::CPU ? 4096 : 64;
}

at::Tensor aligned_empty(int64_t elements, const at::TensorOptions& options) {
  if (!options.device().is_cpu()) {
    return at::empty({elements}, options);  // the caching allocator's blocks start on 512 bytes
  }
  const int64_t align = buffer_alignment(options);
  const int64_t item = static_cast<int64_t>(options.dtype().itemsize());
  TORCH_INTERNAL_ASSERT(align % item == 0);
  const at::Tensor raw = at::empty({elements + align / item}, options);
  const auto address = reinterpret_cast<uintptr_t>(raw.data_ptr());
  TORCH_INTERNAL_ASSERT(address % item == 0);
  void* start = static_cast<char*>(raw.data_ptr()) + (align - static_cast<int64_t>(address % align)) % align;
  // a storage of exactly `elements` at the aligned start, keeping `raw` alive
  return at::from_blob(start, {elements}, [raw](void*) {}, options);
}

int64_t aligned_elements(int64_t elements, int64_t element_size, int64_t alignment) {
  const int64_t per_line = std::max<int64_t>(1, alignment / element_size);
  return (elements + per_line - 1) / per_line * per_line;
}

int64_t aligned_elements(int64_t elements, const at::TensorOptions& options) {
  return aligned_elements(elements, static_cast<int64_t>(options.dtype().itemsize()), buffer_alignment(options));
}

WorkerBuffers::WorkerBuffers(int64_t workers, int64_t elements, const at::TensorOptions& options)
    : elements_(elements),
      charge_(elements > 0 ? workers * aligned_elements(elements, options) *
                                 static_cast<int64_t>(options.dtype().itemsize())
                           : 0) {
  if (elements > 0) {
    for (int64_t w = 0; w < workers; ++w) {
      buffers_.push_back(aligned_empty(elements, options));
    }
  }
}

at::Tensor WorkerBuffers::get(int64_t worker, int64_t offset, at::IntArrayRef shape) const {
  int64_t numel = 1;
  for (const int64_t s : shape) {
    numel *= s;
  }
  TORCH_INTERNAL_ASSERT(worker >= 0 && worker < static_cast<int64_t>(buffers_.size()) && offset >= 0 &&
                        offset + numel <= elements_);
  // one view op (a tiny call pays for each): the contiguous (shape) at the offset
  // (no heap allocation: buffers have at most kMaxDims dimensions)
  constexpr size_t kMaxDims = 8;
  TORCH_INTERNAL_ASSERT(!shape.empty() && shape.size() <= kMaxDims);
  std::array<int64_t, kMaxDims> strides{};
  strides[shape.size() - 1] = 1;
  for (int64_t d = static_cast<int64_t>(shape.size()) - 2; d >= 0; --d) {
    strides[d] = strides[d + 1] * std::max<int64_t>(shape[d + 1], 1);
  }
  return buffers_[worker].as_strided(shape, at::IntArrayRef(strides.data(), shape.size()), offset);
}

at::Tensor WorkerBuffers::rows(int64_t worker, int64_t groups, int64_t rows, int64_t n, int64_t row_stride) const {
  TORCH_INTERNAL_ASSERT(worker >= 0 && worker < static_cast<int64_t>(buffers_.size()) && n <= row_stride &&
                        groups * rows * row_stride <= elements_);
  return buffers_[worker].as_strided({groups, rows, n}, {rows * row_stride, row_stride, 1}, 0);
}

int64_t workers_for(int64_t max_workers, int64_t items, int64_t bytes_per_worker, int64_t reserved, int64_t limit) {
  const int64_t room = std::max<int64_t>(0, limit - reserved);
  const int64_t by_memory = bytes_per_worker > 0 ? room / bytes_per_worker : items;
  return std::clamp<int64_t>(std::min({max_workers, items, by_memory}), 1, std::max<int64_t>(items, 1));
}

int64_t batch_chunk(int64_t batch, int64_t bytes_per_image, int64_t cols_per_image, int64_t limit) {
  if (batch <= 1 || bytes_per_image <= 0) {
    return std::max<int64_t>(batch, 1);
  }
  const int64_t by_memory = limit / bytes_per_image;
  const int64_t by_blas = std::numeric_limits<int32_t>::max() / std::max<int64_t>(cols_per_image, 1);
  return std::clamp<int64_t>(std::min(by_memory, by_blas), 1, batch);
}

} // namespace myconv::detail
