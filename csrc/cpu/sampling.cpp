// CPU kernels of the sampling ops: sample_x0 (exact fp64 Gumbel-max draw of x0 from logits rows,
// with temperature, top-k and ReMDM / HF top-p) and mask_step (the fused carry-over / unmask /
// remask step). The math and the random-stream layout are in csrc/include/mdfast/sampling.h.
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <torch/library.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <limits>
#include <tuple>
#include <vector>

#include "../common/dispatch.h"
#include "../common/sampling_args.h"
#include "mdfast/online_softmax.h"
#include "mdfast/sampling.h"

namespace mdfast {
namespace {

using sampling::RadixHist;
using sampling::RadixSelect;

struct Params {
  double tau;  // 0: argmax
  double top_p;
  int64_t top_k;
  int64_t exclude;
  bool hf;
  uint64_t seed;
  uint64_t offset;
};

struct RowOut {
  int64_t token;
  float prob;
  int32_t status;
};

// Logit value in double (exact for every input dtype); ranking uses its float32 rounding.
template <typename T>
inline double as_double(T v) {
  return static_cast<double>(static_cast<float>(v));
}
template <>
inline double as_double<double>(double v) {
  return v;
}

// Per-thread candidate buffers (composites and fixed-point masses of one row), used only when the
// row is truncated. Host memory of one row, reused across rows.
struct Scratch {
  std::vector<uint64_t> comp;
  std::vector<uint64_t> mass;
};

void run_select(RadixSelect& sel, const Scratch& s, int64_t n, uint64_t lower, RadixHist& h,
                bool first_level_done) {
  bool skip_fill = first_level_done;
  while (!sel.done) {
    if (!skip_fill) {
      sampling::radix_hist_clear(h);
      for (int64_t j = 0; j < n; ++j) {
        const uint64_t c = s.comp[j];
        if (c < lower || !sel.in_prefix(c)) continue;
        const int d = sel.digit(c);
        h.count[d] += 1;
        h.mass[d] += s.mass[j];
        if (c > h.maxc[d]) h.maxc[d] = c;
      }
    }
    skip_fill = false;
    sel.step(h);
  }
}

template <typename T>
RowOut sample_row(const T* z, int64_t V, int64_t row, const Params& P, Scratch& scratch) {
  const double tau = P.tau > 0.0 ? P.tau : 1.0;
  const auto scaled = [tau](double v) { return tau == 1.0 ? v : v / tau; };
  const auto comp_of = [](double v, int64_t c) {
    return sampling::composite(static_cast<float>(v), c);
  };
  // Pass 1: log-sum-exp of z / tau over the allowed classes, the top class, NaN check.
  OnlineLogSumExp<double> acc;
  uint64_t top = 0;
  int64_t n = 0;
  for (int64_t c = 0; c < V; ++c) {
    if (c == P.exclude) continue;
    const double f = as_double(z[c]);
    if (f != f) return {0, 0.f, sampling::kNaN};
    acc.add(scaled(f));
    const uint64_t comp = comp_of(f, c);
    if (comp > top) top = comp;
    ++n;
  }
  const double lse = acc.value();
  if (n == 0 || !(lse > -std::numeric_limits<double>::infinity())) {
    return {0, 0.f, sampling::kEmpty};
  }
  // Truncation threshold: kept = {c : composite(c) >= threshold}.
  uint64_t threshold = 0;
  const bool use_k = P.top_k > 0 && P.top_k < n;
  const bool use_p = P.top_p < 1.0;
  if (use_k || use_p) {
    scratch.comp.resize(n);
    scratch.mass.resize(n);
    int64_t j = 0;
    for (int64_t c = 0; c < V; ++c) {
      if (c == P.exclude) continue;
      const double f = as_double(z[c]);
      scratch.comp[j] = comp_of(f, c);
      scratch.mass[j] = sampling::fixed_mass(std::exp(scaled(f) - lse));
      ++j;
    }
    RadixHist h;
    if (use_k) {
      RadixSelect sel = RadixSelect::kth(static_cast<uint64_t>(P.top_k));
      run_select(sel, scratch, n, 0, h, false);
      threshold = sel.result;
    }
    if (use_p) {
      // The first level's histogram also gives the candidates' total mass Z.
      RadixSelect sel = RadixSelect::crossing(0, !P.hf);
      sampling::radix_hist_clear(h);
      uint64_t total = 0;
      for (int64_t i = 0; i < n; ++i) {
        const uint64_t c = scratch.comp[i];
        if (c < threshold) continue;
        const int d = sel.digit(c);
        h.count[d] += 1;
        h.mass[d] += scratch.mass[i];
        total += scratch.mass[i];
        if (c > h.maxc[d]) h.maxc[d] = c;
      }
      sel.target = static_cast<uint64_t>(P.top_p * static_cast<double>(total));
      run_select(sel, scratch, n, threshold, h, true);
      if (sel.found) {
        const uint64_t t = (P.hf || sel.result == top) ? sel.result : sel.result + 1;
        threshold = std::max(threshold, t);
      }
    }
  }
  const bool truncated = threshold > 0;
  // Pass 2: the draw (and the kept mass when truncated).
  double kept = 0.0;
  int64_t token;
  if (P.tau > 0.0) {
    ArgmaxState best;
    const int64_t top_index = sampling::composite_index(top);
    const double s_top = scaled(as_double(z[top_index]));
    best.add(s_top + sampling::gumbel_noise(P.seed, P.offset, row, V, top_index), top_index);
    for (int64_t c = 0; c < V; ++c) {
      if (c == P.exclude) continue;
      const double f = as_double(z[c]);
      if (truncated && comp_of(f, c) < threshold) continue;
      const double s = scaled(f);
      if (truncated) kept += std::exp(s - lse);
      if (c == top_index || s + sampling::kGumbelMax < best.score) continue;
      best.add(s + sampling::gumbel_noise(P.seed, P.offset, row, V, c), c);
    }
    token = best.index;
  } else {
    token = sampling::composite_index(top);
    if (truncated) {
      for (int64_t c = 0; c < V; ++c) {
        if (c == P.exclude) continue;
        const double f = as_double(z[c]);
        if (comp_of(f, c) >= threshold) kept += std::exp(scaled(f) - lse);
      }
    }
  }
  const double p = std::exp(scaled(as_double(z[token])) - lse);
  return {token, static_cast<float>(truncated ? p / kept : p), sampling::kOk};
}

[[noreturn]] void throw_row_error(int32_t status, int64_t row) {
  if (status == sampling::kNaN) {
    TORCH_CHECK_VALUE(false, "mdfast: argument 'logits' has a NaN in row ", row,
                      ", a row that must be sampled");
  }
  TORCH_CHECK_VALUE(false, "mdfast: argument 'logits' row ", row,
                    " has no class to draw (every class excluded or -inf)");
}

// The smallest index recorded by any thread: errors found inside a parallel loop are recorded
// there and raised after it (an exception must not leave an OpenMP region).
struct FirstIndex {
  std::atomic<int64_t> value{std::numeric_limits<int64_t>::max()};
  void record(int64_t i) {
    int64_t cur = value.load();
    while (i < cur && !value.compare_exchange_weak(cur, i)) {
    }
  }
  bool found() const { return value.load() != std::numeric_limits<int64_t>::max(); }
  int64_t index() const { return value.load(); }
};

// The first row that could not be sampled, and why (row and status packed as 4 r + s, so one
// atomic minimum keeps them together); raised after the parallel loop.
struct RowError {
  FirstIndex first;
  void record(int64_t r, int32_t s) { first.record(4 * r + s); }
  void raise_if_any() const {
    if (first.found()) throw_row_error(static_cast<int32_t>(first.index() % 4), first.index() / 4);
  }
};

std::tuple<at::Tensor, at::Tensor> sample_x0_cpu(const at::Tensor& logits,
                                                 const c10::optional<at::Tensor>& rows,
                                                 double temperature, double top_p, int64_t top_k,
                                                 int64_t exclude_index, c10::string_view nucleus,
                                                 int64_t seed, int64_t offset) {
  check_sample_x0_args(logits, rows, temperature, top_p, top_k, exclude_index, seed, offset);
  const bool hf = parse_nucleus(std::string(nucleus));
  const at::Tensor z = logits.contiguous();
  const int64_t N = z.size(0), V = z.size(1);
  at::Tensor rows_c;
  if (rows.has_value()) rows_c = rows->contiguous();
  const int64_t R = rows.has_value() ? rows_c.size(0) : N;
  const int64_t* rp = rows.has_value() ? rows_c.data_ptr<int64_t>() : nullptr;
  for (int64_t r = 0; rp != nullptr && r < R; ++r) {
    TORCH_CHECK_INDEX(rp[r] >= 0 && rp[r] < N, "mdfast: argument 'rows' holds ", rp[r],
                      ", outside [0, ", N, ")");
  }
  at::Tensor token = at::empty({R}, z.options().dtype(at::kLong));
  at::Tensor prob = at::empty({R}, z.options().dtype(at::kFloat));
  int64_t* tp = token.data_ptr<int64_t>();
  float* pp = prob.data_ptr<float>();
  const Params P{temperature,
                 top_p,
                 top_k,
                 exclude_index,
                 hf,
                 static_cast<uint64_t>(seed),
                 static_cast<uint64_t>(offset)};
  RowError err;
  dispatch_logits(z.scalar_type(), [&](auto tag) {
    using T = decltype(tag);
    const T* base = static_cast<const T*>(z.data_ptr());
    at::parallel_for(0, R, 1, [&](int64_t begin, int64_t end) {
      Scratch scratch;
      for (int64_t r = begin; r < end; ++r) {
        const int64_t row = rp != nullptr ? rp[r] : r;
        const RowOut o = sample_row(base + row * V, V, row, P, scratch);
        tp[r] = o.token;
        pp[r] = o.prob;
        if (o.status != sampling::kOk) err.record(row, o.status);
      }
    });
  });
  err.raise_if_any();
  return {token, prob};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> mask_step_cpu(
    const at::Tensor& x, const c10::optional<at::Tensor>& logits, const at::Tensor& alpha_t,
    const at::Tensor& alpha_s, const c10::optional<at::Tensor>& remask,
    const c10::optional<at::Tensor>& confidence, int64_t mask_index, double temperature,
    double top_p, int64_t top_k, c10::string_view nucleus, int64_t seed, int64_t offset) {
  check_mask_step_args(x, logits, alpha_t, alpha_s, remask, confidence, mask_index, temperature,
                       top_p, top_k, seed, offset);
  const bool hf = parse_nucleus(std::string(nucleus));
  const int64_t B = x.size(0), L = x.size(1);
  const int64_t V = logits.has_value() ? logits->size(2) : std::numeric_limits<int64_t>::max();
  const at::Tensor xc = x.contiguous();
  const at::Tensor at_c = alpha_t.contiguous(), as_c = alpha_s.contiguous();
  const double* atp = at_c.data_ptr<double>();
  const double* asp = as_c.data_ptr<double>();
  for (int64_t b = 0; b < B; ++b) {
    TORCH_CHECK_VALUE(atp[b] >= 0.0 && atp[b] <= 1.0,
                      "mdfast: argument 'alpha_t' must be in [0, 1], got ", atp[b]);
    TORCH_CHECK_VALUE(asp[b] >= 0.0 && asp[b] <= 1.0,
                      "mdfast: argument 'alpha_s' must be in [0, 1], got ", asp[b]);
    TORCH_CHECK_VALUE(
        asp[b] >= atp[b],
        "mdfast: argument 'alpha_s' must be >= 'alpha_t' (time runs from t to s < t), got alpha_s=",
        asp[b], " < alpha_t=", atp[b]);
  }
  at::Tensor sig_c;
  const double* sp = nullptr;
  if (remask.has_value()) {
    sig_c = remask->contiguous();
    sp = sig_c.data_ptr<double>();
  }
  at::Tensor conf_c;
  const float* cp = nullptr;
  if (confidence.has_value()) {
    conf_c = confidence->contiguous();
    cp = conf_c.data_ptr<float>();
  }
  at::Tensor x_next = at::empty({B, L}, x.options());
  at::Tensor changed = at::empty({B, L}, x.options().dtype(at::kBool));
  at::Tensor conf_out = at::empty({B, L}, x.options().dtype(at::kFloat));
  const int64_t* xp = xc.data_ptr<int64_t>();
  int64_t* xo = x_next.data_ptr<int64_t>();
  bool* ch = changed.data_ptr<bool>();
  float* co = conf_out.data_ptr<float>();
  const auto s_ = static_cast<uint64_t>(seed);
  const auto o_ = static_cast<uint64_t>(offset);
  const float neg_inf = -std::numeric_limits<float>::infinity();

  // Phase 1: O(1) per position; unmasking positions (with logits) are collected for phase 2.
  const int64_t N = B * L;
  // the first bad position of each kind, found inside the parallel loop and raised after it
  FirstIndex bad_x, bad_sigma;
  std::vector<uint8_t> unmask(logits.has_value() ? N : 0, 0);
  at::parallel_for(0, N, 4096, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      const int64_t xi = xp[i];
      const int64_t b = i / L;
      const double sigma = sp != nullptr ? sp[i] : 0.0;
      if (xi < 0 || xi >= V) bad_x.record(i);
      if (!(sigma >= 0.0 && sigma <= 1.0)) bad_sigma.record(i);
      const double u = sampling::event_uniform(s_, o_, i);
      const float keep_conf = cp != nullptr ? cp[i] : neg_inf;
      if (xi == mask_index) {
        const bool go = u < sampling::unmask_probability(atp[b], asp[b], sigma);
        xo[i] = mask_index;
        ch[i] = go;
        co[i] = go ? neg_inf : keep_conf;
        if (go && !unmask.empty()) unmask[i] = 1;
      } else if (u < sigma) {
        xo[i] = mask_index;
        ch[i] = true;
        co[i] = neg_inf;
      } else {
        xo[i] = xi;
        ch[i] = false;
        co[i] = keep_conf;
      }
    }
  });
  if (bad_x.found()) {
    const int64_t i = bad_x.index();
    TORCH_CHECK_VALUE(false, "mdfast: argument 'x' holds ", xp[i], " at position ", i,
                      ", outside [0, V=", V, ")");
  }
  if (bad_sigma.found()) {
    const int64_t i = bad_sigma.index();
    TORCH_CHECK_VALUE(false, "mdfast: argument 'remask' must be in [0, 1], got ", sp[i],
                      " at position ", i);
  }
  if (!logits.has_value()) return {x_next, changed, conf_out};

