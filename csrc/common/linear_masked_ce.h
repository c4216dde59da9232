// linear_masked_ce: the output projection fused with masked_ce, written once over ATen ops and
// the masked_ce kernels (called through the dispatcher), and registered for CPU
// (csrc/cpu/masked_ce.cpp) and CUDA (csrc/cuda/masked_ce.cu).
//
// Rows are projected chunk_rows at a time:
//   logits_c = hidden[rows_c] @ weight^T + bias        [C, V] in the inputs' dtype
//   (loss, lse)_c = masked_ce(logits_c, ...)
// With compute_grad the same chunk also yields the gradients for a unit upstream gradient:
// masked_ce_backward_ overwrites logits_c with G_c = w (softmax - onehot), then
//   grad_hidden[rows_c] = G_c @ weight,  grad_weight += G_c^T @ hidden[rows_c],  grad_bias += sum
//   G_c
// (grad_weight and grad_bias accumulate in float32 across chunks). The backward scales these by
// the upstream gradient when it is the same for every active row, and otherwise recomputes the
// chunks with the real per-row gradient. Peak memory: one chunk of logits plus the gradient
// accumulators, never N x V.
//
// Which rows the chunks cover (compact_rows, default: true for CPU tensors, false otherwise):
// * compact: only the rows with nonzero weight, found on the host (one nonzero(), a sync on a
//   GPU) and gathered per chunk; "the upstream gradient is uniform" is also tested on the host.
// * not compact: every row, as contiguous slices, with the hidden state of zero-weight rows
//   replaced by 0, so they contribute exactly nothing; no value is read on the host: the GEMMs
//   cost N rows instead of the active ones, and the backward scales only when autograd hands it
//   a broadcast scalar (stride 0, e.g. loss.sum()) and recomputes otherwise.
#pragma once

#include <ATen/core/Tensor.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <ATen/ops/addmm.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/mm.h>
#include <ATen/ops/mul.h>
#include <ATen/ops/ones_like.h>
#include <ATen/ops/sum.h>
#include <ATen/ops/where.h>
#include <ATen/ops/zeros.h>
#include <c10/util/Exception.h>
#include <c10/util/Optional.h>

#include <algorithm>
#include <tuple>

#include "masked_ce_args.h"

