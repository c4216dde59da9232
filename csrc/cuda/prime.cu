// CUDA kernels of the MDM-Prime ops: prime_ce, prime_ce_backward, prime_sample_step. One thread
// block per row strides over the row's consistent set V by flat index (DigitWalk::class_at), so a
// row reads |V| logits; rows with nothing to do never read theirs. Same math and the same Philox
// streams as csrc/cpu/prime.cpp, so CPU and CUDA give the same tokens for one (seed, offset).
// Nothing here synchronises the host: each block validates its own row (digits.h validate_token)
// and a bad row gets a NaN loss, a zero gradient or -1 digits; under mdfast.set_validation("full")
// the Python wrapper checks the rows first and raises naming the first bad one.
#include <ATen/Dispatch.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/empty_like.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include <cstdint>
#include <limits>
#include <tuple>

#include "../common/prime_args.h"
#include "kernel_guard.cuh"
#include "mdfast/block_reduce.cuh"
#include "mdfast/digits.h"
#include "mdfast/gumbel.h"
#include "mdfast/online_softmax.h"
#include "mdfast/philox.h"
#include "mdfast/sampling.h"

namespace mdfast {
namespace {

constexpr int kThreads = 128;
constexpr int kWarps = kThreads / 32;
constexpr int64_t kMaxSharedHist = 40 * 1024;  // + ~0.3 KiB static < the 48 KiB default

template <typename T>
struct AccType {
  using type = float;
};
template <>
struct AccType<double> {
  using type = double;
};

__device__ __forceinline__ void load_digits(const int64_t* d, int ell, int64_t* out) {
  for (int j = 0; j < ell; ++j) out[j] = d[j];
}

// ------------------------------------------------------------------------------ prime_ce

template <typename scalar_t, typename acc_t>
__global__ void __launch_bounds__(kThreads)
    prime_ce_fwd_kernel(const scalar_t* __restrict__ logits, const int64_t* __restrict__ target,
                        const int64_t* __restrict__ digits, const double* __restrict__ weight,
                        int64_t C, int ell, int64_t base, int mode, acc_t* __restrict__ loss,
                        acc_t* __restrict__ lse) {
  const int64_t n = blockIdx.x;
  int64_t d[kMaxDigits];
  load_digits(digits + n * ell, ell, d);
  acc_t* lse_row = lse + n * (ell + 1);
  if (validate_token(d, base, ell, C, true, target[n]) != kDigitsOk) {
    for (int j = threadIdx.x; j <= ell; j += blockDim.x) {
      lse_row[j] = std::numeric_limits<acc_t>::quiet_NaN();
    }
    if (threadIdx.x == 0) loss[n] = std::numeric_limits<acc_t>::quiet_NaN();
    return;
  }
  const double w = weight ? weight[n] : 1.0;
  const DigitWalk walk(d, base, ell, C);
  if (walk.masked == 0 || w == 0.0) {
    for (int j = threadIdx.x; j <= ell; j += blockDim.x) lse_row[j] = 0;
    if (threadIdx.x == 0) loss[n] = 0;
    return;
  }
  const scalar_t* z = logits + n * C;
  const int64_t t = target[n];
  int64_t tv[kMaxDigits];
  for (int k = 0; k < walk.masked; ++k) tv[k] = digit_of(t, base, ell, walk.pos[k]);
  const int slots = mode == 1 ? walk.masked : 0;
  OnlineLogSumExp<acc_t> acc[kMaxDigits + 1];
  const int64_t span = walk.span(C * base);
  int64_t vals[kMaxDigits];
  for (int64_t i = threadIdx.x; i < span; i += blockDim.x) {
    const int64_t c = walk.class_at(i, vals);
    if (c >= C) continue;
    const acc_t zc = static_cast<acc_t>(z[c]);
    acc[0].add(zc);
    for (int k = 0; k < slots; ++k) {
      if (vals[k] == tv[k]) acc[1 + k].add(zc);
    }
  }
  const acc_t lse_v = block_merge<kWarps>(acc[0]).value();
  acc_t raw = 0;
  if (mode == 0) {
    raw = lse_v - static_cast<acc_t>(z[t]);
    for (int j = threadIdx.x; j <= ell; j += blockDim.x) lse_row[j] = lse_v;
  } else {
    for (int j = threadIdx.x; j <= ell; j += blockDim.x) lse_row[j] = lse_v;
    __syncthreads();
    for (int k = 0; k < slots; ++k) {
      const acc_t lj = block_merge<kWarps>(acc[1 + k]).value();
      raw += lse_v - lj;
      if (threadIdx.x == 0) lse_row[1 + walk.pos[k]] = lj;
    }
  }
  if (threadIdx.x == 0) loss[n] = static_cast<acc_t>(w) * raw;
}

template <typename scalar_t, typename acc_t>
__global__ void __launch_bounds__(kThreads)
    prime_ce_bwd_kernel(const acc_t* __restrict__ grad, const scalar_t* __restrict__ logits,
                        const int64_t* __restrict__ target, const int64_t* __restrict__ digits,
                        const acc_t* __restrict__ lse, const double* __restrict__ weight, int64_t C,
                        int ell, int64_t base, int mode, scalar_t* __restrict__ out) {
  const int64_t n = blockIdx.x;
  scalar_t* o = out + n * C;
  for (int64_t c = threadIdx.x; c < C; c += blockDim.x) o[c] = scalar_t(0);
  int64_t d[kMaxDigits];
  load_digits(digits + n * ell, ell, d);
  if (validate_token(d, base, ell, C, true, target[n]) != kDigitsOk) return;  // gradient 0
  const double w = weight ? weight[n] : 1.0;
  const DigitWalk walk(d, base, ell, C);
  if (walk.masked == 0 || w == 0.0) return;
  __syncthreads();  // the zeros above land before the values below
  const acc_t g = grad[n] * static_cast<acc_t>(w);
  const scalar_t* z = logits + n * C;
  const acc_t* lse_row = lse + n * (ell + 1);
  const acc_t lse_v = lse_row[0];
  const int64_t t = target[n];
  int64_t tv[kMaxDigits];
  acc_t lj[kMaxDigits];
  for (int k = 0; k < walk.masked; ++k) {
    tv[k] = digit_of(t, base, ell, walk.pos[k]);
    lj[k] = lse_row[1 + walk.pos[k]];
  }
  const acc_t m = static_cast<acc_t>(walk.masked);
  const int64_t span = walk.span(C * base);
  int64_t vals[kMaxDigits];
  for (int64_t i = threadIdx.x; i < span; i += blockDim.x) {
    const int64_t c = walk.class_at(i, vals);
    if (c >= C) continue;
    const acc_t zc = static_cast<acc_t>(z[c]);
    acc_t v;
    if (mode == 0) {
      v = exp(zc - lse_v) - (c == t ? acc_t(1) : acc_t(0));
    } else {
      v = m * exp(zc - lse_v);
      for (int k = 0; k < walk.masked; ++k) {
        if (vals[k] == tv[k]) v -= exp(zc - lj[k]);
      }
    }
    o[c] = static_cast<scalar_t>(g * v);
  }
}

std::tuple<at::Tensor, at::Tensor> prime_ce_cuda(const at::Tensor& logits, const at::Tensor& target,
                                                 const at::Tensor& digits, int64_t base,
                                                 c10::string_view mode,
                                                 const c10::optional<at::Tensor>& weight) {
  const PrimeShape shape = check_prime_common(logits, digits, base);
  check_prime_target(target, logits);
  check_prime_weight(weight, logits);
  const int m = parse_prime_ce_mode(mode);
  const mdfast::cuda::KernelGuard guard(logits.device());
  const at::Tensor z = logits.contiguous();
  const at::Tensor t = target.contiguous();
  const at::Tensor d = digits.contiguous();
  at::Tensor w;
  if (weight.has_value()) w = weight->to(at::kDouble).contiguous();
  const auto out_type = logits.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
  at::Tensor loss = at::empty({shape.rows}, logits.options().dtype(out_type));
  at::Tensor lse = at::empty({shape.rows, shape.ell + 1}, logits.options().dtype(out_type));
  if (shape.rows == 0) return {loss, lse};
  const auto stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, z.scalar_type(), "prime_ce_cuda", [&] {
    using acc_t = typename AccType<scalar_t>::type;
    prime_ce_fwd_kernel<scalar_t, acc_t><<<shape.rows, kThreads, 0, stream>>>(
        z.const_data_ptr<scalar_t>(), t.const_data_ptr<int64_t>(), d.const_data_ptr<int64_t>(),
        w.defined() ? w.const_data_ptr<double>() : nullptr, shape.classes, shape.ell, base, m,
        loss.data_ptr<acc_t>(), lse.data_ptr<acc_t>());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return {loss, lse};
}

at::Tensor prime_ce_backward_cuda(const at::Tensor& grad, const at::Tensor& logits,
                                  const at::Tensor& target, const at::Tensor& digits,
                                  const at::Tensor& lse, int64_t base, c10::string_view mode,
                                  const c10::optional<at::Tensor>& weight) {
  const PrimeShape shape = check_prime_common(logits, digits, base);
  check_prime_target(target, logits);
  check_prime_weight(weight, logits);
  const int m = parse_prime_ce_mode(mode);
  TORCH_CHECK(grad.dim() == 1 && grad.size(0) == shape.rows,
              "mdfast: argument 'grad' must have shape [", shape.rows, "], got ", grad.sizes());
  TORCH_CHECK(lse.dim() == 2 && lse.size(0) == shape.rows && lse.size(1) == shape.ell + 1,
              "mdfast: argument 'lse' must have shape [", shape.rows, ", ", shape.ell + 1,
              "], got ", lse.sizes());
  const mdfast::cuda::KernelGuard guard(logits.device());
  const auto acc_type = logits.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
  const at::Tensor g = grad.to(acc_type).contiguous();
  const at::Tensor s = lse.to(acc_type).contiguous();
  const at::Tensor z = logits.contiguous();
  const at::Tensor t = target.contiguous();
  const at::Tensor d = digits.contiguous();
  at::Tensor w;
  if (weight.has_value()) w = weight->to(at::kDouble).contiguous();
  at::Tensor out = at::empty_like(z);
  if (shape.rows == 0) return out;
  const auto stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, z.scalar_type(), "prime_ce_bwd", [&] {
    using acc_t = typename AccType<scalar_t>::type;
    prime_ce_bwd_kernel<scalar_t, acc_t><<<shape.rows, kThreads, 0, stream>>>(
        g.const_data_ptr<acc_t>(), z.const_data_ptr<scalar_t>(), t.const_data_ptr<int64_t>(),
        d.const_data_ptr<int64_t>(), s.const_data_ptr<acc_t>(),
        w.defined() ? w.const_data_ptr<double>() : nullptr, shape.classes, shape.ell, base, m,
        out.data_ptr<scalar_t>());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return out;
}

// ------------------------------------------------------------------------------ prime_sample_step

template <typename scalar_t>
__device__ int64_t joint_draw(const scalar_t* z, const DigitWalk& walk, int64_t n, int64_t C,
                              double temperature, uint64_t seed, uint64_t offset) {
  ArgmaxState best;
  const int64_t span = walk.span(C * walk.base);
  for (int64_t i = threadIdx.x; i < span; i += blockDim.x) {
    const int64_t c = walk.class_at(i, nullptr);
    if (c >= C) continue;
    const uint64_t idx = static_cast<uint64_t>(n * C + c);
    best.add(static_cast<double>(z[c]) / temperature +
                 gumbel_from_uniform(uniform_double_at(seed, offset, 1u, idx)),
             c);
  }
  return block_argmax<kWarps>(best).index;
}

template <typename scalar_t>
__global__ void __launch_bounds__(kThreads)
    prime_sample_kernel(const scalar_t* __restrict__ logits, const int64_t* __restrict__ digits,
                        int64_t C, int ell, int64_t base, double p_unmask, double temperature,
                        int mode, uint32_t fixed_bits, const int64_t* __restrict__ fixed_list,
                        int64_t n_fixed, uint64_t seed, uint64_t offset,
                        int64_t* __restrict__ out) {
  extern __shared__ double hist[];  // [masked * base], marginal mode only
  __shared__ uint32_t reveal_bits;
  __shared__ int64_t new_digits[kMaxDigits];
  const int64_t n = blockIdx.x;
  int64_t d[kMaxDigits];
  load_digits(digits + n * ell, ell, d);
  int64_t* o = out + n * ell;
  if (validate_token(d, base, ell, C, false, -1) != kDigitsOk) {  // every thread: same answer
    if (threadIdx.x < ell) o[threadIdx.x] = -1;
    return;
  }
  uint32_t fixed = fixed_bits;  // positions outside [0, ell) are ignored here
  for (int64_t i = 0; i < n_fixed; ++i) {
    if (fixed_list[i] >= 0 && fixed_list[i] < ell) fixed |= 1u << fixed_list[i];
  }
  if (threadIdx.x == 0) reveal_bits = 0;
  __syncthreads();
  if (threadIdx.x < ell) {
    const int j = threadIdx.x;
    new_digits[j] = d[j];
    if (d[j] == base && !((fixed >> j) & 1u) &&
        uniform_double_at(seed, offset, 0u, static_cast<uint64_t>(n * ell + j)) < p_unmask) {
      atomicOr(&reveal_bits, 1u << j);
    }
  }
  __syncthreads();
  const uint32_t reveal = reveal_bits;
  if (reveal == 0) {
    if (threadIdx.x < ell) o[threadIdx.x] = d[threadIdx.x];
    return;
  }
  const scalar_t* z = logits + n * C;
  const DigitWalk walk(d, base, ell, C);
  bool need_joint = mode == 0 || __popc(reveal) == 1;
  if (!need_joint) {
    const int64_t span = walk.span(C * base);
    int64_t vals[kMaxDigits];
    OnlineLogSumExp<double> part;
    for (int64_t i = threadIdx.x; i < span; i += blockDim.x) {
      const int64_t c = walk.class_at(i, nullptr);
      if (c < C) part.add(static_cast<double>(z[c]) / temperature);
    }
    const double lv = block_merge<kWarps>(part).value();
    for (int64_t i = threadIdx.x; i < walk.masked * base; i += blockDim.x) hist[i] = 0.0;
    __syncthreads();
    for (int64_t i = threadIdx.x; i < span; i += blockDim.x) {
      const int64_t c = walk.class_at(i, vals);
      if (c >= C) continue;
      const double p = exp(static_cast<double>(z[c]) / temperature - lv);
      for (int k = 0; k < walk.masked; ++k) {
        if ((reveal >> walk.pos[k]) & 1u) atomicAdd(&hist[k * base + vals[k]], p);
      }
    }
    __syncthreads();
    for (int k = 0; k < walk.masked; ++k) {
      const int j = walk.pos[k];
      if (!((reveal >> j) & 1u)) continue;
      ArgmaxState best;
      for (int64_t v = threadIdx.x; v < base; v += blockDim.x) {
        const double q = hist[k * base + v];
        if (!(q > 0.0)) continue;
        const uint64_t idx = static_cast<uint64_t>((n * ell + j) * base + v);
        best.add(log(q) + gumbel_from_uniform(uniform_double_at(seed, offset, 2u, idx)), v);
      }
      const ArgmaxState r = block_argmax<kWarps>(best);
      if (threadIdx.x == 0) new_digits[j] = r.index;
    }
    __syncthreads();
    int64_t assembled[kMaxDigits];
    for (int j = 0; j < ell; ++j) assembled[j] = new_digits[j];
    need_joint = decode_digits(assembled, base, ell) >= C;
  }
  if (need_joint) {
    const int64_t c_hat = joint_draw(z, walk, n, C, temperature, seed, offset);
    if (threadIdx.x < ell && ((reveal >> threadIdx.x) & 1u)) {
      new_digits[threadIdx.x] = digit_of(c_hat, base, ell, threadIdx.x);
    }
  }
  __syncthreads();
  if (threadIdx.x < ell) o[threadIdx.x] = new_digits[threadIdx.x];
}

at::Tensor prime_sample_step_cuda(const at::Tensor& logits, const at::Tensor& digits, int64_t base,
                                  double alpha_t, double alpha_s, double temperature,
                                  c10::string_view mode,
                                  const c10::optional<at::Tensor>& fixed_digits, int64_t seed,
                                  int64_t offset) {
  const PrimeShape shape = check_prime_common(logits, digits, base);
  check_prime_sample_scalars(alpha_t, alpha_s, temperature, seed, offset);
  const int m = parse_prime_sample_mode(mode);
  // fixed digit positions: read on the host when they live there, else by the kernel (no sync)
  uint32_t fixed_bits = 0;
  at::Tensor fixed_list;
  if (fixed_digits.has_value()) {
    check_prime_fixed_digits(*fixed_digits);
    if (fixed_digits->is_cpu()) {
      fixed_bits = prime_fixed_bits(*fixed_digits, shape.ell);
    } else {
      check::same_device(*fixed_digits, "fixed_digits", logits, "logits");
      fixed_list = fixed_digits->contiguous();
    }
  }
  const mdfast::cuda::KernelGuard guard(logits.device());
  const at::Tensor z = logits.contiguous();
  const at::Tensor d = digits.contiguous();
  at::Tensor out = at::empty_like(d);
  if (shape.rows == 0) return out;
  const int64_t hist_bytes = m == 1 ? shape.ell * base * static_cast<int64_t>(sizeof(double)) : 0;
  TORCH_CHECK(shape.ell == 1 || hist_bytes <= kMaxSharedHist,
              "mdfast: prime_sample_step mode='marginal' on CUDA needs ell * base <= ",
              kMaxSharedHist / 8, ", got ", shape.ell, " * ", base);
  const int64_t smem = shape.ell == 1 ? 0 : hist_bytes;  // ell = 1 reveals one digit: joint draw
  const double p = sampling::unmask_probability(alpha_t, alpha_s, /*sigma=*/0.0);
  const auto stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, z.scalar_type(), "prime_sample", [&] {
    prime_sample_kernel<scalar_t><<<shape.rows, kThreads, smem, stream>>>(
        z.const_data_ptr<scalar_t>(), d.const_data_ptr<int64_t>(), shape.classes, shape.ell, base,
        p, temperature, m, fixed_bits,
        fixed_list.defined() ? fixed_list.const_data_ptr<int64_t>() : nullptr,
        fixed_list.defined() ? fixed_list.numel() : 0, static_cast<uint64_t>(seed),
        static_cast<uint64_t>(offset), out.data_ptr<int64_t>());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return out;
}

}  // namespace

TORCH_LIBRARY_IMPL(mdfast, CUDA, m) {
  m.impl("prime_ce", &prime_ce_cuda);
  m.impl("prime_ce_backward", &prime_ce_backward_cuda);
  m.impl("prime_sample_step", &prime_sample_step_cuda);
}

}  // namespace mdfast