  // Phase 2: draw x0 for the unmasking rows only; no other logits row is read.
  std::vector<int64_t> rows;
  for (int64_t i = 0; i < N; ++i) {
    if (unmask[i]) rows.push_back(i);
  }
  const at::Tensor z = logits->contiguous();
  const Params P{temperature, top_p, top_k, mask_index, hf, s_, o_};
  RowError err;
  dispatch_logits(z.scalar_type(), [&](auto tag) {
    using T = decltype(tag);
    const T* base = static_cast<const T*>(z.data_ptr());
    at::parallel_for(0, static_cast<int64_t>(rows.size()), 1, [&](int64_t begin, int64_t end) {
      Scratch scratch;
      for (int64_t r = begin; r < end; ++r) {
        const int64_t i = rows[r];
        const RowOut o = sample_row(base + i * V, V, i, P, scratch);
        xo[i] = o.token;
        co[i] = -o.prob;
        if (o.status != sampling::kOk) err.record(i, o.status);
      }
    });
  });
  err.raise_if_any();
  return {x_next, changed, conf_out};
}

}  // namespace

TORCH_LIBRARY_IMPL(mdfast, CPU, m) {
  m.impl("sample_x0", &sample_x0_cpu);
  m.impl("mask_step", &mask_step_cpu);
}

}  // namespace mdfast
