// CPU kernels of the RNG ops: philox4x32 (raw block function), uniform_out and uniform_rows_out.
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty_like.h>
#include <torch/library.h>

#include "../common/philox_args.h"
#include "mdfast/philox.h"

namespace mdfast {
namespace {

constexpr int64_t kGrain = 2048;

at::Tensor philox4x32_cpu(const at::Tensor& counter, const at::Tensor& key) {
  check_philox4x32_args(counter, key);
  const at::Tensor c = counter.contiguous();
  const at::Tensor k = key.contiguous();
  at::Tensor out = at::empty_like(c);
  const int64_t* cp = c.data_ptr<int64_t>();
  const int64_t* kp = k.data_ptr<int64_t>();
  int64_t* op = out.data_ptr<int64_t>();
  const uint32_t k0 = static_cast<uint32_t>(kp[0]);
  const uint32_t k1 = static_cast<uint32_t>(kp[1]);
  at::parallel_for(0, c.size(0), kGrain, [&](int64_t begin, int64_t end) {
    for (int64_t n = begin; n < end; ++n) {
      const int64_t* row = cp + 4 * n;
      const PhiloxWords r =
          philox4x32_10(static_cast<uint32_t>(row[0]), static_cast<uint32_t>(row[1]),
                        static_cast<uint32_t>(row[2]), static_cast<uint32_t>(row[3]), k0, k1);
      for (int j = 0; j < 4; ++j) op[4 * n + j] = static_cast<int64_t>(r.w[j]);
    }
  });
  return out;
}

template <typename scalar_t>
void fill_uniform(scalar_t* out, int64_t numel, uint64_t seed, uint64_t offset) {
  at::parallel_for(0, uniform_blocks<scalar_t>(numel), kGrain, [&](int64_t begin, int64_t end) {
    for (int64_t b = begin; b < end; ++b) write_uniform_block(out, numel, seed, offset, b);
  });
}

void uniform_out_cpu(at::Tensor& out, int64_t seed, int64_t offset) {
  check_uniform_args(out, seed, offset);
  const auto s = static_cast<uint64_t>(seed);
  const auto o = static_cast<uint64_t>(offset);
  if (out.scalar_type() == at::kDouble) {
    fill_uniform(out.data_ptr<double>(), out.numel(), s, o);
  } else {
    fill_uniform(out.data_ptr<float>(), out.numel(), s, o);
  }
}

// Row r of out [rows, n] holds elements 0..n-1 of the stream (seed, offsets[r]).
template <typename scalar_t>
void fill_uniform_rows(scalar_t* out, int64_t rows, int64_t n, uint64_t seed,
                       const int64_t* offsets) {
  const int64_t per_row = uniform_blocks<scalar_t>(n);
  at::parallel_for(0, rows * per_row, kGrain, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      const int64_t r = i / per_row;
      write_uniform_block(out + r * n, n, seed, static_cast<uint64_t>(offsets[r]), i % per_row);
    }
  });
}

void uniform_rows_out_cpu(at::Tensor& out, int64_t seed, const at::Tensor& offsets) {
  check_uniform_rows_args(out, seed, offsets);
  const at::Tensor off = offsets.contiguous();
  const auto s = static_cast<uint64_t>(seed);
  if (out.scalar_type() == at::kDouble) {
    fill_uniform_rows(out.data_ptr<double>(), out.size(0), out.size(1), s, off.data_ptr<int64_t>());
  } else {
    fill_uniform_rows(out.data_ptr<float>(), out.size(0), out.size(1), s, off.data_ptr<int64_t>());
  }
}

}  // namespace

TORCH_LIBRARY_IMPL(mdfast, CPU, m) {
  m.impl("philox4x32", &philox4x32_cpu);
  m.impl("uniform_out", &uniform_out_cpu);
  m.impl("uniform_rows_out", &uniform_rows_out_cpu);
}

}  // namespace mdfast
