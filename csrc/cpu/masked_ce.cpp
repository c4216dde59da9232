// CPU kernels of the masked cross-entropy ops: masked_ce (forward), masked_ce_backward and the
// in-place masked_ce_backward_.
//
// Rows are split across threads with at::parallel_for (OpenMP). A row is streamed once per pass
// in blocks of kBlock elements: the block's maximum and then sum(exp(x - max)) are taken while
// the block sits in L1, and the running (max, sum) pair is rescaled between blocks (online
// softmax, one read of the row from memory and one exp per element). bf16 / fp16 blocks are
// widened into a float buffer first. The inner loops are plain `omp simd` loops with a
// branch-free exp, compiled for AVX-512, AVX2 and baseline x86-64 (target_clones) and chosen at
// load time. Rows with weight 0 are never read: loss 0, gradient row 0.
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <type_traits>

#include "../common/linear_masked_ce.h"
#include "../common/masked_ce_args.h"
#include "mdfast/online_softmax.h"

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) && defined(__linux__)
#define MDFAST_VEC_CLONES \
  __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#define MDFAST_VEC_CLONES
#endif

namespace mdfast {
namespace {

constexpr int64_t kBlock = 2048;
constexpr float kInf = std::numeric_limits<float>::infinity();

// exp(x) for x <= 88 to ~1 ulp (Cephes expf polynomial), 0 below -87.3, NaN for NaN. Written
// with arithmetic and selects only so that `omp simd` loops around it vectorise.
inline float fast_exp(float x) {
  float xc = x < -87.33654f ? -87.33654f : x;  // NaN compares false and stays NaN
  xc = xc > 88.0f ? 88.0f : xc;
  const float k = (xc * 1.44269504088896341f + 12582912.f) - 12582912.f;  // round to nearest
  float r = xc - k * 0.693359375f;
  r = r - k * (-2.12194440e-4f);
  float y = 1.9875691500E-4f;
  y = y * r + 1.3981999507E-3f;
  y = y * r + 8.3334519073E-3f;
  y = y * r + 4.1665795894E-2f;
  y = y * r + 1.6666665459E-1f;
  y = y * r + 5.0000001201E-1f;
  y = y * r * r + r + 1.0f;
  const uint32_t bits = (static_cast<uint32_t>(static_cast<int32_t>(k)) + 127u) << 23;
  return x < -87.33654f ? 0.f : y * __builtin_bit_cast(float, bits);
}

MDFAST_VEC_CLONES float block_max(const float* x, int64_t n) {
  float m = -kInf;
#pragma omp simd reduction(max : m)
  for (int64_t i = 0; i < n; ++i) m = x[i] > m ? x[i] : m;  // NaN never wins (sum catches it)
  return m;
}

MDFAST_VEC_CLONES float block_sumexp(const float* x, int64_t n, float m) {
  float s = 0.f;
#pragma omp simd reduction(+ : s)
  for (int64_t i = 0; i < n; ++i) s += fast_exp(x[i] - m);
  return s;
}

MDFAST_VEC_CLONES bool block_has_nan(const float* x, int64_t n) {
  int nan = 0;
#pragma omp simd reduction(| : nan)
  for (int64_t i = 0; i < n; ++i) nan |= (x[i] != x[i]);
  return nan != 0;
}

// out[i] = scale * exp(x[i] - lse); out may alias x.
MDFAST_VEC_CLONES void block_scaled_exp(const float* x, float* out, int64_t n, float lse,
                                        float scale) {
#pragma omp simd
  for (int64_t i = 0; i < n; ++i) out[i] = scale * fast_exp(x[i] - lse);
}

MDFAST_VEC_CLONES void widen_bf16(const uint16_t* x, float* out, int64_t n) {
#pragma omp simd
  for (int64_t i = 0; i < n; ++i) out[i] = __builtin_bit_cast(float, uint32_t(x[i]) << 16);
}

MDFAST_VEC_CLONES void narrow_bf16(const float* x, uint16_t* out, int64_t n) {
#pragma omp simd
  for (int64_t i = 0; i < n; ++i) {
    const uint32_t u = __builtin_bit_cast(uint32_t, x[i]);
    const uint32_t rounded = (u + 0x7FFFu + ((u >> 16) & 1u)) >> 16;  // round to nearest even
    out[i] = x[i] != x[i] ? uint16_t((u >> 16) | 0x40u) : uint16_t(rounded);
  }
}

MDFAST_VEC_CLONES void widen_half(const c10::Half* x, float* out, int64_t n) {
#pragma omp simd
  for (int64_t i = 0; i < n; ++i) out[i] = static_cast<float>(x[i]);
}

MDFAST_VEC_CLONES void narrow_half(const float* x, c10::Half* out, int64_t n) {
#pragma omp simd
  for (int64_t i = 0; i < n; ++i) out[i] = c10::Half(x[i]);
}

// A block of the row as floats: the row itself for float32, else widened into buf.
template <typename T>
const float* load_block(const T* x, float* buf, int64_t n) {
  if constexpr (std::is_same_v<T, float>) {
    return x;
  } else if constexpr (std::is_same_v<T, c10::BFloat16>) {
    widen_bf16(reinterpret_cast<const uint16_t*>(x), buf, n);
    return buf;
  } else {
    widen_half(x, buf, n);
    return buf;
  }
}

template <typename T>
void store_block(const float* buf, T* out, int64_t n) {
  if constexpr (std::is_same_v<T, c10::BFloat16>) {
    narrow_bf16(buf, reinterpret_cast<uint16_t*>(out), n);
  } else if constexpr (std::is_same_v<T, c10::Half>) {
    narrow_half(buf, out, n);
  }
}

// Calls f(lo, hi) for the column ranges of a row with the excluded column left out.
template <typename F>
void for_each_segment(int64_t v, int64_t exclude, F&& f) {
  if (exclude < 0) {
    f(int64_t(0), v);
  } else {
    f(int64_t(0), exclude);
    f(exclude + 1, v);
  }
}

// logsumexp of one row over all columns but `exclude` (float32 accumulation).
template <typename T>
float row_lse(const T* x, int64_t v, int64_t exclude, float* buf) {
  float m = -kInf, s = 0.f;
  for_each_segment(v, exclude, [&](int64_t lo, int64_t hi) {
    for (int64_t b = lo; b < hi; b += kBlock) {
      const int64_t len = std::min(kBlock, hi - b);
      const float* p = load_block(x + b, buf, len);
      const float bm = block_max(p, len);
      if (bm > m) {
        s *= std::exp(m - bm);
        m = bm;
      }
      if (m == -kInf) {  // only -inf (or NaN) seen so far: nothing to add unless NaN
        if (block_has_nan(p, len)) s = std::numeric_limits<float>::quiet_NaN();
        continue;
      }
      s += block_sumexp(p, len, m);
    }
  });
  return m + std::log(s);
}

double row_lse(const double* x, int64_t v, int64_t exclude, float* /*buf*/) {
  OnlineLogSumExp<double> acc;
  for_each_segment(v, exclude, [&](int64_t lo, int64_t hi) {
    for (int64_t j = lo; j < hi; ++j) acc.add(x[j]);
  });
  // a +inf logit makes the row NaN, as in the float path
  return acc.max == std::numeric_limits<double>::infinity()
             ? std::numeric_limits<double>::quiet_NaN()
             : acc.value();
}

template <typename T>
using acc_of = std::conditional_t<std::is_same_v<T, double>, double, float>;

int64_t grain_for(int64_t v) {
  return std::max<int64_t>(1, (int64_t(1) << 15) / std::max<int64_t>(v, 1));
}

template <typename T>
void forward_rows(const T* logits, const int64_t* target, const acc_of<T>* weight, int64_t n,
                  int64_t v, int64_t exclude, acc_of<T>* loss, acc_of<T>* lse) {
  using acc_t = acc_of<T>;
  at::parallel_for(0, n, grain_for(v), [&](int64_t begin, int64_t end) {
    alignas(64) float buf[kBlock];
    for (int64_t r = begin; r < end; ++r) {
      const acc_t w = weight ? weight[r] : acc_t(1);
      if (w == 0) {
        loss[r] = 0;
        lse[r] = 0;
        continue;
      }
      const T* x = logits + r * v;
      const acc_t l = row_lse(x, v, exclude, buf);
      lse[r] = l;
      loss[r] = w * (l - static_cast<acc_t>(x[target[r]]));
    }
  });
}

// grad[r, j] = g[r] w[r] (exp(z[r, j] - lse[r]) - [j == target[r]]), 0 at the excluded column
// and on rows with w == 0. `out` may be `logits` (in-place backward): each element is read
// before it is written, and the target logit is read before its block is overwritten.
template <typename T>
void backward_rows(const acc_of<T>* grad, const T* logits, const int64_t* target,
                   const acc_of<T>* weight, const acc_of<T>* lse, int64_t n, int64_t v,
                   int64_t exclude, T* out) {
  using acc_t = acc_of<T>;
  at::parallel_for(0, n, grain_for(v), [&](int64_t begin, int64_t end) {
    alignas(64) float buf[kBlock];
    for (int64_t r = begin; r < end; ++r) {
      const acc_t w = weight ? weight[r] : acc_t(1);
      T* o = out + r * v;
      if (w == 0) {
        std::memset(static_cast<void*>(o), 0, sizeof(T) * v);
        continue;
      }
      const T* x = logits + r * v;
      const acc_t scale = grad[r] * w;
      const acc_t l = lse[r];
      const int64_t t = target[r];
      const acc_t zt = static_cast<acc_t>(x[t]);
      if constexpr (std::is_same_v<T, double>) {
        for (int64_t j = 0; j < v; ++j) o[j] = scale * std::exp(x[j] - l);
      } else {
        for (int64_t b = 0; b < v; b += kBlock) {
          const int64_t len = std::min(kBlock, v - b);
          const float* p = load_block(x + b, buf, len);
          if constexpr (std::is_same_v<T, float>) {
            block_scaled_exp(p, o + b, len, l, scale);
          } else {
            block_scaled_exp(p, buf, len, l, scale);
            store_block(buf, o + b, len);
          }
        }
      }
      o[t] = static_cast<T>(scale * (std::exp(zt - l) - acc_t(1)));
      if (exclude >= 0) o[exclude] = static_cast<T>(0);
    }
  });
}

template <typename F>
void dispatch_ce(at::ScalarType dtype, F&& f) {
  switch (dtype) {
    case at::kFloat:
      f(float{});
      break;
    case at::kBFloat16:
      f(c10::BFloat16{});
      break;
    case at::kHalf:
      f(c10::Half{});
      break;
    case at::kDouble:
      f(double{});
      break;
    default:
      TORCH_CHECK(false, "mdfast: unsupported logits dtype ", dtype);
  }
}

c10::optional<at::Tensor> weight_as(const c10::optional<at::Tensor>& weight, at::ScalarType acc) {
  if (!weight.has_value()) return c10::nullopt;
  return weight->to(acc).contiguous();
}

void check_values(const at::Tensor& target, const c10::optional<at::Tensor>& weight, int64_t v,
                  int64_t exclude) {
  const int64_t n = target.size(0);
  if (!weight.has_value()) {
    check_ce_values<float>(target.data_ptr<int64_t>(), nullptr, n, v, exclude, "weight");
  } else if (weight->scalar_type() == at::kDouble) {
    check_ce_values(target.data_ptr<int64_t>(), weight->data_ptr<double>(), n, v, exclude,
                    "weight");
  } else {
    check_ce_values(target.data_ptr<int64_t>(), weight->data_ptr<float>(), n, v, exclude, "weight");
  }
}

std::tuple<at::Tensor, at::Tensor> masked_ce_cpu(const at::Tensor& logits, const at::Tensor& target,
                                                 const c10::optional<at::Tensor>& weight,
                                                 int64_t exclude_index,
                                                 bool /*inplace_backward: autograd only*/) {
  check_masked_ce_args(logits, target, weight, exclude_index);
  const int64_t n = logits.size(0), v = logits.size(1);
  const auto acc = ce_acc_dtype(logits.scalar_type());
  const at::Tensor t = target.contiguous();
  const auto w = weight_as(weight, acc);
  check_values(t, w, v, exclude_index);
  const at::Tensor x = logits.contiguous();
  at::Tensor loss = at::empty({n}, logits.options().dtype(acc));
  at::Tensor lse = at::empty({n}, logits.options().dtype(acc));
  dispatch_ce(logits.scalar_type(), [&](auto tag) {
    using T = decltype(tag);
    using acc_t = acc_of<T>;
    forward_rows<T>(x.data_ptr<T>(), t.data_ptr<int64_t>(),
                    w.has_value() ? w->data_ptr<acc_t>() : nullptr, n, v, exclude_index,
                    loss.data_ptr<acc_t>(), lse.data_ptr<acc_t>());
  });
  return {loss, lse};
}

void backward_impl(const at::Tensor& grad_loss, const at::Tensor& logits, const at::Tensor& target,
                   const c10::optional<at::Tensor>& weight, const at::Tensor& lse,
                   int64_t exclude_index, at::Tensor& out) {
  const int64_t n = logits.size(0), v = logits.size(1);
  const auto acc = ce_acc_dtype(logits.scalar_type());
  const at::Tensor t = target.contiguous();
  const auto w = weight_as(weight, acc);
  check_values(t, w, v, exclude_index);
  const at::Tensor g = grad_loss.to(acc).contiguous();
  const at::Tensor l = lse.contiguous();
  dispatch_ce(logits.scalar_type(), [&](auto tag) {
    using T = decltype(tag);
    using acc_t = acc_of<T>;
    backward_rows<T>(g.data_ptr<acc_t>(), logits.data_ptr<T>(), t.data_ptr<int64_t>(),
                     w.has_value() ? w->data_ptr<acc_t>() : nullptr, l.data_ptr<acc_t>(), n, v,
                     exclude_index, out.data_ptr<T>());
  });
}

at::Tensor masked_ce_backward_cpu(const at::Tensor& grad_loss, const at::Tensor& logits,
                                  const at::Tensor& target, const c10::optional<at::Tensor>& weight,
                                  const at::Tensor& lse, int64_t exclude_index) {
  check_masked_ce_backward_args(grad_loss, logits, target, weight, lse, exclude_index);
  const at::Tensor x = logits.contiguous();
  at::Tensor out = at::empty(x.sizes(), x.options());
  backward_impl(grad_loss, x, target, weight, lse, exclude_index, out);
  return out;
}

void masked_ce_backward_inplace_cpu(const at::Tensor& grad_loss, at::Tensor& logits,
                                    const at::Tensor& target,
                                    const c10::optional<at::Tensor>& weight, const at::Tensor& lse,
                                    int64_t exclude_index) {
  check_masked_ce_backward_args(grad_loss, logits, target, weight, lse, exclude_index);
  TORCH_CHECK(logits.is_contiguous(),
              "mdfast: argument 'logits' must be contiguous for the in-place backward");
  backward_impl(grad_loss, logits, target, weight, lse, exclude_index, logits);
}

}  // namespace

TORCH_LIBRARY_IMPL(mdfast, CPU, m) {
  m.impl("masked_ce", &masked_ce_cpu);
  m.impl("masked_ce_backward", &masked_ce_backward_cpu);
  m.impl("masked_ce_backward_", &masked_ce_backward_inplace_cpu);
  m.impl("linear_masked_ce", &linear_masked_ce_impl);
  m.impl("linear_masked_ce_backward", &linear_masked_ce_backward_impl);
}

}  // namespace mdfast
