// Header-only core of the sampling ops (sample_x0, mask_step), shared by the CPU and CUDA kernels.
//
// Order of classes
//   Classes are ranked by their logit z (converted exactly to float32), ties by smaller index:
//   composite(c) = key(z_c) << 32 | (0xffffffff - c), where key() maps float bits to uint32
//   monotonically. Composites are unique, so "the k-th largest class" and "the prefix of the
//   descending order" are well defined without sorting. Dividing by a temperature tau > 0 keeps
//   the order, so the ranking never depends on tau.
//
// Truncation (top-k, then top-p on the renormalised top-k distribution)
//   Probabilities p_c = exp(z_c/tau - lse) are converted to 2^-62 fixed point (floor), so every
//   cumulative mass is an exact integer sum whose value does not depend on summation order (CPU
//   loop, CUDA atomics). With S(j) the inclusive cumulative mass of the j-th class in descending
//   order and Z the mass of the top-k set (all classes without top-k), the crossing class f is
//     nucleus "remdm": the first class with S(f) >  floor(top_p * Z); kept: the classes before f,
//                      and always the top-1 (ReMDM: keep cumsum <= p, keep the first);
//     nucleus "hf":    the first class with S(f) >= floor(top_p * Z); kept: up to and including f.
//   The kept set is then {c : composite(c) >= T} for one threshold T, found by an 8-bit radix
//   select over composites (<= 8 histogram passes over the candidate row, usually 2-4 thanks to
//   the single-element early exit), with no V-sized buffer on the GPU.
//
// Draw
//   c* = argmax_{kept c} (z_c / tau + g_c), g_c = -log(-log u_c), u_c a 53-bit uniform (gumbel.h);
//   tau = 0 is the argmax of z over the kept set (ties to the smaller index). The reported
//   probability is p_{c*} / sum_{kept} p (at tau = 1 when tau = 0).
//
// Philox sub-streams of one call (seed, offset), see philox.h
//   stream 0 (kEventStream):  element i = flattened position b * L + l: the event uniform of
//                             mask_step (stay masked / unmask / remask / keep).
//   stream 1 (kGumbelStream): element i = row * V + c: the Gumbel noise of class c of logits row
//                             `row` (the row of the full logits tensor, not its rank among the
//                             requested rows), so a class's noise does not depend on which other
//                             rows are sampled: sample_x0(logits, rows=[i]) draws the same token
//                             as row i of sample_x0(logits), and mask_step draws position i's
//                             token exactly as sample_x0(logits.view(B*L, V), rows=[i]) would.
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>

#include "mdfast/config.h"
#include "mdfast/gumbel.h"
#include "mdfast/philox.h"

namespace mdfast {
namespace sampling {

constexpr uint32_t kEventStream = 0;
constexpr uint32_t kGumbelStream = 1;
constexpr double kFixedScale = 4611686018427387904.0;  // 2^62
// Largest Gumbel value from a 53-bit uniform, -log(-log(1 - 2^-53)) = 36.74, rounded up: a class
// whose z/tau + kGumbelMax is below the best score so far can never win, so its noise is skipped.
constexpr double kGumbelMax = 36.75;

enum RowStatus : int32_t { kOk = 0, kNaN = 1, kEmpty = 2 };

MDFAST_HOST_DEVICE uint32_t float_key(float f) {
  uint32_t u;
#if defined(__CUDA_ARCH__)
  u = __float_as_uint(f);
#else
  std::memcpy(&u, &f, sizeof(u));
#endif
  return (u & 0x80000000u) ? ~u : (u | 0x80000000u);
}

MDFAST_HOST_DEVICE uint64_t composite(float z, int64_t c) {
  return (static_cast<uint64_t>(float_key(z)) << 32) |
         static_cast<uint64_t>(0xffffffffu - static_cast<uint32_t>(c));
}

MDFAST_HOST_DEVICE int64_t composite_index(uint64_t comp) {
  return static_cast<int64_t>(0xffffffffu - static_cast<uint32_t>(comp & 0xffffffffu));
}

// 2^-62 fixed point of a probability in [0, 1].
MDFAST_HOST_DEVICE uint64_t fixed_mass(double p) {
  return p <= 0.0 ? 0ull : static_cast<uint64_t>(p * kFixedScale);
}

// Histogram of one radix level: 256 buckets of the digit (comp >> shift) & 255 among candidates
// whose higher bits equal the prefix.
struct RadixHist {
  uint32_t count[256];
  uint64_t mass[256];
  uint64_t maxc[256];
};

// What the radix select is looking for and where it stands.
struct RadixSelect {
  // inputs
  int mode;         // 0: k-th largest composite; 1: crossing of the cumulative mass
  uint64_t k;       // mode 0: rank (1-based) still to skip inside the prefix
  uint64_t target;  // mode 1: cumulative-mass target
  bool strict;      // mode 1: S > target (remdm) or S >= target (hf)
  uint64_t acc;     // mode 1: mass of candidates above the current prefix
  // progress
  uint64_t prefix;      // fixed high bits
  uint64_t fixed_mask;  // which bits are fixed
  int shift;            // shift of the next digit (56, 48, ..., 0)
  bool done;
  bool found;  // mode 1: false when the whole candidate mass never reaches the target
  uint64_t result;

