// Argument validation of the RNG ops, shared by the CPU and CUDA kernels.
#pragma once

#include "checks.h"

namespace mdfast {

inline void check_philox4x32_args(const at::Tensor& counter, const at::Tensor& key) {
  check::dtype(counter, "counter", at::kLong);
  check::dim(counter, "counter", 2);
  TORCH_CHECK(counter.size(1) == 4, "mdfast: argument 'counter' must have shape [N, 4], got ",
              counter.sizes());
  check::dtype(key, "key", at::kLong);
  TORCH_CHECK(key.dim() == 1 && key.size(0) == 2,
              "mdfast: argument 'key' must have shape [2], got ", key.sizes());
  check::same_device(key, "key", counter, "counter");
}

inline void check_uniform_args(const at::Tensor& out, int64_t seed, int64_t offset) {
  TORCH_CHECK_VALUE(out.scalar_type() == at::kDouble || out.scalar_type() == at::kFloat,
                    "mdfast: argument 'dtype' must be torch.float64 or torch.float32, got ",
                    out.scalar_type());
  TORCH_CHECK(out.is_contiguous(), "mdfast: argument 'out' must be contiguous");
  check::non_negative(seed, "seed");
  check::non_negative(offset, "offset");
}

inline void check_uniform_rows_args(const at::Tensor& out, int64_t seed,
                                    const at::Tensor& offsets) {
  TORCH_CHECK_VALUE(out.scalar_type() == at::kDouble || out.scalar_type() == at::kFloat,
                    "mdfast: argument 'dtype' must be torch.float64 or torch.float32, got ",
                    out.scalar_type());
  check::dim(out, "out", 2);
  TORCH_CHECK(out.is_contiguous(), "mdfast: argument 'out' must be contiguous");
  check::non_negative(seed, "seed");
  check::dtype(offsets, "offsets", at::kLong);
  check::dim(offsets, "offsets", 1);
  TORCH_CHECK(offsets.size(0) == out.size(0), "mdfast: argument 'offsets' must have one entry per ",
              "row of 'out' (", out.size(0), "), got ", offsets.size(0));
  check::same_device(offsets, "offsets", out, "out");
}

}  // namespace mdfast
