// MDM-Prime sub-token digits, header-only and identical on host and device.
//
// A class c in [0, C) is written as ell base-b digits, most significant first:
//     digit_j(c) = floor(c / b^(ell-1-j)) mod b,   c = sum_j digit_j(c) b^(ell-1-j),
// with b = ceil(C^(1/ell)) in MDM-Prime (any b >= 2 with b^ell >= C works here). The value b is the
// mask id, so a token's digit vector holds values in [0, b]. The consistent set of a digit vector d
// is V(d) = {c < C : digit_j(c) = d_j for every visible j (d_j != b)}. It is non-empty iff the
// smallest code it allows (every masked digit set to 0) is < C.
//
// DigitWalk enumerates V(d) in increasing class order by an odometer over the masked digits only,
// so a loop over V costs |V| (about b^#masked) instead of C, and a fully visible token costs one
// step. The digit values of the current class at the masked positions are tracked by the walk,
// so testing "digit_j(c) == v" is a compare, not a division.
#pragma once

#include <cstdint>

#include "mdfast/config.h"

namespace mdfast {

constexpr int kMaxDigits = 16;  // ell <= 16 (b = 2 covers C <= 65536)

// Error codes of validate_token (the host turns them into messages naming the row).
enum DigitError : int {
  kDigitsOk = 0,
  kDigitOutOfRange = 1,     // a digit < 0 or > b
  kEmptyConsistentSet = 2,  // the visible digits allow no class < C
  kTargetOutOfRange = 3,    // target < 0 or >= C
  kTargetInconsistent = 4,  // target's digits disagree with a visible digit
};

// b^e saturated at limit + 1 (so b^ell >= C checks never overflow).
MDFAST_HOST_DEVICE int64_t saturating_pow(int64_t b, int e, int64_t limit) {
  int64_t r = 1;
  for (int i = 0; i < e; ++i) {
    if (r > limit / b) return limit + 1;
    r *= b;
  }
  return r;
}

// Smallest b >= 2 with b^ell >= C: MDM-Prime's b = ceil(C^(1/ell)), computed exactly.
MDFAST_HOST_DEVICE int64_t prime_base(int64_t C, int ell) {
  int64_t b = 2;
  while (saturating_pow(b, ell, C) < C) ++b;
  return b;
}

// digit_j(c) for j = 0 (most significant) .. ell-1.
MDFAST_HOST_DEVICE int64_t digit_of(int64_t c, int64_t base, int ell, int j) {
  for (int k = ell - 1; k > j; --k) c /= base;
  return c % base;
}

// All ell digits of c into out[0..ell).
MDFAST_HOST_DEVICE void encode_digits(int64_t c, int64_t base, int ell, int64_t* out) {
  for (int j = ell - 1; j >= 0; --j) {
    out[j] = c % base;
    c /= base;
  }
}

// sum_j d_j b^(ell-1-j); masked digits (d_j == b) count as 0 (the smallest consistent code).
MDFAST_HOST_DEVICE int64_t decode_digits(const int64_t* d, int64_t base, int ell) {
  int64_t c = 0;
  for (int j = 0; j < ell; ++j) c = c * base + (d[j] == base ? 0 : d[j]);
  return c;
}

// c < C and every visible digit of d matches c.
MDFAST_HOST_DEVICE bool is_consistent(int64_t c, const int64_t* d, int64_t base, int ell,
                                      int64_t C) {
  if (c < 0 || c >= C) return false;
  for (int j = ell - 1; j >= 0; --j) {
    const int64_t v = c % base;
    c /= base;
    if (d[j] != base && d[j] != v) return false;
  }
  return true;
}

// Validates one token: digits in [0, b], V(d) non-empty, and (when target >= 0 is given, or
// check_target is set) target < C and consistent with the visible digits.
MDFAST_HOST_DEVICE int validate_token(const int64_t* d, int64_t base, int ell, int64_t C,
                                      bool check_target, int64_t target) {
  for (int j = 0; j < ell; ++j) {
    if (d[j] < 0 || d[j] > base) return kDigitOutOfRange;
  }
  if (decode_digits(d, base, ell) >= C) return kEmptyConsistentSet;
  if (check_target) {
    if (target < 0 || target >= C) return kTargetOutOfRange;
    if (!is_consistent(target, d, base, ell, C)) return kTargetInconsistent;
  }
  return kDigitsOk;
}

// The masked positions of one token and the walk over its consistent set V(d) in increasing class
// order. Masked slots are numbered k = 0..masked-1 from the most significant masked digit; pos[k]
// is the digit index j of slot k and stride[k] = b^(ell-1-pos[k]) its weight.
//
// Host loops use the odometer (begin/next: amortised O(1) per class). Device loops map a flat
// index i in [0, b^masked) to its class with class_at (slot 0 the most significant mixed-radix
// digit of i), so threads can stride over V independently; codes >= C are skipped by the caller.
struct DigitWalk {
  int64_t C;
  int64_t base;
  int masked = 0;
  int pos[kMaxDigits];
  int64_t stride[kMaxDigits];
  int64_t val[kMaxDigits];  // odometer: current digit value at slot k
  int64_t base_code = 0;    // the class with every masked digit 0
  int64_t c = 0;            // odometer: current class

  MDFAST_HOST_DEVICE DigitWalk(const int64_t* d, int64_t base_, int ell, int64_t C_)
      : C(C_), base(base_) {
    int64_t w = 1;
    for (int j = ell - 1; j >= 0; --j) {
      if (d[j] == base) {
        masked++;
      } else {
        base_code += d[j] * w;
      }
      w *= base;
    }
    int k = masked;
    w = 1;
    for (int j = ell - 1; j >= 0; --j) {
      if (d[j] == base) {
        --k;
        pos[k] = j;
        stride[k] = w;
      }
      w *= base;
    }
    c = base_code;
  }

  // b^masked, saturated above limit (the number of flat indices a device loop visits, capped).
  MDFAST_HOST_DEVICE int64_t span(int64_t limit) const {
    return saturating_pow(base, masked, limit);
  }

  // Odometer: positions the walk at the smallest class of V; false when V is empty.
  MDFAST_HOST_DEVICE bool begin() {
    for (int k = 0; k < masked; ++k) val[k] = 0;
    c = base_code;
    return c < C;
  }

  // Odometer: advances to the next class of V; false when the walk is done (codes only grow in
  // this order, so the first code >= C ends it).
  MDFAST_HOST_DEVICE bool next() {
    for (int k = masked - 1; k >= 0; --k) {
      if (val[k] + 1 < base) {
        val[k] += 1;
        c += stride[k];
        return c < C;
      }
      c -= val[k] * stride[k];
      val[k] = 0;
    }
    return false;
  }

  // Flat index -> class; the digit value of slot k goes to vals[k] when vals is given.
  MDFAST_HOST_DEVICE int64_t class_at(int64_t i, int64_t* vals) const {
    int64_t cc = base_code;
    for (int k = masked - 1; k >= 0; --k) {
      const int64_t v = i % base;
      i /= base;
      cc += v * stride[k];
      if (vals != nullptr) vals[k] = v;
    }
    return cc;
  }
};

}  // namespace mdfast
