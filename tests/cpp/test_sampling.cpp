// C++ unit tests of the sampling core (csrc/include/mdfast/sampling.h): the order-preserving
// float key, composites, and the radix select (k-th largest, cumulative-mass crossing) against a
// brute-force sort on random rows with ties. Run by ctest (make test-cpp).
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <random>
#include <vector>

#include "mdfast/sampling.h"

namespace {

int failures = 0;

void expect(bool ok, const char* what) {
  if (!ok) {
    std::fprintf(stderr, "FAILED: %s\n", what);
    ++failures;
  }
}

using mdfast::sampling::RadixHist;
using mdfast::sampling::RadixSelect;

uint64_t run(RadixSelect sel, const std::vector<uint64_t>& comp, const std::vector<uint64_t>& mass,
             bool* found) {
  RadixHist h;
  while (!sel.done) {
    mdfast::sampling::radix_hist_clear(h);
    for (size_t j = 0; j < comp.size(); ++j) {
      if (!sel.in_prefix(comp[j])) continue;
      const int d = sel.digit(comp[j]);
      h.count[d] += 1;
      h.mass[d] += mass[j];
      h.maxc[d] = std::max(h.maxc[d], comp[j]);
    }
    sel.step(h);
  }
  *found = sel.found;
  return sel.result;
}

}  // namespace

int main() {
  // float_key is monotone, including negatives, zeros and infinities.
  const float values[] = {-INFINITY, -3.5f, -1e-30f, -0.0f, 0.0f, 1e-30f, 2.0f, INFINITY};
  for (int i = 0; i + 1 < 8; ++i) {
    expect(mdfast::sampling::float_key(values[i]) <= mdfast::sampling::float_key(values[i + 1]),
           "float_key monotone");
  }
  expect(mdfast::sampling::composite(1.0f, 3) > mdfast::sampling::composite(1.0f, 4),
         "ties rank the smaller index first");
  expect(mdfast::sampling::composite_index(mdfast::sampling::composite(-2.0f, 12345)) == 12345,
         "composite_index");

  std::mt19937_64 rng(12345);
  for (int trial = 0; trial < 200; ++trial) {
    const int n = 1 + static_cast<int>(rng() % 3000);
    std::vector<uint64_t> comp(n), mass(n);
    for (int c = 0; c < n; ++c) {
      const float z = static_cast<float>(static_cast<int>(rng() % 40) - 20) * 0.25f;  // ties
      comp[c] = mdfast::sampling::composite(z, c);
      mass[c] = rng() >> 12;
    }
    std::vector<size_t> order(n);
    for (int c = 0; c < n; ++c) order[c] = c;
    std::sort(order.begin(), order.end(), [&](size_t a, size_t b) { return comp[a] > comp[b]; });
    // k-th largest
    const uint64_t k = 1 + rng() % n;
    bool found = false;
    const uint64_t kth = run(RadixSelect::kth(k), comp, mass, &found);
    expect(found && kth == comp[order[k - 1]], "radix k-th largest");
    // crossing of the cumulative mass, strict and non-strict
    uint64_t total = 0;
    for (uint64_t m : mass) total += m;
    const uint64_t target =
        static_cast<uint64_t>(total * (static_cast<double>(rng() % 1000) / 1000.0));
    for (int strict = 0; strict < 2; ++strict) {
      uint64_t cum = 0;
      uint64_t want = 0;
      bool want_found = false;
      for (size_t j = 0; j < order.size(); ++j) {
        cum += mass[order[j]];
        if (strict ? cum > target : cum >= target) {
          want = comp[order[j]];
          want_found = true;
          break;
        }
      }
      const uint64_t got = run(RadixSelect::crossing(target, strict != 0), comp, mass, &found);
      expect(found == want_found && (!found || got == want), "radix cumulative-mass crossing");
    }
  }
  // unmask probability: MDLM, ReMDM, clamps
  expect(mdfast::sampling::unmask_probability(0.2, 0.6, 0.0) == (0.6 - 0.2) / 0.8, "mdlm step");
  expect(mdfast::sampling::unmask_probability(1.0, 1.0, 0.0) == 1.0, "alpha_t = 1");
  expect(mdfast::sampling::unmask_probability(0.9, 0.99, 1.0) == 1.0, "clamped to 1");
  if (failures == 0) std::printf("test_sampling: all passed\n");
  return failures == 0 ? 0 : 1;
}
