// dtype dispatch of the logits-reading kernels: calls fn(T{}) with T the C++ type of the logits
// (float, c10::BFloat16, c10::Half or double). A plain switch instead of AT_DISPATCH keeps the
// generic lambda's `auto` tag, so the callee can name T without macros.
#pragma once

#include <c10/core/ScalarType.h>
#include <c10/util/BFloat16.h>
#include <c10/util/Exception.h>
#include <c10/util/Half.h>

namespace mdfast {

template <typename Fn>
void dispatch_logits(c10::ScalarType dtype, Fn&& fn) {
  switch (dtype) {
    case c10::kFloat:
      fn(float{});
      break;
    case c10::kBFloat16:
      fn(c10::BFloat16{});
      break;
    case c10::kHalf:
      fn(c10::Half{});
      break;
    case c10::kDouble:
      fn(double{});
      break;
    default:
      TORCH_CHECK(false,
                  "mdfast: argument 'logits' must be float32, bfloat16, float16 or float64, "
                  "got ",
                  dtype);
  }
}

}  // namespace mdfast
