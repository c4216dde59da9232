// Argument validation of the masked cross-entropy ops, shared by the CPU and CUDA kernels.
// Metadata checks (shapes, dtypes, devices) run on the host for both; the per-row value checks
// (target range, exclusion, negative weights) run on the host for CPU tensors only. The CUDA
// kernels never read a bad row (its loss is NaN) and do not synchronise to report it: the Python
// wrapper checks GPU values under mdfast.set_validation("full") (mdfast/ops/_validation.py).
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/util/Exception.h>
#include <c10/util/Optional.h>

#include <cstdint>

#include "checks.h"

namespace mdfast {

inline bool is_ce_dtype(at::ScalarType t) {
  return t == at::kFloat || t == at::kBFloat16 || t == at::kHalf || t == at::kDouble;
}

// Accumulation (and loss) dtype: float64 for float64 logits, float32 otherwise.
inline at::ScalarType ce_acc_dtype(at::ScalarType t) {
  return t == at::kDouble ? at::kDouble : at::kFloat;
}

inline void check_ce_rows(int64_t n, int64_t v, const at::Tensor& ref, const char* ref_name,
                          const at::Tensor& target, const c10::optional<at::Tensor>& weight,
                          const char* weight_name, int64_t exclude_index) {
  check::dtype(target, "target", at::kLong);
  TORCH_CHECK(target.dim() == 1 && target.size(0) == n,
              "mdfast: argument 'target' must have shape [", n, "], got ", target.sizes());
  check::same_device(target, "target", ref, ref_name);
  if (weight.has_value()) {
    const at::Tensor& w = *weight;
    TORCH_CHECK(w.scalar_type() == at::kFloat || w.scalar_type() == at::kDouble,
                "mdfast: argument '", weight_name,
                "' must have dtype torch.float32 or torch.float64, got ", w.scalar_type());
    TORCH_CHECK(w.dim() == 1 && w.size(0) == n, "mdfast: argument '", weight_name,
                "' must have shape [", n, "], got ", w.sizes());
    check::same_device(w, weight_name, ref, ref_name);
  }
  TORCH_CHECK_VALUE(exclude_index >= -1 && exclude_index < v,
                    "mdfast: argument 'exclude_index' must be -1 or in [0, ", v, "), got ",
                    exclude_index);
}

inline void check_masked_ce_args(const at::Tensor& logits, const at::Tensor& target,
                                 const c10::optional<at::Tensor>& weight, int64_t exclude_index) {
  check::dim(logits, "logits", 2);
  TORCH_CHECK(is_ce_dtype(logits.scalar_type()),
              "mdfast: argument 'logits' must have dtype float32, bfloat16, float16 or float64, "
              "got ",
              logits.scalar_type());
  check_ce_rows(logits.size(0), logits.size(1), logits, "logits", target, weight, "weight",
                exclude_index);
}

inline void check_masked_ce_backward_args(const at::Tensor& grad_loss, const at::Tensor& logits,
                                          const at::Tensor& target,
                                          const c10::optional<at::Tensor>& weight,
                                          const at::Tensor& lse, int64_t exclude_index) {
  check_masked_ce_args(logits, target, weight, exclude_index);
  const int64_t n = logits.size(0);
  const auto acc = ce_acc_dtype(logits.scalar_type());
  TORCH_CHECK(grad_loss.dim() == 1 && grad_loss.size(0) == n,
              "mdfast: argument 'grad_loss' must have shape [", n, "], got ", grad_loss.sizes());
  TORCH_CHECK(lse.dim() == 1 && lse.size(0) == n, "mdfast: argument 'lse' must have shape [", n,
              "], got ", lse.sizes());
  check::dtype(lse, "lse", acc);
  TORCH_CHECK(grad_loss.is_floating_point(),
              "mdfast: argument 'grad_loss' must be floating point, got ", grad_loss.scalar_type());
  check::same_device(grad_loss, "grad_loss", logits, "logits");
  check::same_device(lse, "lse", logits, "logits");
}

// Host-side value checks (CPU tensors): the first bad row is named.
template <typename weight_t>
inline void check_ce_values(const int64_t* target, const weight_t* weight, int64_t n, int64_t v,
                            int64_t exclude_index, const char* weight_name) {
  for (int64_t r = 0; r < n; ++r) {
    const weight_t w = weight ? weight[r] : weight_t(1);
    TORCH_CHECK_VALUE(!(w < 0), "mdfast: argument '", weight_name, "' must be non-negative, got ",
                      w, " at row ", r);
    if (w == 0) continue;
    const int64_t t = target[r];
    TORCH_CHECK_VALUE(t >= 0 && t < v, "mdfast: argument 'target' must be in [0, ", v,
                      ") on rows with nonzero weight, got ", t, " at row ", r);
    TORCH_CHECK_VALUE(t != exclude_index,
                      "mdfast: argument 'target' equals exclude_index=", exclude_index, " at row ",
                      r, ", which has nonzero weight");
  }
}

}  // namespace mdfast
