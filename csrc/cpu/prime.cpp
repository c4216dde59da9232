// CPU kernels of the MDM-Prime ops: prime_ce (forward), prime_ce_backward, prime_sample_step.
// Each row walks only its consistent set V (digits.h), so a row costs |V| ~ b^#masked, and rows
// with nothing to do (no masked digit, zero weight, no digit revealed) never read their logits.
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/empty_like.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <tuple>
#include <vector>

#include "../common/prime_args.h"
#include "mdfast/digits.h"
#include "mdfast/gumbel.h"
#include "mdfast/online_softmax.h"
#include "mdfast/philox.h"
#include "mdfast/sampling.h"

namespace mdfast {
namespace {

constexpr int64_t kChunk = 256;  // classes of V buffered before one max / exp-sum sweep

template <typename T>
struct AccType {
  using type = float;
};
template <>
struct AccType<double> {
  using type = double;
};

// Validates every row; throws naming the first bad one.
void validate_rows(const int64_t* dp, const int64_t* tp, int64_t N, int ell, int64_t base,
                   int64_t C) {
  for (int64_t n = 0; n < N; ++n) {
    const int64_t* d = dp + n * ell;
    const int64_t t = tp ? tp[n] : -1;
    const int code = validate_token(d, base, ell, C, tp != nullptr, t);
    if (code != kDigitsOk) throw_prime_row_error(code, n, d, ell, base, C, t);
  }
}

// exp for the float sweeps: Cody-Waite range reduction and a degree-6 polynomial (relative error
// < 1e-7), written without float compares or float->int conversions so that GCC's `omp simd` loops
// vectorise it under its default -ftrapping-math (glibc's expf is scalar). Results below 2^-126
// (x < -87.3, and x = -inf) are flushed to 0. Callers never pass NaN.
inline float exp_simd(float x) {
  union {
    float f;
    int32_t i;
  } t, u, out;
  const float shifter = 12582912.0f;  // 1.5 * 2^23: adding it rounds to an integer in the low bits
  t.f = x * 1.44269504088896341f + shifter;
  const float n = t.f - shifter;
  float r = x - n * 0.693359375f;
  r = r + n * 2.12194440e-4f;
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * r * r + r + 1.0f;
  const int32_t ni = t.i - 0x4B400000;  // n as an integer
  const int32_t keep = ni > -126 ? -1 : 0;
  u.i = ((ni > -126 ? ni : -126) + 127) << 23;  // 2^n
  out.f = p * u.f;
  out.i &= keep;
  return out.f;
}
inline double exp_simd(double x) { return std::exp(x); }

// Classes of V come in runs of b^T consecutive codes when the T least significant digits are all
// masked (the whole row when every digit is): `for_each_run` calls fn(first, count) per run.
template <typename Fn>
void for_each_run(const int64_t* d, int64_t base, int ell, int64_t C, Fn fn) {
  int64_t outer[kMaxDigits];
  int64_t run = 1;
  int j = ell - 1;
  for (; j >= 0 && d[j] == base; --j) run *= base;
  for (int k = 0; k < ell; ++k) outer[k] = k > j ? 0 : d[k];
  DigitWalk starts(outer, base, ell, C);
  for (bool ok = starts.begin(); ok; ok = starts.next()) {
    fn(starts.c, std::min(run, C - starts.c));
  }
}

// One sweep of a buffered chunk into ell+1 running log-sum-exps: lse[0] over all entries, lse[1+k]
// over entries whose bit k of `bits` is set (bits unused when slots == 0).
template <typename acc_t>
void flush_chunk(const acc_t* z, const uint32_t* bits, int64_t n, int slots,
                 OnlineLogSumExp<acc_t>* lse) {
  acc_t mx = -std::numeric_limits<acc_t>::infinity();
  int nan = 0;
#pragma omp simd reduction(max : mx) reduction(| : nan)
  for (int64_t i = 0; i < n; ++i) {
    mx = z[i] > mx ? z[i] : mx;
    nan |= z[i] != z[i];
  }
  OnlineLogSumExp<acc_t> part[kMaxDigits + 1];
  if (nan) {
    part[0].max = 0;
    part[0].sum = std::numeric_limits<acc_t>::quiet_NaN();
    for (int k = 0; k < slots; ++k) part[1 + k] = part[0];
  } else if (mx != -std::numeric_limits<acc_t>::infinity()) {
    acc_t e[kChunk];
#pragma omp simd
    for (int64_t i = 0; i < n; ++i) e[i] = exp_simd(z[i] - mx);
    acc_t s[kMaxDigits + 1] = {};
    acc_t s0 = 0;
#pragma omp simd reduction(+ : s0)
    for (int64_t i = 0; i < n; ++i) s0 += e[i];
    s[0] = s0;
    if (slots) {
      for (int64_t i = 0; i < n; ++i) {
        for (uint32_t b = bits[i]; b; b &= b - 1) s[1 + __builtin_ctz(b)] += e[i];
      }
    }
    for (int k = 0; k <= slots; ++k) {
      part[k].max = s[k] > 0 ? mx : -std::numeric_limits<acc_t>::infinity();
      part[k].sum = s[k];
    }
  }
  for (int k = 0; k <= slots; ++k) lse[k].merge(part[k]);
}

template <typename scalar_t>
void prime_ce_forward_impl(const at::Tensor& logits, const int64_t* tp, const int64_t* dp,
                           const double* wp, int64_t base, int mode, int ell, at::Tensor& loss,
                           at::Tensor& lse) {
  using acc_t = typename AccType<scalar_t>::type;
  const int64_t N = logits.size(0), C = logits.size(1);
  const scalar_t* zp = logits.const_data_ptr<scalar_t>();
  acc_t* lp = loss.data_ptr<acc_t>();
  acc_t* sp = lse.data_ptr<acc_t>();
  at::parallel_for(0, N, 16, [&](int64_t begin, int64_t end) {
    acc_t zbuf[kChunk];
    uint32_t bits[kChunk];
    for (int64_t n = begin; n < end; ++n) {
      const int64_t* d = dp + n * ell;
      acc_t* lse_row = sp + n * (ell + 1);
      for (int j = 0; j <= ell; ++j) lse_row[j] = 0;
      const double w = wp ? wp[n] : 1.0;
      DigitWalk walk(d, base, ell, C);
      if (walk.masked == 0 || w == 0.0) {
        lp[n] = 0;
        continue;
      }
      const scalar_t* z = zp + n * C;
      const int64_t t = tp[n];
      int64_t tv[kMaxDigits];
      for (int k = 0; k < walk.masked; ++k) tv[k] = digit_of(t, base, ell, walk.pos[k]);
      const int slots = mode == 1 ? walk.masked : 0;
      OnlineLogSumExp<acc_t> acc[kMaxDigits + 1];
      if (slots == 0) {  // joint: copy runs of consecutive classes, vectorised sweeps
        int64_t fill = 0;
        for_each_run(d, base, ell, C, [&](int64_t first, int64_t count) {
          for (int64_t o = 0; o < count;) {
            const int64_t len = std::min(kChunk - fill, count - o);
            const scalar_t* src = z + first + o;
            acc_t* dst = zbuf + fill;
#pragma omp simd
            for (int64_t i = 0; i < len; ++i) dst[i] = static_cast<acc_t>(src[i]);
            fill += len;
            o += len;
            if (fill == kChunk) {
              flush_chunk(zbuf, bits, fill, 0, acc);
              fill = 0;
            }
          }
        });
        if (fill) flush_chunk(zbuf, bits, fill, 0, acc);
      } else {
        int64_t fill = 0;
        for (bool ok = walk.begin(); ok; ok = walk.next()) {
          zbuf[fill] = static_cast<acc_t>(z[walk.c]);
          uint32_t b = 0;
          for (int k = 0; k < slots; ++k) b |= static_cast<uint32_t>(walk.val[k] == tv[k]) << k;
          bits[fill] = b;
          if (++fill == kChunk) {
            flush_chunk(zbuf, bits, fill, slots, acc);
            fill = 0;
          }
        }
        if (fill) flush_chunk(zbuf, bits, fill, slots, acc);
      }
      const acc_t lse_v = acc[0].value();
      lse_row[0] = lse_v;
      acc_t raw;
      if (mode == 0) {
        raw = lse_v - static_cast<acc_t>(z[t]);
        for (int j = 1; j <= ell; ++j) lse_row[j] = lse_v;
      } else {
        raw = 0;
        for (int j = 1; j <= ell; ++j) lse_row[j] = lse_v;  // visible digits: no term
        for (int k = 0; k < walk.masked; ++k) {
          const acc_t lj = acc[1 + k].value();
          lse_row[1 + walk.pos[k]] = lj;
          raw += lse_v - lj;
        }
      }
      lp[n] = static_cast<acc_t>(w) * raw;
    }
  });
}

std::tuple<at::Tensor, at::Tensor> prime_ce_cpu(const at::Tensor& logits, const at::Tensor& target,
                                                const at::Tensor& digits, int64_t base,
                                                c10::string_view mode,
                                                const c10::optional<at::Tensor>& weight) {
  const PrimeShape shape = check_prime_common(logits, digits, base);
  check_prime_target(target, logits);
  check_prime_weight(weight, logits);
  const int m = parse_prime_ce_mode(mode);
  const at::Tensor z = logits.contiguous();
  const at::Tensor t = target.contiguous();
  const at::Tensor d = digits.contiguous();
  validate_rows(d.const_data_ptr<int64_t>(), t.const_data_ptr<int64_t>(), shape.rows, shape.ell,
                base, shape.classes);
  at::Tensor w;
  if (weight.has_value()) w = weight->to(at::kDouble).contiguous();
  const auto out_type = logits.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
  at::Tensor loss = at::empty({shape.rows}, logits.options().dtype(out_type));
  at::Tensor lse = at::empty({shape.rows, shape.ell + 1}, logits.options().dtype(out_type));
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, z.scalar_type(), "prime_ce_cpu", [&] {
    prime_ce_forward_impl<scalar_t>(z, t.const_data_ptr<int64_t>(), d.const_data_ptr<int64_t>(),
                                    w.defined() ? w.const_data_ptr<double>() : nullptr, base, m,
                                    shape.ell, loss, lse);
  });
  return {loss, lse};
}

template <typename scalar_t>
void prime_ce_backward_impl(const at::Tensor& grad, const at::Tensor& logits, const int64_t* tp,
                            const int64_t* dp, const at::Tensor& lse, const double* wp,
                            int64_t base, int mode, int ell, at::Tensor& out) {
  using acc_t = typename AccType<scalar_t>::type;
  const int64_t N = logits.size(0), C = logits.size(1);
  const scalar_t* zp = logits.const_data_ptr<scalar_t>();
  const acc_t* gp = grad.const_data_ptr<acc_t>();
  const acc_t* sp = lse.const_data_ptr<acc_t>();
  scalar_t* op = out.data_ptr<scalar_t>();
  at::parallel_for(0, N, 16, [&](int64_t begin, int64_t end) {
    for (int64_t n = begin; n < end; ++n) {
      const int64_t* d = dp + n * ell;
      scalar_t* o = op + n * C;
      const double w = wp ? wp[n] : 1.0;
      DigitWalk walk(d, base, ell, C);
      if (walk.masked < ell || w == 0.0) {  // else V = [0, C): every class is written below
        std::fill(o, o + C, scalar_t(0));
      }
      if (walk.masked == 0 || w == 0.0) continue;
      const acc_t g = gp[n] * static_cast<acc_t>(w);
      const scalar_t* z = zp + n * C;
      const acc_t* lse_row = sp + n * (ell + 1);
      const acc_t lse_v = lse_row[0];
      const int64_t t = tp[n];
      if (mode == 0) {
        for_each_run(d, base, ell, C, [&](int64_t first, int64_t count) {
          const scalar_t* src = z + first;
          scalar_t* dst = o + first;
#pragma omp simd
          for (int64_t i = 0; i < count; ++i) {
            dst[i] = static_cast<scalar_t>(g * exp_simd(static_cast<acc_t>(src[i]) - lse_v));
          }
        });
        o[t] = static_cast<scalar_t>(g * (std::exp(static_cast<acc_t>(z[t]) - lse_v) - 1));
      } else {
        int64_t tv[kMaxDigits];
        acc_t lj[kMaxDigits];
        for (int k = 0; k < walk.masked; ++k) {
          tv[k] = digit_of(t, base, ell, walk.pos[k]);
          lj[k] = lse_row[1 + walk.pos[k]];
        }
        const acc_t m = static_cast<acc_t>(walk.masked);
        for (bool ok = walk.begin(); ok; ok = walk.next()) {
          const acc_t zc = static_cast<acc_t>(z[walk.c]);
          acc_t v = m * std::exp(zc - lse_v);
          for (int k = 0; k < walk.masked; ++k) {
            if (walk.val[k] == tv[k]) v -= std::exp(zc - lj[k]);
          }
          o[walk.c] = static_cast<scalar_t>(g * v);
        }
      }
    }
  });
}

at::Tensor prime_ce_backward_cpu(const at::Tensor& grad, const at::Tensor& logits,
                                 const at::Tensor& target, const at::Tensor& digits,
                                 const at::Tensor& lse, int64_t base, c10::string_view mode,
                                 const c10::optional<at::Tensor>& weight) {
  const PrimeShape shape = check_prime_common(logits, digits, base);
  check_prime_target(target, logits);
  check_prime_weight(weight, logits);
  const int m = parse_prime_ce_mode(mode);
  const auto acc_type = logits.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
  TORCH_CHECK(grad.dim() == 1 && grad.size(0) == shape.rows,
              "mdfast: argument 'grad' must have shape [", shape.rows, "], got ", grad.sizes());
  TORCH_CHECK(lse.dim() == 2 && lse.size(0) == shape.rows && lse.size(1) == shape.ell + 1,
              "mdfast: argument 'lse' must have shape [", shape.rows, ", ", shape.ell + 1,
              "], got ", lse.sizes());
  const at::Tensor g = grad.to(acc_type).contiguous();
  const at::Tensor s = lse.to(acc_type).contiguous();
  const at::Tensor z = logits.contiguous();
  const at::Tensor t = target.contiguous();
  const at::Tensor d = digits.contiguous();
  at::Tensor w;
  if (weight.has_value()) w = weight->to(at::kDouble).contiguous();
  at::Tensor out = at::empty_like(z);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, z.scalar_type(), "prime_ce_bwd", [&] {
    prime_ce_backward_impl<scalar_t>(g, z, t.const_data_ptr<int64_t>(), d.const_data_ptr<int64_t>(),
                                     s, w.defined() ? w.const_data_ptr<double>() : nullptr, base, m,
                                     shape.ell, out);
  });
  return out;
}

