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

template <typename scalar_t, int kPerBlock, typename Convert>
void fill_uniform(scalar_t* out, int64_t numel, uint64_t seed, uint64_t offset, Convert convert) {
  const int64_t blocks = (numel + kPerBlock - 1) / kPerBlock;
  at::parallel_for(0, blocks, kGrain, [&](int64_t begin, int64_t end) {
    for (int64_t b = begin; b < end; ++b) {
      const PhiloxWords r = philox_block(seed, offset, static_cast<uint64_t>(b));
      const int64_t first = b * kPerBlock;
      for (int j = 0; j < kPerBlock && first + j < numel; ++j) out[first + j] = convert(r, j);
    }
  });
}

void uniform_out_cpu(at::Tensor& out, int64_t seed, int64_t offset) {
  check_uniform_args(out, seed, offset);
  const auto s = static_cast<uint64_t>(seed);
  const auto o = static_cast<uint64_t>(offset);
  if (out.scalar_type() == at::kDouble) {
    fill_uniform<double, 2>(out.data_ptr<double>(), out.numel(), s, o,
                            [](const PhiloxWords& r, int j) {
                              return uniform_double_from_words(r.w[2 * j], r.w[2 * j + 1]);
                            });
  } else {
    fill_uniform<float, 4>(
        out.data_ptr<float>(), out.numel(), s, o,
        [](const PhiloxWords& r, int j) { return uniform_float_from_word(r.w[j]); });
  }
}

// Row r of out [R, n] holds elements 0..n-1 of the stream (seed, offsets[r]).
template <typename scalar_t, int kPerBlock, typename Convert>
void fill_uniform_rows(scalar_t* out, int64_t rows, int64_t n, uint64_t seed,
                       const int64_t* offsets, Convert convert) {
  const int64_t per_row = (n + kPerBlock - 1) / kPerBlock;
  at::parallel_for(0, rows * per_row, kGrain, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      const int64_t r = i / per_row;
      const int64_t b = i % per_row;
      const PhiloxWords w =
          philox_block(seed, static_cast<uint64_t>(offsets[r]), static_cast<uint64_t>(b));
      const int64_t first = b * kPerBlock;
      scalar_t* row = out + r * n;
      for (int j = 0; j < kPerBlock && first + j < n; ++j) row[first + j] = convert(w, j);
    }
  });
}

void uniform_rows_out_cpu(at::Tensor& out, int64_t seed, const at::Tensor& offsets) {
  check_uniform_rows_args(out, seed, offsets);
  const at::Tensor off = offsets.contiguous();
  const auto s = static_cast<uint64_t>(seed);
  const int64_t rows = out.size(0);
  const int64_t n = out.size(1);
  if (out.scalar_type() == at::kDouble) {
    fill_uniform_rows<double, 2>(out.data_ptr<double>(), rows, n, s, off.data_ptr<int64_t>(),
                                 [](const PhiloxWords& r, int j) {
                                   return uniform_double_from_words(r.w[2 * j], r.w[2 * j + 1]);
                                 });
  } else {
    fill_uniform_rows<float, 4>(
        out.data_ptr<float>(), rows, n, s, off.data_ptr<int64_t>(),
        [](const PhiloxWords& r, int j) { return uniform_float_from_word(r.w[j]); });
  }
}

}  // namespace

TORCH_LIBRARY_IMPL(mdfast, CPU, m) {
  m.impl("philox4x32", &philox4x32_cpu);
  m.impl("uniform_out", &uniform_out_cpu);
  m.impl("uniform_rows_out", &uniform_rows_out_cpu);
}

}  // namespace mdfast
