// The composition's workspace: buffers charged against the workspace limit
// (myconv::set_workspace_limit_bytes), per-worker buffers, and the per-thread
// statistics that let tests check the limit.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/core/DeviceType.h>
#include <c10/core/TensorOptions.h>
#include <c10/util/ArrayRef.h>
#include <c10/util/SmallVector.h>

#include <cstdint>

namespace myconv::detail {

// Workspace bytes the compositions hold in this thread: now, and at most
// since the start of the latest call.
struct WorkspaceStats {
  int64_t live = 0;
  int64_t peak = 0;
};
WorkspaceStats& workspace_stats();

// Starts a call's workspace statistics (its peak starts at what is live).
struct WorkspaceCall {
  WorkspaceCall() { workspace_stats().peak = workspace_stats().live; }
};

// Workspace bytes counted in the calling thread's statistics while the charge
// lives.
class WorkspaceCharge {
 public:
  explicit WorkspaceCharge(int64_t bytes = 0);
  ~WorkspaceCharge();
  WorkspaceCharge(const WorkspaceCharge&) = delete;
  WorkspaceCharge& operator=(const WorkspaceCharge&) = delete;
  WorkspaceCharge(WorkspaceCharge&& other) noexcept;

 private:
  int64_t bytes_;
};

// A workspace buffer of `elements` elements, charged while it lives.
class Workspace {
 public:
  Workspace(int64_t elements, const at::TensorOptions& options);
  const at::Tensor& tensor() const { return tensor_; }

 private:
  at::Tensor tensor_;
  WorkspaceCharge charge_;
};

// Alignment of the composition's own buffers (worker buffers, shared column
// tiles, grad_weight's partial sums), in bytes. On the CPU a page: each such
// buffer starts on a page and every worker's buffer and every tile of shared
// columns is a whole number of pages, so a GEMM sees these operands at the
// same address modulo a page whichever worker runs an item, however many
// workers there are, from call to call. The GEMM libraries pick code paths by
// operand alignment (measured: MKL's results differed in the last bits
// between buffers 36 bytes apart), and MKL promises the same bits only for
// the same alignment. Elsewhere 64 bytes (a CUDA allocation starts on 512).
int64_t buffer_alignment(c10::DeviceType device);
inline int64_t buffer_alignment(const at::TensorOptions& options) {
  return buffer_alignment(options.device().type());
}

// An uninitialised 1-D tensor of `elements` elements starting at a multiple
// of buffer_alignment bytes. Its storage holds exactly those elements (on the
// CPU a view of a slightly larger allocation, which it keeps alive), so the
// bounds checks of csrc/blas_plan.h stay exact.
at::Tensor aligned_empty(int64_t elements, const at::TensorOptions& options);

// Elements rounded up to whole multiples of `alignment` bytes (of
// buffer_alignment bytes).
int64_t aligned_elements(int64_t elements, int64_t element_size, int64_t alignment);
int64_t aligned_elements(int64_t elements, const at::TensorOptions& options);

// One buffer per worker (each aligned_empty), handed out as views.
class WorkerBuffers {
 public:
  WorkerBuffers(int64_t workers, int64_t elements, const at::TensorOptions& options);
  // A (shape)-view at `offset` elements into the worker's buffer.
  at::Tensor get(int64_t worker, int64_t offset, at::IntArrayRef shape) const;
  // A (groups, rows, n) view at the start of the worker's buffer, its rows
  // row_stride elements apart (channels-first columns, column_row_stride).
  at::Tensor rows(int64_t worker, int64_t groups, int64_t rows, int64_t n, int64_t row_stride) const;

 private:
  int64_t elements_;
  WorkspaceCharge charge_;
  c10::SmallVector<at::Tensor, 4> buffers_;
};

// Workers (at most max_workers) for `items` items that each need
// bytes_per_worker of buffers, within the workspace limit `limit` less
// `reserved` bytes: at least one.
int64_t workers_for(int64_t max_workers, int64_t items, int64_t bytes_per_worker, int64_t reserved, int64_t limit);

// Images per chunk so that a chunk's workspace (bytes_per_image each) stays
// within the workspace limit `limit` and a chunk's cols_per_image * images
// columns fit the 32-bit dimensions of BLAS; at least 1, at most `batch`.
int64_t batch_chunk(int64_t batch, int64_t bytes_per_image, int64_t cols_per_image, int64_t limit);

} // namespace myconv::detail
