// Compiles the header-only core as device code (CMake's CUDA compile check); never launched here.
#include "mdfast/block_reduce.cuh"
#include "mdfast/digits.h"
#include "mdfast/philox.h"
#include "mdfast/sampling.h"

__global__ void mdfast_core_device_check(double* out, unsigned long long seed) {
  const unsigned long long i = blockIdx.x * blockDim.x + threadIdx.x;
  mdfast::OnlineLogSumExp<float> lse;
  lse.add(static_cast<float>(mdfast::uniform_float_at(seed, 1, i)));
  mdfast::ArgmaxState best;
  best.add(mdfast::gumbel_from_uniform(mdfast::uniform_double_at(seed, 0, 2u, i)), i);
  out[i] = mdfast::block_merge<8>(lse).value() + mdfast::block_argmax<8>(best).score +
           mdfast::uniform_double_at(seed, 0, i);
}
