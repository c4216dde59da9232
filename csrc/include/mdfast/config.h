// Host/device qualifiers shared by the header-only core. No torch, no CUDA runtime headers.
#pragma once

#if defined(__CUDACC__) || defined(__HIPCC__)
#define MDFAST_HOST_DEVICE __host__ __device__ __forceinline__
#define MDFAST_ON_DEVICE_COMPILER 1
#define MDFAST_UNROLL _Pragma("unroll")
#else
#define MDFAST_HOST_DEVICE inline
#define MDFAST_ON_DEVICE_COMPILER 0
#if defined(__clang__)
#define MDFAST_UNROLL _Pragma("clang loop unroll(full)")
#elif defined(__GNUC__)
#define MDFAST_UNROLL _Pragma("GCC unroll 16")
#else
#define MDFAST_UNROLL
#endif
#endif
