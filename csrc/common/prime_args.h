// Argument validation of the MDM-Prime ops (prime_ce, prime_sample_step), shared by the CPU and
// CUDA kernels. Per-row digit problems are found by mdfast::validate_token (digits.h) on either
// device and reported here with the row and the offending values.
#pragma once

#include <string>

#include "checks.h"
#include "mdfast/digits.h"

namespace mdfast {

struct PrimeShape {
  int64_t rows;
  int64_t classes;
  int ell;
};

inline PrimeShape check_prime_common(const at::Tensor& logits, const at::Tensor& digits,
                                     int64_t base) {
  TORCH_CHECK(at::isFloatingType(logits.scalar_type()),
              "mdfast: argument 'logits' must be a floating tensor, got ", logits.scalar_type());
  check::dim(logits, "logits", 2);
  check::dtype(digits, "digits", at::kLong);
  check::dim(digits, "digits", 2);
  check::same_device(digits, "digits", logits, "logits");
  TORCH_CHECK(digits.size(0) == logits.size(0), "mdfast: argument 'digits' must have ",
              logits.size(0), " rows (one per logits row), got ", digits.size(0));
  const int64_t ell = digits.size(1);
  TORCH_CHECK(ell >= 1 && ell <= kMaxDigits, "mdfast: argument 'digits' must have between 1 and ",
              kMaxDigits, " columns (the number of digits per token), got ", ell);
  const int64_t C = logits.size(1);
  TORCH_CHECK(C >= 1, "mdfast: argument 'logits' must have at least one class");
  TORCH_CHECK_VALUE(base >= 2, "mdfast: argument 'base' must be >= 2, got ", base);
  TORCH_CHECK_VALUE(
      saturating_pow(base, static_cast<int>(ell), C) >= C,
      "mdfast: argument 'base' is too small: base^ell = ", base, "^", ell, " < C = ", C,
      " (MDM-Prime uses base = ceil(C^(1/ell)) = ", prime_base(C, static_cast<int>(ell)), ")");
  return {logits.size(0), C, static_cast<int>(ell)};
}

inline void check_prime_weight(const c10::optional<at::Tensor>& weight, const at::Tensor& logits) {
  if (!weight.has_value()) return;
  const at::Tensor& w = *weight;
  TORCH_CHECK(w.scalar_type() == at::kFloat || w.scalar_type() == at::kDouble,
              "mdfast: argument 'weight' must have dtype torch.float32 or torch.float64, got ",
              w.scalar_type());
  TORCH_CHECK(w.dim() == 1 && w.size(0) == logits.size(0), "mdfast: argument 'weight' must have ",
              "shape [", logits.size(0), "], got ", w.sizes());
  check::same_device(w, "weight", logits, "logits");
}

inline void check_prime_target(const at::Tensor& target, const at::Tensor& logits) {
  check::dtype(target, "target", at::kLong);
  TORCH_CHECK(target.dim() == 1 && target.size(0) == logits.size(0),
              "mdfast: argument 'target' must have shape [", logits.size(0), "], got ",
              target.sizes());
  check::same_device(target, "target", logits, "logits");
}

// 0 = joint, 1 = elbo
inline int parse_prime_ce_mode(c10::string_view mode) {
  if (mode == "joint") return 0;
  if (mode == "elbo") return 1;
  TORCH_CHECK_VALUE(false, "mdfast: argument 'mode' must be 'joint' or 'elbo', got '",
                    std::string(mode), "'");
  return 0;
}

// 0 = exact, 1 = marginal
inline int parse_prime_sample_mode(c10::string_view mode) {
  if (mode == "exact") return 0;
  if (mode == "marginal") return 1;
  TORCH_CHECK_VALUE(false, "mdfast: argument 'mode' must be 'exact' or 'marginal', got '",
                    std::string(mode), "'");
  return 0;
}

inline void check_prime_sample_scalars(double alpha_t, double alpha_s, double temperature,
                                       int64_t seed, int64_t offset) {
  TORCH_CHECK_VALUE(alpha_t >= 0.0 && alpha_t <= 1.0,
                    "mdfast: argument 'alpha_t' must lie in [0, 1], got ", alpha_t);
  TORCH_CHECK_VALUE(alpha_s >= alpha_t && alpha_s <= 1.0,
                    "mdfast: argument 'alpha_s' must lie in [alpha_t, 1], got ", alpha_s);
  TORCH_CHECK_VALUE(temperature > 0.0 && temperature < 1e300,
                    "mdfast: argument 'temperature' must be a positive finite number, got ",
                    temperature);
  check::non_negative(seed, "seed");
  check::non_negative(offset, "offset");
}

inline void check_prime_fixed_digits(const at::Tensor& f) {
  check::dtype(f, "fixed_digits", at::kLong);
  TORCH_CHECK(f.dim() == 1, "mdfast: argument 'fixed_digits' must be 1-dimensional, got shape ",
              f.sizes());
}

// Reads fixed_digits into a bit set over digit positions, checking each (a copy to the host when
// they are on another device: only the CPU kernel calls it with such a tensor).
inline uint32_t prime_fixed_bits(const at::Tensor& f, int ell) {
  const at::Tensor host = f.is_cpu() ? f.contiguous() : f.cpu().contiguous();
  uint32_t bits = 0;
  const int64_t* p = host.data_ptr<int64_t>();
  for (int64_t i = 0; i < host.numel(); ++i) {
    TORCH_CHECK_VALUE(p[i] >= 0 && p[i] < ell, "mdfast: argument 'fixed_digits' holds ", p[i],
                      ", outside the digit positions [0, ", ell, ")");
    bits |= 1u << p[i];
  }
  return bits;
}

// Turns validate_token's code for row `row` into an error naming the row.
[[noreturn]] inline void throw_prime_row_error(int code, int64_t row, const int64_t* d, int ell,
                                               int64_t base, int64_t C, int64_t target) {
  std::string digits = "[";
  for (int j = 0; j < ell; ++j) {
    if (j) digits += ", ";
    digits += std::to_string(d[j]);
  }
  digits += "]";
  switch (code) {
    case kDigitOutOfRange:
      TORCH_CHECK_VALUE(false, "mdfast: argument 'digits' row ", row, " = ", digits,
                        " holds a digit outside [0, base] = [0, ", base, "] (", base,
                        " is the mask id)");
      break;
    case kEmptyConsistentSet:
      TORCH_CHECK_VALUE(false, "mdfast: argument 'digits' row ", row, " = ", digits,
                        " allows no class < C = ", C, " (its visible digits form an invalid code)");
      break;
    case kTargetOutOfRange:
      TORCH_CHECK_VALUE(false, "mdfast: argument 'target' row ", row, " = ", target,
                        " is outside [0, C) = [0, ", C, ")");
      break;
    default:
      TORCH_CHECK_VALUE(false, "mdfast: argument 'target' row ", row, " = ", target,
                        " is inconsistent with the visible digits ", digits, " of that row");
  }
  TORCH_CHECK(false, "unreachable");
}

}  // namespace mdfast
