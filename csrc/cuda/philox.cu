// CUDA kernels of the RNG ops. Same bits as csrc/cpu/philox.cpp: both call mdfast/philox.h.
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty_like.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include "../common/philox_args.h"
#include "kernel_guard.cuh"
#include "mdfast/philox.h"

namespace mdfast {
namespace {

constexpr int kThreads = 256;

int64_t grid_for(int64_t work) {
  const int64_t blocks = (work + kThreads - 1) / kThreads;
  return blocks < 65535 * 8 ? blocks : 65535 * 8;  // grid-stride loops cover the rest
}

__global__ void philox4x32_kernel(const int64_t* __restrict__ counter,
                                  const int64_t* __restrict__ key, int64_t* __restrict__ out,
                                  int64_t n) {
  const uint32_t k0 = static_cast<uint32_t>(key[0]);
  const uint32_t k1 = static_cast<uint32_t>(key[1]);
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t* row = counter + 4 * i;
    const PhiloxWords r =
        philox4x32_10(static_cast<uint32_t>(row[0]), static_cast<uint32_t>(row[1]),
                      static_cast<uint32_t>(row[2]), static_cast<uint32_t>(row[3]), k0, k1);
#pragma unroll
    for (int j = 0; j < 4; ++j) out[4 * i + j] = static_cast<int64_t>(r.w[j]);
  }
}

template <typename scalar_t>
__global__ void uniform_kernel(scalar_t* __restrict__ out, int64_t numel, uint64_t seed,
                               uint64_t offset) {
  const int64_t blocks = uniform_blocks<scalar_t>(numel);
  for (int64_t b = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; b < blocks;
       b += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    write_uniform_block(out, numel, seed, offset, b);
  }
}

// Row r of out [rows, n] holds elements 0..n-1 of the stream (seed, offsets[r]).
template <typename scalar_t>
__global__ void uniform_rows_kernel(scalar_t* __restrict__ out, int64_t rows, int64_t n,
                                    uint64_t seed, const int64_t* __restrict__ offsets) {
  const int64_t per_row = uniform_blocks<scalar_t>(n);
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < rows * per_row;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t r = i / per_row;
    write_uniform_block(out + r * n, n, seed, static_cast<uint64_t>(offsets[r]), i % per_row);
  }
}

at::Tensor philox4x32_cuda(const at::Tensor& counter, const at::Tensor& key) {
  check_philox4x32_args(counter, key);
  const mdfast::cuda::KernelGuard guard(counter.device());
  const at::Tensor c = counter.contiguous();
  const at::Tensor k = key.contiguous();
  at::Tensor out = at::empty_like(c);
  const int64_t n = c.size(0);
  if (n == 0) return out;
  const auto stream = c10::cuda::getCurrentCUDAStream();
  philox4x32_kernel<<<grid_for(n), kThreads, 0, stream>>>(
      c.data_ptr<int64_t>(), k.data_ptr<int64_t>(), out.data_ptr<int64_t>(), n);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return out;
}

void uniform_out_cuda(at::Tensor& out, int64_t seed, int64_t offset) {
  check_uniform_args(out, seed, offset);
  const int64_t numel = out.numel();
  if (numel == 0) return;
  const mdfast::cuda::KernelGuard guard(out.device());
  const auto stream = c10::cuda::getCurrentCUDAStream();
  const auto s = static_cast<uint64_t>(seed);
  const auto o = static_cast<uint64_t>(offset);
  if (out.scalar_type() == at::kDouble) {
    uniform_kernel<<<grid_for(uniform_blocks<double>(numel)), kThreads, 0, stream>>>(
        out.data_ptr<double>(), numel, s, o);
  } else {
    uniform_kernel<<<grid_for(uniform_blocks<float>(numel)), kThreads, 0, stream>>>(
        out.data_ptr<float>(), numel, s, o);
  }
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

void uniform_rows_out_cuda(at::Tensor& out, int64_t seed, const at::Tensor& offsets) {
  check_uniform_rows_args(out, seed, offsets);
  const int64_t rows = out.size(0);
  const int64_t n = out.size(1);
  if (rows == 0 || n == 0) return;
  const c10::cuda::CUDAGuard guard(out.device());
  const auto stream = c10::cuda::getCurrentCUDAStream();
  const at::Tensor off = offsets.contiguous();
  const auto s = static_cast<uint64_t>(seed);
  const int64_t* op = off.data_ptr<int64_t>();
  if (out.scalar_type() == at::kDouble) {
    uniform_rows_kernel<<<grid_for(rows * uniform_blocks<double>(n)), kThreads, 0, stream>>>(
        out.data_ptr<double>(), rows, n, s, op);
  } else {
    uniform_rows_kernel<<<grid_for(rows * uniform_blocks<float>(n)), kThreads, 0, stream>>>(
        out.data_ptr<float>(), rows, n, s, op);
  }
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

}  // namespace

TORCH_LIBRARY_IMPL(mdfast, CUDA, m) {
  m.impl("philox4x32", &philox4x32_cuda);
  m.impl("uniform_out", &uniform_out_cuda);
  m.impl("uniform_rows_out", &uniform_rows_out_cuda);
}

}  // namespace mdfast
