// CUDA kernels of the masked cross-entropy ops (same semantics as csrc/cpu/masked_ce.cpp).
//
// One thread block per row (grid-stride over rows). Each thread streams its share of the row
// with 16-byte vector loads (4 fp32 / 8 bf16 or fp16 / 2 fp64) and keeps an online
// (max, sum exp) pair, rescaling once per vector; the pairs merge across the block with warp
// shuffles (mdfast/online_softmax.h). The backward is one fused pass per row: read z, write
// g w (exp(z - lse) - [j == target]) (0 at the excluded column), optionally into the logits
// buffer itself. Rows with weight 0 are never read. All element offsets are int64, so
// N * V > 2^31 works. Rows whose start is not 16-byte aligned (V not a multiple of the vector
// width) get a scalar head and tail around the vector body.
//
// No host synchronisation: a row whose target or weight is invalid (the checks the CPU kernel
// raises on, which the Python wrapper makes on GPU tensors only under mdfast.set_validation
// ("full")) is never read; its loss and lse are NaN and its gradient row is 0.
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>
#include <torch/library.h>

#include <cstdint>
#include <limits>
#include <type_traits>

#include "../common/dispatch.h"
#include "../common/linear_masked_ce.h"
#include "../common/masked_ce_args.h"
#include "kernel_guard.cuh"
#include "mdfast/block_reduce.cuh"
#include "mdfast/online_softmax.h"

