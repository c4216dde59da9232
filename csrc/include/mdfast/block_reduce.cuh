// Block-wide merges of the per-thread reduction states (device only). Each thread holds an
// OnlineLogSumExp or an ArgmaxState; warps merge by shuffles, then warp leaders through shared
// memory. The result is valid in every thread, and the trailing barrier lets the caller reuse the
// shared slots for the next row. kWarps = blockDim.x / 32 must hold at the call.
#pragma once

#include "mdfast/gumbel.h"
#include "mdfast/online_softmax.h"

namespace mdfast {

template <typename acc_t>
__device__ __forceinline__ OnlineLogSumExp<acc_t> warp_merge(OnlineLogSumExp<acc_t> s) {
#pragma unroll
  for (int off = 16; off > 0; off >>= 1) {
    OnlineLogSumExp<acc_t> o;
    o.max = __shfl_xor_sync(0xffffffffu, s.max, off);
    o.sum = __shfl_xor_sync(0xffffffffu, s.sum, off);
    s.merge(o);
  }
  return s;
}

template <int kWarps, typename acc_t>
__device__ OnlineLogSumExp<acc_t> block_merge(OnlineLogSumExp<acc_t> s) {
  __shared__ acc_t smax[kWarps], ssum[kWarps];
  s = warp_merge(s);
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  if (lane == 0) {
    smax[warp] = s.max;
    ssum[warp] = s.sum;
  }
  __syncthreads();
  OnlineLogSumExp<acc_t> r;
  for (int w = 0; w < kWarps; ++w) {
    OnlineLogSumExp<acc_t> o;
    o.max = smax[w];
    o.sum = ssum[w];
    r.merge(o);
  }
  __syncthreads();
  return r;
}

template <int kWarps>
__device__ ArgmaxState block_argmax(ArgmaxState s) {
  __shared__ double sscore[kWarps];
  __shared__ long long sindex[kWarps];
#pragma unroll
  for (int off = 16; off > 0; off >>= 1) {
    ArgmaxState o;
    o.score = __shfl_xor_sync(0xffffffffu, s.score, off);
    o.index = __shfl_xor_sync(0xffffffffu, static_cast<long long>(s.index), off);
    s.merge(o);
  }
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  if (lane == 0) {
    sscore[warp] = s.score;
    sindex[warp] = s.index;
  }
  __syncthreads();
  ArgmaxState r;
  for (int w = 0; w < kWarps; ++w) {
    ArgmaxState o;
    o.score = sscore[w];
    o.index = sindex[w];
    r.merge(o);
  }
  __syncthreads();
  return r;
}

}  // namespace mdfast
