// Online (streaming) log-sum-exp, Milakov & Gimelshein 2018 (arXiv 1805.02867): one pass over a
// row keeps the running maximum m and s = sum_j exp(x_j - m), so logsumexp = m + log s.
// Two partial states merge exactly, so blocks, warps and threads can each reduce a slice:
//   merge((m1, s1), (m2, s2)) = (m, s1 exp(m1 - m) + s2 exp(m2 - m)), m = max(m1, m2).
// -inf entries (excluded classes) contribute nothing; a NaN entry makes the result NaN.
#pragma once

#include <cmath>
#include <limits>

#include "mdfast/config.h"

namespace mdfast {

template <typename acc_t>
struct OnlineLogSumExp {
  acc_t max = -std::numeric_limits<acc_t>::infinity();
  acc_t sum = 0;

  MDFAST_HOST_DEVICE void add(acc_t x) {
    if (x == -std::numeric_limits<acc_t>::infinity()) return;
    if (x > max) {
      sum = sum * exp_(max - x) + acc_t(1);
      max = x;
    } else {
      sum += exp_(x - max);  // NaN x (or NaN max) falls here and poisons sum
    }
  }

  MDFAST_HOST_DEVICE void merge(const OnlineLogSumExp& o) {
    if (o.max == -std::numeric_limits<acc_t>::infinity() && !(o.sum != o.sum)) return;
    if (max == -std::numeric_limits<acc_t>::infinity() && !(sum != sum)) {
      *this = o;
      return;
    }
    if (o.max > max) {
      sum = sum * exp_(max - o.max) + o.sum;
      max = o.max;
    } else {
      sum += o.sum * exp_(o.max - max);
    }
  }

  // log(sum_j exp(x_j)); -inf for an empty (all-excluded) row.
  MDFAST_HOST_DEVICE acc_t value() const { return max + log_(sum); }

 private:
  MDFAST_HOST_DEVICE static acc_t exp_(acc_t v) {
    using std::exp;
    return exp(v);
  }
  MDFAST_HOST_DEVICE static acc_t log_(acc_t v) {
    using std::log;
    return log(v);
  }
};

}  // namespace mdfast