// Element i of float64 sub-stream `stream` (philox.h's uniform_double_at), keeping the last Philox
// block: one block carries two float64 uniforms, so a walk over consecutive classes pays one
// block per two classes instead of one per class. Same bits as uniform_double_at.
struct CachedUniform {
  uint64_t seed, offset;
  uint32_t stream;
  uint64_t block = ~0ull;
  PhiloxWords words{};

  double at(uint64_t i) {
    const uint64_t b = (static_cast<uint64_t>(stream) << 56) | (i >> 1);
    if (b != block) {
      words = philox_block(seed, offset, b);
      block = b;
    }
    const int j = static_cast<int>(i & 1) * 2;
    return uniform_double_from_words(words.w[j], words.w[j + 1]);
  }
};

template <typename scalar_t>
void prime_sample_impl(const at::Tensor& logits, const int64_t* dp, int64_t base, int ell,
                       double p_unmask, double temperature, int mode, uint32_t fixed, uint64_t seed,
                       uint64_t offset, int64_t* out) {
  const int64_t N = logits.size(0), C = logits.size(1);
  const scalar_t* zp = logits.const_data_ptr<scalar_t>();
  at::parallel_for(0, N, 16, [&](int64_t begin, int64_t end) {
    std::vector<double> hist;
    for (int64_t n = begin; n < end; ++n) {
      const int64_t* d = dp + n * ell;
      int64_t* o = out + n * ell;
      uint32_t reveal = 0;
      for (int j = 0; j < ell; ++j) {
        o[j] = d[j];
        if (d[j] == base && !((fixed >> j) & 1u) &&
            uniform_double_at(seed, offset, 0u, static_cast<uint64_t>(n * ell + j)) < p_unmask) {
          reveal |= 1u << j;
        }
      }
      if (!reveal) continue;
      const scalar_t* z = zp + n * C;
      DigitWalk walk(d, base, ell, C);
      // A row revealing one digit draws it jointly in both modes: the marginal of that digit is
      // the law of the joint draw's digit, and the marginal path would cost b more uniforms.
      bool need_joint = mode == 0 || __builtin_popcount(reveal) == 1;
      if (!need_joint) {
        // per-digit marginals of softmax_V(z / tau), only for the revealed digits
        OnlineLogSumExp<double> lse;
        for (bool ok = walk.begin(); ok; ok = walk.next()) {
          lse.add(static_cast<double>(z[walk.c]) / temperature);
        }
        const double lv = lse.value();
        hist.assign(static_cast<size_t>(walk.masked * base), 0.0);
        for (bool ok = walk.begin(); ok; ok = walk.next()) {
          const double p = std::exp(static_cast<double>(z[walk.c]) / temperature - lv);
          for (int k = 0; k < walk.masked; ++k) {
            if ((reveal >> walk.pos[k]) & 1u) hist[k * base + walk.val[k]] += p;
          }
        }
        for (int k = 0; k < walk.masked; ++k) {
          const int j = walk.pos[k];
          if (!((reveal >> j) & 1u)) continue;
          ArgmaxState best;
          CachedUniform uniform{seed, offset, 2u};
          for (int64_t v = 0; v < base; ++v) {
            const double q = hist[k * base + v];
            if (!(q > 0.0)) continue;
            const uint64_t idx = static_cast<uint64_t>((n * ell + j) * base + v);
            best.add(std::log(q) + gumbel_from_uniform(uniform.at(idx)), v);
          }
          o[j] = best.index;
        }
        need_joint = decode_digits(o, base, ell) >= C;
      }
      if (need_joint) {
        ArgmaxState best;
        CachedUniform uniform{seed, offset, 1u};
        for (bool ok = walk.begin(); ok; ok = walk.next()) {
          const uint64_t idx = static_cast<uint64_t>(n * C + walk.c);
          best.add(
              static_cast<double>(z[walk.c]) / temperature + gumbel_from_uniform(uniform.at(idx)),
              walk.c);
        }
        const int64_t c_hat = best.index;
        for (int j = 0; j < ell; ++j) {
          if ((reveal >> j) & 1u) o[j] = digit_of(c_hat, base, ell, j);
        }
      }
    }
  });
}