namespace mdfast {

inline void check_linear_masked_ce_args(const at::Tensor& hidden, const at::Tensor& weight,
                                        const c10::optional<at::Tensor>& bias,
                                        const at::Tensor& target, const at::Tensor& row_weight,
                                        int64_t exclude_index,
                                        const c10::optional<int64_t>& chunk_rows) {
  check::dim(hidden, "hidden", 2);
  check::dim(weight, "weight", 2);
  TORCH_CHECK(is_ce_dtype(hidden.scalar_type()),
              "mdfast: argument 'hidden' must have dtype float32, bfloat16, float16 or float64, "
              "got ",
              hidden.scalar_type());
  check::dtype(weight, "weight", hidden.scalar_type());
  TORCH_CHECK(weight.size(1) == hidden.size(1), "mdfast: argument 'weight' must have shape [V, ",
              hidden.size(1), "], got ", weight.sizes());
  check::same_device(weight, "weight", hidden, "hidden");
  if (bias.has_value()) {
    check::dtype(*bias, "bias", hidden.scalar_type());
    TORCH_CHECK(bias->dim() == 1 && bias->size(0) == weight.size(0),
                "mdfast: argument 'bias' must have shape [", weight.size(0), "], got ",
                bias->sizes());
    check::same_device(*bias, "bias", hidden, "hidden");
  }
  check_ce_rows(hidden.size(0), weight.size(0), hidden, "hidden", target, row_weight, "row_weight",
                exclude_index);
  TORCH_CHECK_VALUE(!chunk_rows.has_value() || *chunk_rows > 0,
                    "mdfast: argument 'chunk_rows' must be a positive int, got ",
                    chunk_rows.value_or(0));
}

// Value checks over all rows of CPU tensors, so the errors name the global row and read as
// masked_ce's (GPU values are checked by the Python wrapper under mdfast.set_validation("full")).
inline void check_linear_masked_ce_values(const at::Tensor& target, const at::Tensor& row_weight,
                                          int64_t v, int64_t exclude_index) {
  if (target.numel() == 0 || !target.is_cpu()) return;
  const at::Tensor t = target.contiguous();
  const at::Tensor w = row_weight.to(at::kDouble).contiguous();
  check_ce_values(t.data_ptr<int64_t>(), w.data_ptr<double>(), t.size(0), v, exclude_index,
                  "row_weight");
}

inline int64_t default_chunk_rows(int64_t v) {
  return std::max<int64_t>(16, (int64_t(1) << 25) / std::max<int64_t>(v, 1));
}

inline bool compact_by_default(const c10::optional<bool>& compact_rows, const at::Tensor& hidden) {
  return compact_rows.value_or(hidden.is_cpu());
}

using MaskedCeFn = std::tuple<at::Tensor, at::Tensor>(const at::Tensor&, const at::Tensor&,
                                                      const c10::optional<at::Tensor>&, int64_t,
                                                      bool);
using MaskedCeBackwardInplaceFn = void(const at::Tensor&, at::Tensor&, const at::Tensor&,
                                       const c10::optional<at::Tensor>&, const at::Tensor&,
                                       int64_t);

// The chunk loop shared by forward and backward. grad: per-row upstream gradient (undefined =
// 1). lse_in: the forward's lse (backward recompute: skips the forward reduction). Outputs are
// filled when defined: loss/lse [N] and gh [N, D] on the rows the chunks cover (the caller
// zero-fills the others), gw [V, D] and gb [V] entirely (acc dtype).
inline void linear_masked_ce_chunks(const at::Tensor& hidden, const at::Tensor& weight,
                                    const c10::optional<at::Tensor>& bias, const at::Tensor& target,
                                    const at::Tensor& row_weight, int64_t exclude_index,
                                    int64_t chunk, bool compact, const at::Tensor& grad,
                                    const at::Tensor& lse_in, at::Tensor loss, at::Tensor lse,
                                    at::Tensor gh, at::Tensor gw, at::Tensor gb) {
  static auto masked_ce_op =
      c10::Dispatcher::singleton().findSchemaOrThrow("mdfast::masked_ce", "").typed<MaskedCeFn>();
  static auto backward_op = c10::Dispatcher::singleton()
                                .findSchemaOrThrow("mdfast::masked_ce_backward_", "")
                                .typed<MaskedCeBackwardInplaceFn>();
  const at::Tensor active = compact ? row_weight.ne(0).nonzero().squeeze(1) : at::Tensor();
  const int64_t covered = compact ? active.size(0) : hidden.size(0);
  if (covered == 0) {  // nothing is multiplied: the accumulated gradients are zero
    if (gw.defined()) gw.zero_();
    if (gb.defined()) gb.zero_();
    return;
  }
  const bool want_grad = gh.defined() || gw.defined();
  const at::Tensor wt = weight.t();
  chunk = std::min(chunk, covered);
  // Buffers reused by every chunk (fresh allocations cost page faults on CPU and allocator
  // traffic on GPU): the chunk's logits, for bf16/fp16 the chunk's weight-gradient product
  // before it is added to the float32 accumulator, and when not compact the chunk's hidden state.
  at::Tensor logits_buf = at::empty({chunk, weight.size(0)}, hidden.options());
  at::Tensor prod_buf;
  if (gw.defined() && hidden.scalar_type() != gw.scalar_type()) {
    prod_buf = at::empty(weight.sizes(), weight.options());
  }
  at::Tensor hidden_buf, zero;
  if (!compact) {
    hidden_buf = at::empty({chunk, hidden.size(1)}, hidden.options());
    zero = at::zeros({}, hidden.options());
  }
  bool first = true;
  for (int64_t c0 = 0; c0 < covered; c0 += chunk) {
    const int64_t rows = std::min(covered, c0 + chunk) - c0;
    const at::Tensor idx = compact ? active.slice(0, c0, c0 + rows) : at::Tensor();
    const auto take = [&](const at::Tensor& t) {
      return compact ? t.index_select(0, idx) : t.slice(0, c0, c0 + rows);
    };
    const auto put = [&](at::Tensor& dst, const at::Tensor& src) {
      if (compact) {
        dst.index_copy_(0, idx, src);
      } else {
        dst.slice(0, c0, c0 + rows).copy_(src);
      }
    };
    const at::Tensor t = take(target);
    const at::Tensor w = take(row_weight);
    at::Tensor h;
    if (compact) {
      h = hidden.index_select(0, idx);
    } else {
      h = hidden_buf.slice(0, 0, rows);
      at::where_out(h, w.ne(0).unsqueeze(1), hidden.slice(0, c0, c0 + rows), zero);
    }
    at::Tensor logits = logits_buf.slice(0, 0, rows);
    if (bias.has_value()) {
      at::addmm_out(logits, *bias, h, wt);
    } else {
      at::mm_out(logits, h, wt);
    }
    at::Tensor lse_c;
    if (loss.defined()) {
      auto [loss_c, l] = masked_ce_op.call(logits, t, w, exclude_index, false);
      put(loss, loss_c);
      put(lse, l);
      lse_c = l;
    } else {
      lse_c = take(lse_in);
    }
    if (!want_grad) continue;
    const at::Tensor g = grad.defined() ? take(grad).to(lse_c.scalar_type()) : at::ones_like(lse_c);
    backward_op.call(g, logits, t, w, lse_c, exclude_index);  // logits now hold G_c
    if (gh.defined()) put(gh, logits.mm(weight).to(gh.scalar_type()));
    if (gw.defined()) {
      if (!prod_buf.defined()) {
        if (first) {
          at::mm_out(gw, logits.t(), h);
        } else {
          gw.addmm_(logits.t(), h);
        }
      } else {
        at::mm_out(prod_buf, logits.t(), h);  // bf16/fp16 product per chunk
        if (first) {
          gw.copy_(prod_buf);
        } else {
          gw.add_(prod_buf);  // float32 accumulation across chunks
        }
      }
      if (gb.defined()) {
        if (first) {
          at::sum_out(gb, logits, {0}, false, gb.scalar_type());
        } else {
          gb.add_(logits.sum(0, false, gb.scalar_type()));
        }
      }
    }
    first = false;
  }
}

inline std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> linear_masked_ce_impl(
    const at::Tensor& hidden, const at::Tensor& weight, const c10::optional<at::Tensor>& bias,
    const at::Tensor& target, const at::Tensor& row_weight, int64_t exclude_index,
    c10::optional<int64_t> chunk_rows, bool compute_grad, c10::optional<bool> compact_rows) {
  check_linear_masked_ce_args(hidden, weight, bias, target, row_weight, exclude_index, chunk_rows);
  const int64_t n = hidden.size(0), d = hidden.size(1), v = weight.size(0);
  check_linear_masked_ce_values(target, row_weight, v, exclude_index);
  const auto opts = hidden.options().dtype(ce_acc_dtype(hidden.scalar_type()));
  at::Tensor loss = at::zeros({n}, opts);
  at::Tensor lse = at::zeros({n}, opts);
  at::Tensor gh = compute_grad ? at::zeros({n, d}, opts) : at::empty({0}, opts);
  at::Tensor gw = compute_grad ? at::empty({v, d}, opts) : at::empty({0}, opts);
  at::Tensor gb = compute_grad && bias.has_value() ? at::empty({v}, opts) : at::empty({0}, opts);
  linear_masked_ce_chunks(
      hidden, weight, bias, target, row_weight.contiguous(), exclude_index,
      chunk_rows.value_or(default_chunk_rows(v)), compact_by_default(compact_rows, hidden),
      at::Tensor(), at::Tensor(), loss, lse, compute_grad ? gh : at::Tensor(),
      compute_grad ? gw : at::Tensor(), compute_grad && bias.has_value() ? gb : at::Tensor());
  return {loss, lse, gh, gw, gb};
}

inline std::tuple<at::Tensor, at::Tensor, at::Tensor> linear_masked_ce_backward_impl(
    const at::Tensor& grad_loss, const at::Tensor& hidden, const at::Tensor& weight,
    const c10::optional<at::Tensor>& bias, const at::Tensor& target, const at::Tensor& row_weight,
    const at::Tensor& lse, const at::Tensor& grad_hidden_unit, const at::Tensor& grad_weight_unit,
    const at::Tensor& grad_bias_unit, int64_t exclude_index, c10::optional<int64_t> chunk_rows,
    c10::optional<bool> compact_rows) {
  check_linear_masked_ce_args(hidden, weight, bias, target, row_weight, exclude_index, chunk_rows);
  const int64_t n = hidden.size(0), d = hidden.size(1), v = weight.size(0);
  TORCH_CHECK(grad_loss.dim() == 1 && grad_loss.size(0) == n,
              "mdfast: argument 'grad_loss' must have shape [", n, "], got ", grad_loss.sizes());
  const bool compact = compact_by_default(compact_rows, hidden);
  const auto acc = ce_acc_dtype(hidden.scalar_type());
  const auto opts = hidden.options().dtype(acc);
  // autograd hands loss.sum()'s gradient over as one scalar broadcast to [N] (stride 0): uniform
  // without reading it
  const bool broadcast = n == 1 || (n > 1 && grad_loss.stride(0) == 0);
  const at::Tensor g = grad_loss.to(acc);
  const bool have_unit = grad_hidden_unit.numel() == n * d && n * d > 0;
  const auto out_opts = hidden.options();
  at::Tensor gh = at::empty({n, d}, out_opts);
  at::Tensor gw = at::empty({v, d}, out_opts);
  at::Tensor gb = bias.has_value() ? at::empty({v}, out_opts) : at::empty({0}, out_opts);
  if (have_unit) {
    at::Tensor g0 = g.slice(0, 0, 1);
    bool uniform = broadcast;
    if (!uniform && compact) {  // the usual sum / mean reduction, tested on the host
      const at::Tensor g_active = g.masked_select(row_weight.ne(0));
      if (g_active.numel() == 0) {  // no active row: every gradient is zero
        gh.zero_();
        gw.zero_();
        gb.zero_();
        return {gh, gw, gb};
      }
      g0 = g_active.slice(0, 0, 1);
      uniform = g_active.eq(g0).all().item<bool>();
    }
    // rows are independent: grad_hidden = g * (unit gradient) exactly, for any g
    at::mul_out(gh, grad_hidden_unit, g.unsqueeze(1));
    if (uniform) {
      at::mul_out(gw, grad_weight_unit, g0);
      if (bias.has_value()) at::mul_out(gb, grad_bias_unit, g0);
      return {gh, gw, gb};
    }
  }
  // per-row upstream gradients differ (or may): recompute the chunks with them
  at::Tensor gh_acc = have_unit ? at::Tensor() : at::zeros({n, d}, opts);
  at::Tensor gw_acc = at::empty({v, d}, opts);
  at::Tensor gb_acc = bias.has_value() ? at::empty({v}, opts) : at::Tensor();
  linear_masked_ce_chunks(hidden, weight, bias, target, row_weight.contiguous(), exclude_index,
                          chunk_rows.value_or(default_chunk_rows(v)), compact, g, lse, at::Tensor(),
                          at::Tensor(), gh_acc, gw_acc, gb_acc);
  if (!have_unit) gh.copy_(gh_acc);
  gw.copy_(gw_acc);
  if (bias.has_value()) gb.copy_(gb_acc);
  return {gh, gw, gb};
}

}  // namespace mdfast
