// Exact categorical draws by Gumbel-max in float64: c* = argmax_c (z_c / tau + g_c) with
// g_c = -log(-log u_c) and u_c a 53-bit uniform from philox.h. With 53-bit uniforms the noise
// reaches +36.7 (fp32 uniforms cap it near +15.9 and under-draw tokens ~16 nats below the top),
// so the draw is exact to double precision. Ties (probability ~0) go to the smaller index, so the
// result does not depend on the order in which threads merge their partial argmaxes.
#pragma once

#include <cmath>
#include <cstdint>
#include <limits>

#include "mdfast/config.h"

namespace mdfast {

MDFAST_HOST_DEVICE double gumbel_from_uniform(double u) {
  using std::log;
  return -log(-log(u));
}

struct ArgmaxState {
  double score = -std::numeric_limits<double>::infinity();
  int64_t index = -1;

  MDFAST_HOST_DEVICE void add(double s, int64_t i) {
    if (s > score || (s == score && index >= 0 && i < index) || (index < 0 && s == s)) {
      score = s;
      index = i;
    }
  }
  MDFAST_HOST_DEVICE void merge(const ArgmaxState& o) {
    if (o.index >= 0) add(o.score, o.index);
  }
};

}  // namespace mdfast