at::Tensor prime_sample_step_cpu(const at::Tensor& logits, const at::Tensor& digits, int64_t base,
                                 double alpha_t, double alpha_s, double temperature,
                                 c10::string_view mode,
                                 const c10::optional<at::Tensor>& fixed_digits, int64_t seed,
                                 int64_t offset) {
  const PrimeShape shape = check_prime_common(logits, digits, base);
  check_prime_sample_scalars(alpha_t, alpha_s, temperature, seed, offset);
  const int m = parse_prime_sample_mode(mode);
  uint32_t fixed = 0;
  if (fixed_digits.has_value()) {
    check_prime_fixed_digits(*fixed_digits);
    fixed = prime_fixed_bits(*fixed_digits, shape.ell);
  }
  const at::Tensor z = logits.contiguous();
  const at::Tensor d = digits.contiguous();
  validate_rows(d.const_data_ptr<int64_t>(), nullptr, shape.rows, shape.ell, base, shape.classes);
  at::Tensor out = at::empty_like(d);
  const double p = sampling::unmask_probability(alpha_t, alpha_s, /*sigma=*/0.0);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, z.scalar_type(), "prime_sample", [&] {
    prime_sample_impl<scalar_t>(z, d.const_data_ptr<int64_t>(), base, shape.ell, p, temperature, m,
                                fixed, static_cast<uint64_t>(seed), static_cast<uint64_t>(offset),
                                out.data_ptr<int64_t>());
  });
  return out;
}

}  // namespace

TORCH_LIBRARY_IMPL(mdfast, CPU, m) {
  m.impl("prime_ce", &prime_ce_cpu);
  m.impl("prime_ce_backward", &prime_ce_backward_cpu);
  m.impl("prime_sample_step", &prime_sample_step_cpu);
}

}  // namespace mdfast
