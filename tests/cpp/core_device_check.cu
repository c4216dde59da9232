// Compiles the header-only core as device code (CMake's CUDA compile check); never launched here.
#include "mdfast/philox.h"

__global__ void mdfast_core_device_check(double* out, unsigned long long seed) {
  const unsigned long long i = blockIdx.x * blockDim.x + threadIdx.x;
  out[i] = mdfast::uniform_double_at(seed, 0, i) + mdfast::uniform_float_at(seed, 1, i);
}
