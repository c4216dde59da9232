// Philox4x32-10 counter-based RNG (Salmon et al., "Parallel random numbers: as easy as 1, 2, 3",
// SC'11), header-only, identical on host and device. Every random number mdfast draws, on CPU or
// CUDA, comes from the functions below, so one (seed, offset) gives the same bits everywhere.
//
// Block function
//   Philox4x32-10 maps a 128-bit counter (c0, c1, c2, c3) and a 64-bit key (k0, k1) to four
//   32-bit words by ten rounds of
//       (hi0, lo0) = mulhilo(0xD2511F53, c0);  (hi1, lo1) = mulhilo(0xCD9E8D57, c2)
//       c = (hi1 ^ c1 ^ k0, lo1, hi0 ^ c3 ^ k1, lo0)
//   with the key bumped by (0x9E3779B9, 0xBB67AE85) between rounds. Known-answer vectors from
//   Random123 are checked by tests/cpp/test_philox.cpp and tests/test_philox.py.
//
// Stream layout (the contract every op follows)
//   seed   (uint64) -> key     = (seed & 0xffffffff, seed >> 32)
//   offset (uint64) -> counter words c2 = offset & 0xffffffff, c3 = offset >> 32
//   block  (uint64) -> counter words c0 = block & 0xffffffff,  c1 = block >> 32
//   Two calls with different offsets therefore never share a counter, whatever their sizes: a
//   sampler advances the offset by one per op call, the way torch's generator advances its
//   Philox offset, and never reuses a stream.
//
// Uniforms strictly inside (0, 1)
//   float64: element i of a draw uses block i / 2 and words (w[2j], w[2j+1]) with j = i % 2;
//            k = ((w[2j] << 32) | w[2j+1]) >> 11 is a 53-bit integer, u = k * 2^-53,
//            except k = 0, which gives u = 2^-54 (the midpoint of the first cell).
//   float32: element i uses block i / 4 and word w[i % 4]; k = w >> 8 (24 bits), u = k * 2^-24,
//            except k = 0, which gives u = 2^-25.
//   Every value is an exact float, so CPU and CUDA agree bit for bit.
//
// Rows keyed independently (uniform_rows_out)
//   Row r of an [R, n] draw holds elements 0..n-1 of the stream (seed, offsets[r]): each row
//   is its own uniform draw, so a row's numbers do not depend on the other rows of the launch
//   (mdfast.rng.NoiseKey keys each sample of a batch this way).
//
// Sub-streams inside one op call
//   An op that needs several independent families of numbers in one call (say, one uniform per
//   position for its event and one per class for a Gumbel draw) takes them from sub-streams:
//   stream s (0..255) uses blocks (s << 56) | b. Stream 0 is exactly what ops.uniform returns.
#pragma once

#include <cstdint>

#include "mdfast/config.h"