  MDFAST_HOST_DEVICE static RadixSelect kth(uint64_t k) {
    RadixSelect s{};
    s.mode = 0;
    s.k = k;
    s.shift = 56;
    return s;
  }
  MDFAST_HOST_DEVICE static RadixSelect crossing(uint64_t target, bool strict) {
    RadixSelect s{};
    s.mode = 1;
    s.target = target;
    s.strict = strict;
    s.shift = 56;
    return s;
  }

  MDFAST_HOST_DEVICE bool in_prefix(uint64_t comp) const { return (comp & fixed_mask) == prefix; }
  MDFAST_HOST_DEVICE int digit(uint64_t comp) const {
    return static_cast<int>((comp >> shift) & 0xffu);
  }

  // Consume one level's histogram: pick the bucket that holds the answer, descend into it.
  MDFAST_HOST_DEVICE void step(const RadixHist& h) {
    int chosen = -1;
    int last_nonempty = -1;
    for (int d = 255; d >= 0; --d) {
      if (h.count[d] == 0) continue;
      last_nonempty = d;
      if (mode == 0) {
        if (h.count[d] >= k) {
          chosen = d;
          break;
        }
        k -= h.count[d];
      } else {
        const uint64_t s = acc + h.mass[d];
        if (strict ? (s > target) : (s >= target)) {
          chosen = d;
          break;
        }
        acc = s;
      }
    }
    if (chosen < 0) {
      if (mode == 1 && fixed_mask != 0 && last_nonempty >= 0) {
        // Unreachable with exact integer sums (the parent bucket crossed); kept as a guard: the
        // crossing is the last class of this bucket.
        chosen = last_nonempty;
      } else {
        done = true;
        found = false;
        return;
      }
    }
    if (h.count[chosen] == 1 || shift == 0) {
      done = true;
      found = true;
      result = h.maxc[chosen];
      return;
    }
    prefix |= static_cast<uint64_t>(chosen) << shift;
    fixed_mask |= 0xffull << shift;
    shift -= 8;
  }
};

MDFAST_HOST_DEVICE void radix_hist_clear(RadixHist& h) {
  for (int d = 0; d < 256; ++d) {
    h.count[d] = 0;
    h.mass[d] = 0;
    h.maxc[d] = 0;
  }
}

// ReMDM posterior of one position (DESIGN.md "ReMDM"): masked -> unmask with probability
// (alpha_s - (1 - sigma) alpha_t) / (1 - alpha_t), clamped to [0, 1]; decoded -> remask with
// probability sigma. sigma = 0 is MDLM's reverse step.
MDFAST_HOST_DEVICE double unmask_probability(double alpha_t, double alpha_s, double sigma) {
  const double den = 1.0 - alpha_t;
  if (!(den > 0.0)) return 1.0;
  const double q = (alpha_s - (1.0 - sigma) * alpha_t) / den;
  return q < 0.0 ? 0.0 : (q > 1.0 ? 1.0 : q);
}

// Gumbel noise of class c of logits row `row` (stream kGumbelStream, element row * V + c).
MDFAST_HOST_DEVICE double gumbel_noise(uint64_t seed, uint64_t offset, int64_t row, int64_t V,
                                       int64_t c) {
  return gumbel_from_uniform(uniform_double_at(
      seed, offset, kGumbelStream, static_cast<uint64_t>(row) * static_cast<uint64_t>(V) + c));
}

MDFAST_HOST_DEVICE double event_uniform(uint64_t seed, uint64_t offset, int64_t position) {
  return uniform_double_at(seed, offset, kEventStream, static_cast<uint64_t>(position));
}

}  // namespace sampling
}  // namespace mdfast
