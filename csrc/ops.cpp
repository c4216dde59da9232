// The single TORCH_LIBRARY(mdfast) block: every op schema of the package lives here. Kernels are
// registered per backend in csrc/cpu/*.cpp and csrc/cuda/*.cu; fakes, autograd and the Python
// wrappers in mdfast/ops/<family>.py. The PYBIND11 module only reports how the extension was built.
#include <pybind11/pybind11.h>
#include <torch/library.h>

#ifdef MDFAST_WITH_CUDA
#include "cuda/kernel_image.h"
#endif

#ifndef MDFAST_TORCH_VERSION
#define MDFAST_TORCH_VERSION "unknown"
#endif

TORCH_LIBRARY(mdfast, m) {
  // --- RNG (csrc/include/mdfast/philox.h) ---
  m.def("philox4x32(Tensor counter, Tensor key) -> Tensor");
  m.def("uniform_out(Tensor(a!) out, int seed, int offset) -> ()");
  m.def("uniform_rows_out(Tensor(a!) out, int seed, Tensor offsets) -> ()");

  // --- masked cross-entropy (csrc/cpu/masked_ce.cpp, csrc/cuda/masked_ce.cu) ---
  m.def(
      "masked_ce(Tensor logits, Tensor target, Tensor? weight, int exclude_index=-1, "
      "bool inplace_backward=False) -> (Tensor loss, Tensor lse)");
  m.def(
      "masked_ce_backward(Tensor grad_loss, Tensor logits, Tensor target, Tensor? weight, "
      "Tensor lse, int exclude_index) -> Tensor");
  m.def(
      "masked_ce_backward_(Tensor grad_loss, Tensor(a!) logits, Tensor target, Tensor? weight, "
      "Tensor lse, int exclude_index) -> ()");
  m.def(
      "linear_masked_ce(Tensor hidden, Tensor weight, Tensor? bias, Tensor target, "
      "Tensor row_weight, int exclude_index=-1, int? chunk_rows=None, bool compute_grad=False, "
      "bool? compact_rows=None) -> (Tensor loss, Tensor lse, Tensor grad_hidden_unit, "
      "Tensor grad_weight_unit, Tensor grad_bias_unit)");
  m.def(
      "linear_masked_ce_backward(Tensor grad_loss, Tensor hidden, Tensor weight, Tensor? bias, "
      "Tensor target, Tensor row_weight, Tensor lse, Tensor grad_hidden_unit, "
      "Tensor grad_weight_unit, Tensor grad_bias_unit, int exclude_index, int? chunk_rows, "
      "bool? compact_rows=None) -> (Tensor, Tensor, Tensor)");

  // --- sampling: sample_x0, mask_step (csrc/include/mdfast/sampling.h) ---
  m.def(
      "sample_x0(Tensor logits, Tensor? rows, float temperature, float top_p, int top_k, "
      "int exclude_index, str nucleus, int seed, int offset) -> (Tensor, Tensor)");
  m.def(
      "mask_step(Tensor x, Tensor? logits, Tensor alpha_t, Tensor alpha_s, Tensor? remask, "
      "Tensor? confidence, int mask_index, float temperature, float top_p, int top_k, "
      "str nucleus, int seed, int offset) -> (Tensor, Tensor, Tensor)");

  // --- MDM-Prime sub-tokens (csrc/include/mdfast/digits.h) ---
  m.def(
      "prime_ce(Tensor logits, Tensor target, Tensor digits, int base, str mode, Tensor? weight)"
      " -> (Tensor, Tensor)");
  m.def(
      "prime_ce_backward(Tensor grad, Tensor logits, Tensor target, Tensor digits, Tensor lse,"
      " int base, str mode, Tensor? weight) -> Tensor");
  m.def(
      "prime_sample_step(Tensor logits, Tensor digits, int base, float alpha_t, float alpha_s,"
      " float temperature, str mode, Tensor? fixed_digits, int seed, int offset) -> Tensor");
}

namespace py = pybind11;

PYBIND11_MODULE(_C, module) {
  module.doc() = "mdfast compiled kernels (ops are registered under torch.ops.mdfast)";
  module.def("build_info", []() {
    py::dict info;
    info["torch_version"] = MDFAST_TORCH_VERSION;
#ifdef MDFAST_WITH_CUDA
    info["cuda"] = true;
    info["cuda_version"] = MDFAST_CUDA_VERSION;
    info["cuda_arch_list"] = MDFAST_CUDA_ARCH_LIST;
#else
    info["cuda"] = false;
    info["cuda_version"] = py::none();
    info["cuda_arch_list"] = py::none();
#endif
#ifdef _OPENMP
    info["openmp"] = _OPENMP;
#else
    info["openmp"] = py::none();
#endif
    info["compiler"] = __VERSION__;
    info["cplusplus"] = __cplusplus;
    return info;
  });
#ifdef MDFAST_WITH_CUDA
  module.def(
      "cuda_kernel_image",
      [](int device) {
        const mdfast::cuda::KernelImage image = mdfast::cuda::kernel_image(device);
        py::dict info;
        info["runnable"] = image.runnable;
        info["binary_version"] = image.binary_version;
        info["ptx_version"] = image.ptx_version;
        info["error"] = image.error;
        return info;
      },
      py::arg("device"),
      "The kernel image the CUDA runtime picks for this build on `device` (runnable, SASS and "
      "PTX arch versions, or the runtime's error).");
#endif
}
