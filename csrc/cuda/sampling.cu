// CUDA kernels of the sampling ops: sample_x0 and mask_step. One thread block per sampled row
// (strided over the row's classes); mask_step is one fused launch in which each block takes
// positions, decides the event with thread 0 (O(1)) and, only when the position unmasks, samples
// its logits row with the whole block. The math and the random streams are those of the CPU
// kernels (csrc/include/mdfast/sampling.h), so the same (seed, offset) draws the same tokens.
// A row that cannot be sampled (NaN, nothing left to draw, an index in `rows` outside the logits)
// gets token -1. Nothing here synchronises the host: under mdfast.set_validation("full") the
// Python wrapper checks the values (alpha, sigma, x, rows) and turns a -1 into an error naming
// the row.
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>
#include <math_constants.h>
#include <torch/library.h>

#include <limits>
#include <tuple>

#include "../common/dispatch.h"
#include "../common/sampling_args.h"
#include "kernel_guard.cuh"
#include "mdfast/online_softmax.h"
#include "mdfast/sampling.h"

namespace mdfast {
namespace {

using sampling::RadixHist;
using sampling::RadixSelect;

constexpr int kThreads = 256;

struct Params {
  double tau;
  double top_p;
  int64_t top_k;
  int64_t exclude;
  bool hf;
  uint64_t seed;
  uint64_t offset;
};

template <typename T>
__device__ __forceinline__ double as_double(T v) {
  return static_cast<double>(static_cast<float>(v));
}
template <>
__device__ __forceinline__ double as_double<double>(double v) {
  return v;
}

struct Shared {
  RadixHist hist;
  RadixSelect sel;
  double red_a[kThreads];
  double red_b[kThreads];
  uint64_t red_c[kThreads];
  int64_t red_n[kThreads];
  int red_flag[kThreads];
  double lse;
  uint64_t top;
  int64_t n;
  int status;
  int go;
};

__device__ __forceinline__ double scaled(double v, double tau) { return tau == 1.0 ? v : v / tau; }

// All threads of the block call this; thread 0 writes *tok and *prob.
template <typename T>
__device__ void sample_row_block(const T* __restrict__ z, int64_t V, int64_t row, const Params& P,
                                 Shared& sh, int64_t* tok, float* prob) {
  const int tid = threadIdx.x;
  const double tau = P.tau > 0.0 ? P.tau : 1.0;
  // Pass 1: log-sum-exp, top class, NaN.
  OnlineLogSumExp<double> acc;
  uint64_t top = 0;
  int64_t n = 0;
  int nan = 0;
  for (int64_t c = tid; c < V; c += blockDim.x) {
    if (c == P.exclude) continue;
    const double f = as_double(z[c]);
    if (f != f) {
      nan = 1;
      continue;
    }
    acc.add(scaled(f, tau));
    const uint64_t comp = sampling::composite(static_cast<float>(f), c);
    if (comp > top) top = comp;
    ++n;
  }
  sh.red_a[tid] = acc.max;
  sh.red_b[tid] = acc.sum;
  sh.red_c[tid] = top;
  sh.red_n[tid] = n;
  sh.red_flag[tid] = nan;
  __syncthreads();
  for (int stride = blockDim.x / 2; stride > 0; stride >>= 1) {
    if (tid < stride) {
      OnlineLogSumExp<double> a, b;
      a.max = sh.red_a[tid];
      a.sum = sh.red_b[tid];
      b.max = sh.red_a[tid + stride];
      b.sum = sh.red_b[tid + stride];
      a.merge(b);
      sh.red_a[tid] = a.max;
      sh.red_b[tid] = a.sum;
      if (sh.red_c[tid + stride] > sh.red_c[tid]) sh.red_c[tid] = sh.red_c[tid + stride];
      sh.red_n[tid] += sh.red_n[tid + stride];
      sh.red_flag[tid] |= sh.red_flag[tid + stride];
    }
    __syncthreads();
  }
  if (tid == 0) {
    OnlineLogSumExp<double> a;
    a.max = sh.red_a[0];
    a.sum = sh.red_b[0];
    sh.lse = a.value();
    sh.top = sh.red_c[0];
    sh.n = sh.red_n[0];
    sh.status = sh.red_flag[0]
                    ? sampling::kNaN
                    : ((sh.n == 0 || !(sh.lse > -CUDART_INF)) ? sampling::kEmpty : sampling::kOk);
  }
  __syncthreads();
  if (sh.status != sampling::kOk) {
    if (tid == 0) {
      *tok = -1;
      *prob = 0.f;
    }
    __syncthreads();
    return;
  }
  const double lse = sh.lse;
  top = sh.top;
  n = sh.n;

  // Truncation threshold by radix select (no V-sized buffer).
  uint64_t threshold = 0;
  const bool use_k = P.top_k > 0 && P.top_k < n;
  const bool use_p = P.top_p < 1.0;
  for (int phase = 0; phase < 2; ++phase) {
    if (phase == 0 && !use_k) continue;
    if (phase == 1 && !use_p) continue;
    if (tid == 0) {
      sh.sel = phase == 0 ? RadixSelect::kth(static_cast<uint64_t>(P.top_k))
                          : RadixSelect::crossing(0, !P.hf);
    }
    __syncthreads();
    bool first = true;
    while (!sh.sel.done) {
      const RadixSelect sel = sh.sel;
      for (int d = tid; d < 256; d += blockDim.x) {
        sh.hist.count[d] = 0;
        sh.hist.mass[d] = 0;
        sh.hist.maxc[d] = 0;
      }
      __syncthreads();
      for (int64_t c = tid; c < V; c += blockDim.x) {
        if (c == P.exclude) continue;
        const double f = as_double(z[c]);
        const uint64_t comp = sampling::composite(static_cast<float>(f), c);
        if (comp < threshold || !sel.in_prefix(comp)) continue;
        const int d = sel.digit(comp);
        atomicAdd(&sh.hist.count[d], 1u);
        if (phase == 1) {
          atomicAdd(
              reinterpret_cast<unsigned long long*>(&sh.hist.mass[d]),
              static_cast<unsigned long long>(sampling::fixed_mass(exp(scaled(f, tau) - lse))));
        }
        atomicMax(reinterpret_cast<unsigned long long*>(&sh.hist.maxc[d]),
                  static_cast<unsigned long long>(comp));
      }
      __syncthreads();
      if (tid == 0) {
        if (phase == 1 && first) {
          uint64_t total = 0;
          for (int d = 0; d < 256; ++d) total += sh.hist.mass[d];
          sh.sel.target = static_cast<uint64_t>(P.top_p * static_cast<double>(total));
        }
        sh.sel.step(sh.hist);
      }
      first = false;
      __syncthreads();
    }
    if (phase == 0) {
      threshold = sh.sel.result;
    } else if (sh.sel.found) {
      const uint64_t r = sh.sel.result;
      const uint64_t t = (P.hf || r == top) ? r : r + 1;
      threshold = t > threshold ? t : threshold;
    }
    __syncthreads();
  }
  const bool truncated = threshold > 0;

  // Pass 2: Gumbel-max draw and the kept mass.
  double kept = 0.0;
  const int64_t top_index = sampling::composite_index(top);
  ArgmaxState best;
  if (P.tau > 0.0) {
    const double s_top = scaled(as_double(z[top_index]), tau);
    best.add(s_top + sampling::gumbel_noise(P.seed, P.offset, row, V, top_index), top_index);
  } else {
    best.add(0.0, top_index);
  }
  if (P.tau > 0.0 || truncated) {
    for (int64_t c = tid; c < V; c += blockDim.x) {
      if (c == P.exclude) continue;
      const double f = as_double(z[c]);
      if (truncated && sampling::composite(static_cast<float>(f), c) < threshold) continue;
      const double s = scaled(f, tau);
      if (truncated) kept += exp(s - lse);
      if (P.tau == 0.0 || c == top_index || s + sampling::kGumbelMax < best.score) continue;
      best.add(s + sampling::gumbel_noise(P.seed, P.offset, row, V, c), c);
    }
  }
  sh.red_a[tid] = best.score;
  sh.red_n[tid] = best.index;
  sh.red_b[tid] = kept;
  __syncthreads();
  for (int stride = blockDim.x / 2; stride > 0; stride >>= 1) {
    if (tid < stride) {
      ArgmaxState a, b;
      a.score = sh.red_a[tid];
      a.index = sh.red_n[tid];
      b.score = sh.red_a[tid + stride];
      b.index = sh.red_n[tid + stride];
      a.merge(b);
      sh.red_a[tid] = a.score;
      sh.red_n[tid] = a.index;
      sh.red_b[tid] += sh.red_b[tid + stride];
    }
    __syncthreads();
  }
  if (tid == 0) {
    const int64_t token = sh.red_n[0];
    const double p = exp(scaled(as_double(z[token]), tau) - lse);
    *tok = token;
    *prob = static_cast<float>(truncated ? p / sh.red_b[0] : p);
  }
  __syncthreads();
}

template <typename T>
__global__ void __launch_bounds__(kThreads)
    sample_x0_kernel(const T* __restrict__ logits, const int64_t* __restrict__ rows, int64_t R,
                     int64_t N, int64_t V, Params P, int64_t* __restrict__ token,
                     float* __restrict__ prob) {
  __shared__ Shared sh;
  for (int64_t r = blockIdx.x; r < R; r += gridDim.x) {
    const int64_t row = rows != nullptr ? rows[r] : r;
    if (row < 0 || row >= N) {  // the same for every thread of the block: no barrier is skipped
      if (threadIdx.x == 0) {
        token[r] = -1;
        prob[r] = 0.f;
      }
      continue;
    }
    sample_row_block(logits + row * V, V, row, P, sh, token + r, prob + r);
  }
}

template <typename T>
__global__ void __launch_bounds__(kThreads)
    mask_step_kernel(const int64_t* __restrict__ x, const T* __restrict__ logits, int64_t N,
                     int64_t L, int64_t V, const double* __restrict__ alpha_t,
                     const double* __restrict__ alpha_s, const double* __restrict__ sigma,
                     const float* __restrict__ conf_in, int64_t mask_index, Params P,
                     int64_t* __restrict__ x_next, bool* __restrict__ changed,
                     float* __restrict__ conf_out) {
  __shared__ Shared sh;
  const float neg_inf = -CUDART_INF_F;
  for (int64_t i = blockIdx.x; i < N; i += gridDim.x) {
    if (threadIdx.x == 0) {
      const int64_t xi = x[i];
      const int64_t b = i / L;
      const double sg = sigma != nullptr ? sigma[i] : 0.0;
      const double u = sampling::event_uniform(P.seed, P.offset, i);
      const float keep_conf = conf_in != nullptr ? conf_in[i] : neg_inf;
      int go = 0;
      if (xi == mask_index) {
        go = u < sampling::unmask_probability(alpha_t[b], alpha_s[b], sg);
        x_next[i] = mask_index;
        changed[i] = go;
        conf_out[i] = go ? neg_inf : keep_conf;
      } else if (u < sg) {
        x_next[i] = mask_index;
        changed[i] = true;
        conf_out[i] = neg_inf;
      } else {
        x_next[i] = xi;
        changed[i] = false;
        conf_out[i] = keep_conf;
      }
      sh.go = go && logits != nullptr;
    }
    __syncthreads();
    if (sh.go) {
      float p = 0.f;
      sample_row_block(logits + i * V, V, i, P, sh, x_next + i, &p);
      if (threadIdx.x == 0) conf_out[i] = -p;
    }
    __syncthreads();
  }
}

int grid_for(int64_t work) {
  const int64_t cap = int64_t(1) << 20;
  return static_cast<int>(work < cap ? (work > 0 ? work : 1) : cap);
}

std::tuple<at::Tensor, at::Tensor> sample_x0_cuda(const at::Tensor& logits,
                                                  const c10::optional<at::Tensor>& rows,
                                                  double temperature, double top_p, int64_t top_k,
                                                  int64_t exclude_index, c10::string_view nucleus,
                                                  int64_t seed, int64_t offset) {
  check_sample_x0_args(logits, rows, temperature, top_p, top_k, exclude_index, seed, offset);
  const bool hf = parse_nucleus(std::string(nucleus));
  const mdfast::cuda::KernelGuard guard(logits.device());
  const at::Tensor z = logits.contiguous();
  const int64_t N = z.size(0), V = z.size(1);
  at::Tensor rows_c;
  if (rows.has_value()) rows_c = rows->contiguous();
  const int64_t R = rows.has_value() ? rows_c.size(0) : N;
  at::Tensor token = at::empty({R}, z.options().dtype(at::kLong));
  at::Tensor prob = at::empty({R}, z.options().dtype(at::kFloat));
  if (R == 0) return {token, prob};
  const Params P{temperature,
                 top_p,
                 top_k,
                 exclude_index,
                 hf,
                 static_cast<uint64_t>(seed),
                 static_cast<uint64_t>(offset)};
  const auto stream = c10::cuda::getCurrentCUDAStream();
  dispatch_logits(z.scalar_type(), [&](auto tag) {
    using T = decltype(tag);
    sample_x0_kernel<T><<<grid_for(R), kThreads, 0, stream>>>(
        static_cast<const T*>(z.data_ptr()),
        rows.has_value() ? rows_c.data_ptr<int64_t>() : nullptr, R, N, V, P,
        token.data_ptr<int64_t>(), prob.data_ptr<float>());
  });
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return {token, prob};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> mask_step_cuda(
    const at::Tensor& x, const c10::optional<at::Tensor>& logits, const at::Tensor& alpha_t,
    const at::Tensor& alpha_s, const c10::optional<at::Tensor>& remask,
    const c10::optional<at::Tensor>& confidence, int64_t mask_index, double temperature,
    double top_p, int64_t top_k, c10::string_view nucleus, int64_t seed, int64_t offset) {
  check_mask_step_args(x, logits, alpha_t, alpha_s, remask, confidence, mask_index, temperature,
                       top_p, top_k, seed, offset);
  const bool hf = parse_nucleus(std::string(nucleus));
  const mdfast::cuda::KernelGuard guard(x.device());
  const int64_t B = x.size(0), L = x.size(1), N = B * L;
  const at::Tensor xc = x.contiguous();
  const at::Tensor at_c = alpha_t.contiguous(), as_c = alpha_s.contiguous();
  at::Tensor sig_c, conf_c, z;
  if (remask.has_value()) sig_c = remask->contiguous();
  if (confidence.has_value()) conf_c = confidence->contiguous();
  if (logits.has_value()) z = logits->contiguous();
  at::Tensor x_next = at::empty({B, L}, x.options());
  at::Tensor changed = at::empty({B, L}, x.options().dtype(at::kBool));
  at::Tensor conf_out = at::empty({B, L}, x.options().dtype(at::kFloat));
  if (N == 0) return {x_next, changed, conf_out};
  const Params P{temperature,
                 top_p,
                 top_k,
                 mask_index,
                 hf,
                 static_cast<uint64_t>(seed),
                 static_cast<uint64_t>(offset)};
  const auto stream = c10::cuda::getCurrentCUDAStream();
  const int64_t V = logits.has_value() ? z.size(2) : 0;
  dispatch_logits(logits.has_value() ? z.scalar_type() : at::kFloat, [&](auto tag) {
    using T = decltype(tag);
    mask_step_kernel<T><<<grid_for(N), kThreads, 0, stream>>>(
        xc.data_ptr<int64_t>(), logits.has_value() ? static_cast<const T*>(z.data_ptr()) : nullptr,
        N, L, V, at_c.data_ptr<double>(), as_c.data_ptr<double>(),
        remask.has_value() ? sig_c.data_ptr<double>() : nullptr,
        confidence.has_value() ? conf_c.data_ptr<float>() : nullptr, mask_index, P,
        x_next.data_ptr<int64_t>(), changed.data_ptr<bool>(), conf_out.data_ptr<float>());
  });
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return {x_next, changed, conf_out};
}

}  // namespace

TORCH_LIBRARY_IMPL(mdfast, CUDA, m) {
  m.impl("sample_x0", &sample_x0_cuda);
  m.impl("mask_step", &mask_step_cuda);
}

}  // namespace mdfast
