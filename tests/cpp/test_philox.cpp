// C++ unit tests of the header-only Philox core: Random123 known answers, the stream layout and
// the uniform conversions. Run by ctest (make test-cpp).
#include <cmath>
#include <cstdint>
#include <cstdio>

#include "mdfast/philox.h"

namespace {

int failures = 0;

void expect(bool ok, const char* what) {
  if (!ok) {
    std::fprintf(stderr, "FAILED: %s\n", what);
    ++failures;
  }
}

void known_answer(uint32_t c0, uint32_t c1, uint32_t c2, uint32_t c3, uint32_t k0, uint32_t k1,
                  uint32_t e0, uint32_t e1, uint32_t e2, uint32_t e3, const char* name) {
  const mdfast::PhiloxWords r = mdfast::philox4x32_10(c0, c1, c2, c3, k0, k1);
  expect(r.w[0] == e0 && r.w[1] == e1 && r.w[2] == e2 && r.w[3] == e3, name);
}

}  // namespace

int main() {
  known_answer(0, 0, 0, 0, 0, 0, 0x6627e8d5, 0xe169c58d, 0xbc57ac4c, 0x9b00dbd8, "KAT zeros");
  known_answer(0xffffffff, 0xffffffff, 0xffffffff, 0xffffffff, 0xffffffff, 0xffffffff, 0x408f276d,
               0x41c83b0e, 0xa20bc7c6, 0x6d5451fd, "KAT ones");
  known_answer(0x243f6a88, 0x85a308d3, 0x13198a2e, 0x03707344, 0xa4093822, 0x299f31d0, 0xd16cfe09,
               0x94fdcceb, 0x5001e420, 0x24126ea1, "KAT pi");

  // Stream layout: block -> (c0, c1), offset -> (c2, c3), seed -> key.
  const uint64_t seed = 0x0123456789abcdefULL, offset = 0x0000000500000007ULL;
  const uint64_t block = 0x0000000300000002ULL;
  const mdfast::PhiloxWords a = mdfast::philox_block(seed, offset, block);
  const mdfast::PhiloxWords b = mdfast::philox4x32_10(0x00000002u, 0x00000003u, 0x00000007u,
                                                      0x00000005u, 0x89abcdefu, 0x01234567u);
  expect(a.w[0] == b.w[0] && a.w[1] == b.w[1] && a.w[2] == b.w[2] && a.w[3] == b.w[3],
         "philox_block layout");

  // Uniform conversions: exact grid values, edge cells inside (0, 1).
  expect(mdfast::uniform_double_from_words(0, 0) == std::ldexp(1.0, -54), "double k=0 cell");
  expect(mdfast::uniform_double_from_words(0xffffffffu, 0xffffffffu) == 1.0 - std::ldexp(1.0, -53),
         "double top value < 1");
  expect(mdfast::uniform_double_from_words(0, 1u << 11) == std::ldexp(1.0, -53),
         "double lowest bit");
  expect(mdfast::uniform_float_from_word(0) == std::ldexp(1.0f, -25), "float k=0 cell");
  expect(mdfast::uniform_float_from_word(0xffffffffu) == 1.0f - std::ldexp(1.0f, -24),
         "float top value < 1");

  // Element mapping: float64 element i uses block i/2, words (2j, 2j+1); float32 word i%4.
  const mdfast::PhiloxWords r = mdfast::philox_block(seed, offset, 5);
  expect(mdfast::uniform_double_at(seed, offset, 11) ==
             mdfast::uniform_double_from_words(r.w[2], r.w[3]),
         "double element mapping");
  expect(mdfast::uniform_float_at(seed, offset, 22) == mdfast::uniform_float_from_word(r.w[2]),
         "float element mapping");

  // Sub-streams: stream 0 is the plain stream; stream 1 lives in blocks (1 << 56) | b.
  expect(mdfast::uniform_double_at(seed, offset, 0u, 11) ==
             mdfast::uniform_double_at(seed, offset, 11),
         "sub-stream 0 == plain stream");
  const mdfast::PhiloxWords s1 = mdfast::philox_block(seed, offset, (1ULL << 56) | 5);
  expect(mdfast::uniform_double_at(seed, offset, 1u, 11) ==
             mdfast::uniform_double_from_words(s1.w[2], s1.w[3]),
         "sub-stream 1 layout");

  // Means of many draws are near 1/2 (a gross-error check; the statistics live in pytest).
  double sum = 0;
  const int n = 1 << 16;
  for (int i = 0; i < n; ++i) sum += mdfast::uniform_double_at(7, 0, i);
  expect(std::fabs(sum / n - 0.5) < 0.01, "mean of uniforms");

  if (failures == 0) std::printf("test_philox: all checks passed\n");
  return failures == 0 ? 0 : 1;
}
