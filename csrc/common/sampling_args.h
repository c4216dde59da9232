// Argument validation of the sampling ops (sample_x0, mask_step), shared by the CPU and CUDA
// kernels. Value checks (alpha, sigma ranges, token ids, row indices, NaN rows) are made by the
// CPU kernel itself and, for CUDA tensors, by the Python wrapper under
// mdfast.set_validation("full") only: checking them here would synchronise the host.
#pragma once

#include <c10/util/Optional.h>

#include <cmath>
#include <string>
#include <utility>

#include "checks.h"

namespace mdfast {

inline bool is_logits_dtype(at::ScalarType t) {
  return t == at::kFloat || t == at::kBFloat16 || t == at::kHalf || t == at::kDouble;
}

inline bool parse_nucleus(const std::string& nucleus) {
  TORCH_CHECK_VALUE(nucleus == "remdm" || nucleus == "hf",
                    "mdfast: argument 'nucleus' must be 'remdm' or 'hf', got '", nucleus, "'");
  return nucleus == "hf";
}

inline void check_sampling_params(double temperature, double top_p, int64_t top_k, int64_t seed,
                                  int64_t offset) {
  TORCH_CHECK_VALUE(temperature >= 0.0 && std::isfinite(temperature),
                    "mdfast: argument 'temperature' must be finite and >= 0, got ", temperature);
  TORCH_CHECK_VALUE(top_p > 0.0 && top_p <= 1.0, "mdfast: argument 'top_p' must be in (0, 1], got ",
                    top_p);
  check::non_negative(top_k, "top_k");
  check::non_negative(seed, "seed");
  check::non_negative(offset, "offset");
}

inline void check_sample_x0_args(const at::Tensor& logits, const c10::optional<at::Tensor>& rows,
                                 double temperature, double top_p, int64_t top_k,
                                 int64_t exclude_index, int64_t seed, int64_t offset) {
  TORCH_CHECK(is_logits_dtype(logits.scalar_type()),
              "mdfast: argument 'logits' must be float32, bfloat16, float16 or float64, got ",
              logits.scalar_type());
  check::dim(logits, "logits", 2);
  TORCH_CHECK_VALUE(logits.size(1) > 0, "mdfast: argument 'logits' must have at least one class");
  TORCH_CHECK_VALUE(logits.size(1) < (int64_t(1) << 31),
                    "mdfast: argument 'logits' must have fewer than 2^31 classes");
  if (rows.has_value()) {
    check::dtype(*rows, "rows", at::kLong);
    check::dim(*rows, "rows", 1);
    check::same_device(*rows, "rows", logits, "logits");
  }
  TORCH_CHECK_VALUE(exclude_index >= -1 && exclude_index < logits.size(1),
                    "mdfast: argument 'exclude_index' must be -1 or in [0, V), got ",
                    exclude_index);
  check_sampling_params(temperature, top_p, top_k, seed, offset);
}

inline void check_mask_step_args(const at::Tensor& x, const c10::optional<at::Tensor>& logits,
                                 const at::Tensor& alpha_t, const at::Tensor& alpha_s,
                                 const c10::optional<at::Tensor>& remask,
                                 const c10::optional<at::Tensor>& confidence, int64_t mask_index,
                                 double temperature, double top_p, int64_t top_k, int64_t seed,
                                 int64_t offset) {
  check::dtype(x, "x", at::kLong);
  check::dim(x, "x", 2);
  const int64_t B = x.size(0), L = x.size(1);
  if (logits.has_value()) {
    TORCH_CHECK(is_logits_dtype(logits->scalar_type()),
                "mdfast: argument 'logits' must be float32, bfloat16, float16 or float64, got ",
                logits->scalar_type());
    check::dim(*logits, "logits", 3);
    TORCH_CHECK(logits->size(0) == B && logits->size(1) == L,
                "mdfast: argument 'logits' must have shape [B, L, V] matching 'x' ", x.sizes(),
                ", got ", logits->sizes());
    check::same_device(*logits, "logits", x, "x");
    TORCH_CHECK_VALUE(logits->size(2) < (int64_t(1) << 31),
                      "mdfast: argument 'logits' must have fewer than 2^31 classes");
    TORCH_CHECK_VALUE(mask_index >= 0 && mask_index < logits->size(2),
                      "mdfast: argument 'mask_index' must be in [0, V), got ", mask_index);
  } else {
    check::non_negative(mask_index, "mask_index");
  }
  for (const auto& [t, name] : {std::pair<const at::Tensor&, const char*>{alpha_t, "alpha_t"},
                                std::pair<const at::Tensor&, const char*>{alpha_s, "alpha_s"}}) {
    check::dtype(t, name, at::kDouble);
    check::dim(t, name, 1);
    TORCH_CHECK(t.size(0) == B, "mdfast: argument '", name, "' must have shape [B] = [", B,
                "], got ", t.sizes());
    check::same_device(t, name, x, "x");
  }
  if (remask.has_value()) {
    check::dtype(*remask, "remask", at::kDouble);
    TORCH_CHECK(remask->dim() == 2 && remask->size(0) == B && remask->size(1) == L,
                "mdfast: argument 'remask' must have shape [B, L] = ", x.sizes(), ", got ",
                remask->sizes());
    check::same_device(*remask, "remask", x, "x");
  }
  if (confidence.has_value()) {
    check::dtype(*confidence, "confidence", at::kFloat);
    TORCH_CHECK(confidence->dim() == 2 && confidence->size(0) == B && confidence->size(1) == L,
                "mdfast: argument 'confidence' must have shape [B, L] = ", x.sizes(), ", got ",
                confidence->sizes());
    check::same_device(*confidence, "confidence", x, "x");
  }
  check_sampling_params(temperature, top_p, top_k, seed, offset);
}

}  // namespace mdfast