namespace mdfast {
namespace {

constexpr int kThreads = 256;
constexpr int kWarps = kThreads / 32;

template <typename T>
using acc_of = std::conditional_t<std::is_same_v<T, double>, double, float>;

template <typename T>
struct alignas(16) Vec {
  static constexpr int kSize = 16 / sizeof(T);
  T v[kSize];
};

__device__ __forceinline__ float exp_acc(float x) { return __expf(x); }
__device__ __forceinline__ double exp_acc(double x) { return exp(x); }

int64_t grid_for_rows(int64_t n) { return n < 65535 * 16 ? n : 65535 * 16; }

// A row is computed only when its weight is non-negative and its target a class of the softmax.
template <typename acc_t>
__device__ __forceinline__ bool valid_row(acc_t w, int64_t t, int64_t v, int64_t exclude) {
  return !(w < acc_t(0)) && t >= 0 && t < v && t != exclude;
}

// Adds the vector's elements to the running state: one rescale per vector, one exp per element.
template <typename T, typename acc_t>
__device__ __forceinline__ void add_vec(OnlineLogSumExp<acc_t>& st, const Vec<T>& vec, int64_t col0,
                                        int64_t exclude) {
  constexpr acc_t kNegInf = -std::numeric_limits<acc_t>::infinity();
  acc_t x[Vec<T>::kSize];
  acc_t m = kNegInf;
  bool nan = false;
#pragma unroll
  for (int k = 0; k < Vec<T>::kSize; ++k) {
    x[k] = col0 + k == exclude ? kNegInf : static_cast<acc_t>(vec.v[k]);
    m = x[k] > m ? x[k] : m;
    nan |= x[k] != x[k];
  }
  if (nan) {
    st.sum = std::numeric_limits<acc_t>::quiet_NaN();
    return;
  }
  if (m == kNegInf) return;
  if (m > st.max) {
    st.sum *= exp_acc(st.max - m);
    st.max = m;
  }
  acc_t s = 0;
#pragma unroll
  for (int k = 0; k < Vec<T>::kSize; ++k) s += exp_acc(x[k] - st.max);
  st.sum += s;
}

template <typename T, typename acc_t>
__global__ void masked_ce_forward_kernel(const T* __restrict__ logits,
                                         const int64_t* __restrict__ target,
                                         const acc_t* __restrict__ weight, int64_t n, int64_t v,
                                         int64_t exclude, acc_t* __restrict__ loss,
                                         acc_t* __restrict__ lse) {
  constexpr int W = Vec<T>::kSize;
  for (int64_t r = blockIdx.x; r < n; r += gridDim.x) {
    const acc_t w = weight ? weight[r] : acc_t(1);
    if (w == acc_t(0)) {  // never read
      if (threadIdx.x == 0) {
        loss[r] = 0;
        lse[r] = 0;
      }
      continue;
    }
    const int64_t t = target[r];
    if (!valid_row(w, t, v, exclude)) {
      if (threadIdx.x == 0) {
        loss[r] = std::numeric_limits<acc_t>::quiet_NaN();
        lse[r] = std::numeric_limits<acc_t>::quiet_NaN();
      }
      continue;
    }
    const T* x = logits + r * v;
    const int64_t misalign = (reinterpret_cast<uintptr_t>(x) % 16) / sizeof(T);
    int64_t head = misalign == 0 ? 0 : W - misalign;
    head = head < v ? head : v;
    const int64_t nvec = (v - head) / W;
    const int64_t tail0 = head + nvec * W;
    OnlineLogSumExp<acc_t> st;
    for (int64_t j = threadIdx.x; j < head; j += blockDim.x)
      if (j != exclude) st.add(static_cast<acc_t>(x[j]));
    const Vec<T>* xv = reinterpret_cast<const Vec<T>*>(x + head);
    for (int64_t i = threadIdx.x; i < nvec; i += blockDim.x)
      add_vec<T, acc_t>(st, xv[i], head + i * W, exclude);
    for (int64_t j = tail0 + threadIdx.x; j < v; j += blockDim.x)
      if (j != exclude) st.add(static_cast<acc_t>(x[j]));
    const OnlineLogSumExp<acc_t> total = block_merge<kWarps>(st);
    if (threadIdx.x == 0) {
      // a +inf logit makes the row NaN (as on CPU), not +inf
      const acc_t l = total.max == std::numeric_limits<acc_t>::infinity()
                          ? std::numeric_limits<acc_t>::quiet_NaN()
                          : total.value();
      lse[r] = l;
      loss[r] = w * (l - static_cast<acc_t>(x[t]));
    }
  }
}

template <typename T, typename acc_t>
__device__ __forceinline__ T grad_elem(T z, int64_t j, int64_t t, int64_t exclude, acc_t l,
                                       acc_t scale) {
  if (j == exclude) return static_cast<T>(0);
  const acc_t p = exp_acc(static_cast<acc_t>(z) - l);
  return static_cast<T>(scale * (j == t ? p - acc_t(1) : p));
}

template <typename T, typename acc_t>
__global__ void masked_ce_backward_kernel(const acc_t* __restrict__ grad, const T* logits,
                                          const int64_t* __restrict__ target,
                                          const acc_t* __restrict__ weight,
                                          const acc_t* __restrict__ lse, int64_t n, int64_t v,
                                          int64_t exclude, T* out) {
  // logits and out may be the same buffer (in-place backward): every element is read and then
  // written by the same thread, so no __restrict__ on them.
  constexpr int W = Vec<T>::kSize;
  for (int64_t r = blockIdx.x; r < n; r += gridDim.x) {
    T* o = out + r * v;
    const acc_t w = weight ? weight[r] : acc_t(1);
    const int64_t t = target[r];
    const bool skip = w == acc_t(0) || !valid_row(w, t, v, exclude);
    const T* x = logits + r * v;
    const uintptr_t xa = reinterpret_cast<uintptr_t>(x) % 16;
    const uintptr_t oa = reinterpret_cast<uintptr_t>(o) % 16;
    const int64_t misalign = xa / sizeof(T);
    int64_t head = misalign == 0 ? 0 : W - misalign;
    head = head < v ? head : v;
    const int64_t nvec = xa == oa ? (v - head) / W : 0;  // different alignments: scalar row
    if (xa != oa) head = 0;
    const int64_t tail0 = head + nvec * W;
    const acc_t scale = skip ? acc_t(0) : grad[r] * w;
    const acc_t l = skip ? acc_t(0) : lse[r];
    if (skip) {
      Vec<T> zero;
#pragma unroll
      for (int k = 0; k < W; ++k) zero.v[k] = static_cast<T>(0);
      for (int64_t j = threadIdx.x; j < head; j += blockDim.x) o[j] = static_cast<T>(0);
      Vec<T>* ov = reinterpret_cast<Vec<T>*>(o + head);
      for (int64_t i = threadIdx.x; i < nvec; i += blockDim.x) ov[i] = zero;
      for (int64_t j = tail0 + threadIdx.x; j < v; j += blockDim.x) o[j] = static_cast<T>(0);
      continue;
    }
    for (int64_t j = threadIdx.x; j < head; j += blockDim.x)
      o[j] = grad_elem<T, acc_t>(x[j], j, t, exclude, l, scale);
    const Vec<T>* xv = reinterpret_cast<const Vec<T>*>(x + head);
    Vec<T>* ov = reinterpret_cast<Vec<T>*>(o + head);
    for (int64_t i = threadIdx.x; i < nvec; i += blockDim.x) {
      const Vec<T> in = xv[i];
      Vec<T> res;
      const int64_t col0 = head + i * W;
#pragma unroll
      for (int k = 0; k < W; ++k)
        res.v[k] = grad_elem<T, acc_t>(in.v[k], col0 + k, t, exclude, l, scale);
      ov[i] = res;
    }
    for (int64_t j = tail0 + threadIdx.x; j < v; j += blockDim.x)
      o[j] = grad_elem<T, acc_t>(x[j], j, t, exclude, l, scale);
  }
}

std::tuple<at::Tensor, at::Tensor> masked_ce_cuda(const at::Tensor& logits,
                                                  const at::Tensor& target,
                                                  const c10::optional<at::Tensor>& weight,
                                                  int64_t exclude_index,
                                                  bool /*inplace_backward: autograd only*/) {
  check_masked_ce_args(logits, target, weight, exclude_index);
  const mdfast::cuda::KernelGuard guard(logits.device());
  const int64_t n = logits.size(0), v = logits.size(1);
  const auto acc = ce_acc_dtype(logits.scalar_type());
  at::Tensor loss = at::empty({n}, logits.options().dtype(acc));
  at::Tensor lse = at::empty({n}, logits.options().dtype(acc));
  if (n == 0) return {loss, lse};
  const at::Tensor x = logits.contiguous();
  const at::Tensor t = target.contiguous();
  const c10::optional<at::Tensor> w =
      weight.has_value() ? c10::optional<at::Tensor>(weight->to(acc).contiguous()) : c10::nullopt;
  const auto stream = c10::cuda::getCurrentCUDAStream();
  dispatch_logits(logits.scalar_type(), [&](auto tag) {
    using T = decltype(tag);
    using acc_t = acc_of<T>;
    masked_ce_forward_kernel<T, acc_t><<<grid_for_rows(n), kThreads, 0, stream>>>(
        x.data_ptr<T>(), t.data_ptr<int64_t>(), w.has_value() ? w->data_ptr<acc_t>() : nullptr, n,
        v, exclude_index, loss.data_ptr<acc_t>(), lse.data_ptr<acc_t>());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return {loss, lse};
}

void backward_launch(const at::Tensor& grad_loss, const at::Tensor& logits,
                     const at::Tensor& target, const c10::optional<at::Tensor>& weight,
                     const at::Tensor& lse, int64_t exclude_index, at::Tensor& out) {
  const int64_t n = logits.size(0), v = logits.size(1);
  if (n == 0) return;
  const auto acc = ce_acc_dtype(logits.scalar_type());
  const at::Tensor t = target.contiguous();
  const c10::optional<at::Tensor> w =
      weight.has_value() ? c10::optional<at::Tensor>(weight->to(acc).contiguous()) : c10::nullopt;
  const at::Tensor g = grad_loss.to(acc).contiguous();
  const at::Tensor l = lse.contiguous();
  const auto stream = c10::cuda::getCurrentCUDAStream();
  dispatch_logits(logits.scalar_type(), [&](auto tag) {
    using T = decltype(tag);
    using acc_t = acc_of<T>;
    masked_ce_backward_kernel<T, acc_t><<<grid_for_rows(n), kThreads, 0, stream>>>(
        g.data_ptr<acc_t>(), logits.data_ptr<T>(), t.data_ptr<int64_t>(),
        w.has_value() ? w->data_ptr<acc_t>() : nullptr, l.data_ptr<acc_t>(), n, v, exclude_index,
        out.data_ptr<T>());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
}

at::Tensor masked_ce_backward_cuda(const at::Tensor& grad_loss, const at::Tensor& logits,
                                   const at::Tensor& target,
                                   const c10::optional<at::Tensor>& weight, const at::Tensor& lse,
                                   int64_t exclude_index) {
  check_masked_ce_backward_args(grad_loss, logits, target, weight, lse, exclude_index);
  const mdfast::cuda::KernelGuard guard(logits.device());
  const at::Tensor x = logits.contiguous();
  at::Tensor out = at::empty(x.sizes(), x.options());
  backward_launch(grad_loss, x, target, weight, lse, exclude_index, out);
  return out;
}

void masked_ce_backward_inplace_cuda(const at::Tensor& grad_loss, at::Tensor& logits,
                                     const at::Tensor& target,
                                     const c10::optional<at::Tensor>& weight, const at::Tensor& lse,
                                     int64_t exclude_index) {
  check_masked_ce_backward_args(grad_loss, logits, target, weight, lse, exclude_index);
  TORCH_CHECK(logits.is_contiguous(),
              "mdfast: argument 'logits' must be contiguous for the in-place backward");
  const mdfast::cuda::KernelGuard guard(logits.device());
  backward_launch(grad_loss, logits, target, weight, lse, exclude_index, logits);
}

}  // namespace

TORCH_LIBRARY_IMPL(mdfast, CUDA, m) {
  m.impl("masked_ce", &masked_ce_cuda);
  m.impl("masked_ce_backward", &masked_ce_backward_cuda);
  m.impl("masked_ce_backward_", &masked_ce_backward_inplace_cuda);
  m.impl("linear_masked_ce", &linear_masked_ce_impl);
  m.impl("linear_masked_ce_backward", &linear_masked_ce_backward_impl);
}

}  // namespace mdfast
