// Argument checks shared by the CPU and CUDA kernels. Every message names the argument and what
// was expected, so a bad call from Python reads as a clear RuntimeError / ValueError.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/util/Exception.h>

#include <cstdint>

namespace mdfast::check {

inline void dtype(const at::Tensor& t, const char* name, at::ScalarType expected) {
  TORCH_CHECK(t.scalar_type() == expected, "mdfast: argument '", name, "' must have dtype ",
              expected, ", got ", t.scalar_type());
}

inline void dim(const at::Tensor& t, const char* name, int64_t expected) {
  TORCH_CHECK(t.dim() == expected, "mdfast: argument '", name, "' must be ", expected,
              "-dimensional, got shape ", t.sizes());
}

inline void same_device(const at::Tensor& t, const char* name, const at::Tensor& ref,
                        const char* ref_name) {
  TORCH_CHECK(t.device() == ref.device(), "mdfast: argument '", name, "' is on ", t.device(),
              " but '", ref_name, "' is on ", ref.device());
}

inline void non_negative(int64_t value, const char* name) {
  TORCH_CHECK_VALUE(value >= 0, "mdfast: argument '", name, "' must be >= 0, got ", value);
}

}  // namespace mdfast::check
