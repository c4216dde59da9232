// Whether this build's CUDA kernels can run on a device. A build carries machine code (SASS) for
// the archs of TORCH_CUDA_ARCH_LIST and PTX for those marked +PTX; a device newer than every SASS
// arch runs only through PTX the driver compiles, and a device older than all of them not at all.
// Launching then fails far from the cause, so each op checks once per device and raises a clear
// error naming the build's arch list and the device's compute capability.
#pragma once

#include <string>

namespace mdfast::cuda {

struct KernelImage {
  bool runnable = false;
  int binary_version = 0;  // e.g. 90: the SASS arch the runtime picked (or JIT-compiled) for it
  int ptx_version = 0;     // the PTX arch that image came from
  std::string error;       // the runtime's error when not runnable
};

// The kernel image the CUDA runtime selects for `device` (a probe kernel of this build; every
// .cu file is compiled with the same -gencode list). Not cached.
KernelImage kernel_image(int device);

// Raises a c10::Error (RuntimeError in Python) when this build cannot run on `device`. The
// positive answer is cached per device, so the cost per call is one relaxed atomic load.
void require_kernel_image(int device);

}  // namespace mdfast::cuda