namespace mdfast {

struct PhiloxWords {
  uint32_t w[4];
};

namespace detail {

constexpr uint32_t kPhiloxM0 = 0xD2511F53u;
constexpr uint32_t kPhiloxM1 = 0xCD9E8D57u;
constexpr uint32_t kPhiloxW0 = 0x9E3779B9u;
constexpr uint32_t kPhiloxW1 = 0xBB67AE85u;

MDFAST_HOST_DEVICE uint32_t mulhi32(uint32_t a, uint32_t b) {
#if defined(__CUDA_ARCH__)
  return __umulhi(a, b);
#else
  return static_cast<uint32_t>((static_cast<uint64_t>(a) * b) >> 32);
#endif
}

}  // namespace detail

// The raw block function: Philox4x32 with 10 rounds.
MDFAST_HOST_DEVICE PhiloxWords philox4x32_10(uint32_t c0, uint32_t c1, uint32_t c2, uint32_t c3,
                                             uint32_t k0, uint32_t k1) {
  MDFAST_UNROLL
  for (int round = 0; round < 10; ++round) {
    const uint32_t lo0 = detail::kPhiloxM0 * c0;
    const uint32_t hi0 = detail::mulhi32(detail::kPhiloxM0, c0);
    const uint32_t lo1 = detail::kPhiloxM1 * c2;
    const uint32_t hi1 = detail::mulhi32(detail::kPhiloxM1, c2);
    const uint32_t n0 = hi1 ^ c1 ^ k0;
    const uint32_t n2 = hi0 ^ c3 ^ k1;
    c0 = n0;
    c1 = lo1;
    c2 = n2;
    c3 = lo0;
    k0 += detail::kPhiloxW0;
    k1 += detail::kPhiloxW1;
  }
  return PhiloxWords{{c0, c1, c2, c3}};
}

// Block `block` of the stream (seed, offset); see "Stream layout" above.
MDFAST_HOST_DEVICE PhiloxWords philox_block(uint64_t seed, uint64_t offset, uint64_t block) {
  return philox4x32_10(static_cast<uint32_t>(block), static_cast<uint32_t>(block >> 32),
                       static_cast<uint32_t>(offset), static_cast<uint32_t>(offset >> 32),
                       static_cast<uint32_t>(seed), static_cast<uint32_t>(seed >> 32));
}

// 53 random bits -> double in (0, 1).
MDFAST_HOST_DEVICE double uniform_double_from_words(uint32_t hi, uint32_t lo) {
  const uint64_t k = ((static_cast<uint64_t>(hi) << 32) | lo) >> 11;
  return k == 0 ? 0x1.0p-54 : static_cast<double>(k) * 0x1.0p-53;
}

// 24 random bits -> float in (0, 1).
MDFAST_HOST_DEVICE float uniform_float_from_word(uint32_t w) {
  const uint32_t k = w >> 8;
  return k == 0 ? 0x1.0p-25f : static_cast<float>(k) * 0x1.0p-24f;
}

// Element i of a float64 uniform draw.
MDFAST_HOST_DEVICE double uniform_double_at(uint64_t seed, uint64_t offset, uint64_t i) {
  const PhiloxWords r = philox_block(seed, offset, i >> 1);
  const int j = static_cast<int>(i & 1) * 2;
  return uniform_double_from_words(r.w[j], r.w[j + 1]);
}

// Element i of a float32 uniform draw.
MDFAST_HOST_DEVICE float uniform_float_at(uint64_t seed, uint64_t offset, uint64_t i) {
  const PhiloxWords r = philox_block(seed, offset, i >> 2);
  return uniform_float_from_word(r.w[i & 3]);
}

// Block b of a draw of n uniforms from (seed, offset): writes elements [b * per, (b + 1) * per)
// (clipped to n) of out, per = 2 (double) or 4 (float) per Philox block. The one writer of
// uniform_out and uniform_rows_out on CPU and CUDA.
template <typename scalar_t>
MDFAST_HOST_DEVICE void write_uniform_block(scalar_t* out, int64_t n, uint64_t seed,
                                            uint64_t offset, int64_t b) {
  const PhiloxWords r = philox_block(seed, offset, static_cast<uint64_t>(b));
  if constexpr (sizeof(scalar_t) == 8) {
    const int64_t first = 2 * b;
    MDFAST_UNROLL
    for (int j = 0; j < 2; ++j) {
      if (first + j < n) out[first + j] = uniform_double_from_words(r.w[2 * j], r.w[2 * j + 1]);
    }
  } else {
    const int64_t first = 4 * b;
    MDFAST_UNROLL
    for (int j = 0; j < 4; ++j) {
      if (first + j < n) out[first + j] = uniform_float_from_word(r.w[j]);
    }
  }
}

// Philox blocks a draw of n values of scalar_t takes.
template <typename scalar_t>
MDFAST_HOST_DEVICE int64_t uniform_blocks(int64_t n) {
  constexpr int64_t per = sizeof(scalar_t) == 8 ? 2 : 4;
  return (n + per - 1) / per;
}

// Element i of float64 sub-stream `stream` (0..255) of the call (seed, offset).
MDFAST_HOST_DEVICE double uniform_double_at(uint64_t seed, uint64_t offset, uint32_t stream,
                                            uint64_t i) {
  const PhiloxWords r =
      philox_block(seed, offset, (static_cast<uint64_t>(stream) << 56) | (i >> 1));
  const int j = static_cast<int>(i & 1) * 2;
  return uniform_double_from_words(r.w[j], r.w[j + 1]);
}

}  // namespace mdfast
