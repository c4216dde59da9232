// The device guard of every CUDA op: sets the current device like c10::cuda::CUDAGuard and first
// makes sure this build has a kernel image that device can run (checked once per device).
#pragma once

#include <c10/core/Device.h>
#include <c10/cuda/CUDAGuard.h>

#include "kernel_image.h"

namespace mdfast::cuda {

class KernelGuard {
 public:
  explicit KernelGuard(c10::Device device) : guard_(device) {
    require_kernel_image(device.index());
  }

 private:
  c10::cuda::CUDAGuard guard_;
};

}  // namespace mdfast::cuda
