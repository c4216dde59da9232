// Kernel-image probe of the build (see kernel_image.h).
#include "kernel_image.h"

#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/util/Exception.h>
#include <cuda_runtime_api.h>

#include <array>
#include <atomic>

#ifndef MDFAST_CUDA_ARCH_LIST
#define MDFAST_CUDA_ARCH_LIST "unknown"
#endif

namespace mdfast::cuda {
namespace {

__global__ void probe_kernel() {}

constexpr int kMaxDevices = 64;
std::array<std::atomic<bool>, kMaxDevices> g_runnable{};  // static storage: all false

}  // namespace

KernelImage kernel_image(int device) {
  KernelImage image;
  const c10::cuda::CUDAGuard guard(static_cast<c10::DeviceIndex>(device));
  cudaFuncAttributes attr{};
  const cudaError_t err = cudaFuncGetAttributes(&attr, probe_kernel);
  if (err != cudaSuccess) {
    (void)cudaGetLastError();  // not sticky: clear it so later launch checks don't report it
    image.error = std::string(cudaGetErrorName(err)) + " (" + cudaGetErrorString(err) + ")";
    return image;
  }
  image.runnable = true;
  image.binary_version = attr.binaryVersion;
  image.ptx_version = attr.ptxVersion;
  return image;
}

void require_kernel_image(int device) {
  const bool cacheable = device >= 0 && device < kMaxDevices;
  if (cacheable && g_runnable[device].load(std::memory_order_relaxed)) return;
  const KernelImage image = kernel_image(device);
  if (image.runnable) {
    if (cacheable) g_runnable[device].store(true, std::memory_order_relaxed);
    return;
  }
  const cudaDeviceProp* prop = at::cuda::getDeviceProperties(device);
  TORCH_CHECK(false, "mdfast: this build's CUDA kernels cannot run on cuda:", device, " (",
              prop->name, ", compute capability ", prop->major, ".", prop->minor,
              "): they were compiled for TORCH_CUDA_ARCH_LIST=\"", MDFAST_CUDA_ARCH_LIST,
              "\" and the CUDA runtime finds no kernel image for it: ", image.error,
              ". Rebuild mdfast with TORCH_CUDA_ARCH_LIST=\"", prop->major, ".", prop->minor,
              "\" (or add +PTX to an arch not newer than the device).");
}

}  // namespace mdfast::cuda
