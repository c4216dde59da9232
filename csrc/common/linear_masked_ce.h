// linear_masked_ce: the output projection fused with masked_ce, written once over ATen ops and
// the masked_ce kernels (called through the dispatcher), and registered for CPU
// (csrc/cpu/masked_ce.cpp) and CUDA (csrc/cuda/masked_ce.cu).
//
// Only rows with nonzero row_weight are projected, chunk_rows of them at a time:
//   logits_c = hidden[rows_c] @ weight^T + bias        [C, V] in the inputs' dtype
//   (loss, lse)_c = masked_ce(logits_c, ...)
// With compute_grad the same chunk also yields the gradients for a unit upstream gradient:
// masked_ce_backward_ overwrites logits_c with G_c = w (softmax - onehot), then
//   grad_hidden[rows_c] = G_c @ weight,  grad_weight += G_c^T @ hidden[rows_c],  grad_bias += sum
//   G_c
// (grad_weight and grad_bias accumulate in float32 across chunks). The backward scales these by
// the upstream gradient when it is the same for every active row (loss.sum() or .mean(): the
// usual case), and otherwise recomputes the chunks with the real per-row gradient.
// Peak memory: one chunk of logits plus the gradient accumulators, never N x V.
#pragma once

#include <ATen/core/Tensor.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <ATen/ops/addmm.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/mm.h>
#include <ATen/ops/mul.h>
#include <ATen/ops/ones_like.h>
#include <ATen/ops/sum.h>
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

// Value checks over all rows on a host copy of target and row_weight (one sync on CUDA), so the
// errors name the global row and read as masked_ce's.
inline void check_linear_masked_ce_values(const at::Tensor& target, const at::Tensor& row_weight,
                                          int64_t v, int64_t exclude_index) {
  if (target.numel() == 0) return;
  const at::Tensor t = target.cpu().contiguous();
  const at::Tensor w = row_weight.cpu().to(at::kDouble).contiguous();
  check_ce_values(t.data_ptr<int64_t>(), w.data_ptr<double>(), t.size(0), v, exclude_index,
                  "row_weight");
}

inline int64_t default_chunk_rows(int64_t v) {
  return std::max<int64_t>(16, (int64_t(1) << 25) / std::max<int64_t>(v, 1));
}

using MaskedCeFn = std::tuple<at::Tensor, at::Tensor>(const at::Tensor&, const at::Tensor&,
                                                      const c10::optional<at::Tensor>&, int64_t,
                                                      bool);
using MaskedCeBackwardInplaceFn = void(const at::Tensor&, at::Tensor&, const at::Tensor&,
                                       const c10::optional<at::Tensor>&, const at::Tensor&,
                                       int64_t);

// The chunk loop shared by forward and backward. grad: per-row upstream gradient (undefined =
// 1). lse_in: the forward's lse (backward recompute: skips the forward reduction). Outputs are
// filled when defined: loss/lse [N], gh [N, D], gw [V, D], gb [V] (acc dtype).
inline void linear_masked_ce_chunks(const at::Tensor& hidden, const at::Tensor& weight,
                                    const c10::optional<at::Tensor>& bias, const at::Tensor& target,
                                    const at::Tensor& row_weight, int64_t exclude_index,
                                    int64_t chunk, const at::Tensor& grad, const at::Tensor& lse_in,
                                    at::Tensor loss, at::Tensor lse, at::Tensor gh, at::Tensor gw,
                                    at::Tensor gb) {
  static auto masked_ce_op =
      c10::Dispatcher::singleton().findSchemaOrThrow("mdfast::masked_ce", "").typed<MaskedCeFn>();
  static auto backward_op = c10::Dispatcher::singleton()
                                .findSchemaOrThrow("mdfast::masked_ce_backward_", "")
                                .typed<MaskedCeBackwardInplaceFn>();
  const at::Tensor active = row_weight.ne(0).nonzero().squeeze(1);
  const int64_t n_active = active.size(0);
  if (n_active == 0) return;
  const bool want_grad = gh.defined() || gw.defined();
  const at::Tensor wt = weight.t();
  chunk = std::min(chunk, n_active);
  // Buffers reused by every chunk (fresh allocations cost page faults on CPU and allocator
  // traffic on GPU): the chunk's logits, and for bf16/fp16 the chunk's weight-gradient product
  // before it is added to the float32 accumulator.
  at::Tensor logits_buf = at::empty({chunk, weight.size(0)}, hidden.options());
  at::Tensor prod_buf;
  if (gw.defined() && hidden.scalar_type() != gw.scalar_type()) {
    prod_buf = at::empty(weight.sizes(), weight.options());
  }
  bool first = true;
  for (int64_t c0 = 0; c0 < n_active; c0 += chunk) {
    const int64_t rows = std::min(n_active, c0 + chunk) - c0;
    const at::Tensor idx = active.slice(0, c0, c0 + rows);
    const at::Tensor h = hidden.index_select(0, idx);
    at::Tensor logits = logits_buf.slice(0, 0, rows);
    if (bias.has_value()) {
      at::addmm_out(logits, *bias, h, wt);
    } else {
      at::mm_out(logits, h, wt);
    }
    const at::Tensor t = target.index_select(0, idx);
    const at::Tensor w = row_weight.index_select(0, idx);
    at::Tensor lse_c;
    if (loss.defined()) {
      auto [loss_c, l] = masked_ce_op.call(logits, t, w, exclude_index, false);
      loss.index_copy_(0, idx, loss_c);
      lse.index_copy_(0, idx, l);
      lse_c = l;
    } else {
      lse_c = lse_in.index_select(0, idx);
    }
    if (!want_grad) continue;
    const at::Tensor g =
        grad.defined() ? grad.index_select(0, idx).to(lse_c.scalar_type()) : at::ones_like(lse_c);
    backward_op.call(g, logits, t, w, lse_c, exclude_index);  // logits now hold G_c
    if (gh.defined()) gh.index_copy_(0, idx, logits.mm(weight).to(gh.scalar_type()));
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
    c10::optional<int64_t> chunk_rows, bool compute_grad) {
  check_linear_masked_ce_args(hidden, weight, bias, target, row_weight, exclude_index, chunk_rows);
  const int64_t n = hidden.size(0), d = hidden.size(1), v = weight.size(0);
  check_linear_masked_ce_values(target, row_weight, v, exclude_index);
  const auto opts = hidden.options().dtype(ce_acc_dtype(hidden.scalar_type()));
  at::Tensor loss = at::zeros({n}, opts);
  at::Tensor lse = at::zeros({n}, opts);
  // gw / gb are fully written by the first chunk; zero-filled only when no row is active
  const bool any_active = n > 0 && row_weight.ne(0).any().item<bool>();
  const auto grad_buf = [&](at::IntArrayRef shape) {
    return any_active ? at::empty(shape, opts) : at::zeros(shape, opts);
  };
  at::Tensor gh = compute_grad ? at::zeros({n, d}, opts) : at::empty({0}, opts);
  at::Tensor gw = compute_grad ? grad_buf({v, d}) : at::empty({0}, opts);
  at::Tensor gb = compute_grad && bias.has_value() ? grad_buf({v}) : at::empty({0}, opts);
  const at::Tensor w = row_weight.contiguous();
  linear_masked_ce_chunks(
      hidden, weight, bias, target, w, exclude_index, chunk_rows.value_or(default_chunk_rows(v)),
      at::Tensor(), at::Tensor(), loss, lse, compute_grad ? gh : at::Tensor(),
      compute_grad ? gw : at::Tensor(), compute_grad && bias.has_value() ? gb : at::Tensor());
  return {loss, lse, gh, gw, gb};
}

inline std::tuple<at::Tensor, at::Tensor, at::Tensor> linear_masked_ce_backward_impl(
    const at::Tensor& grad_loss, const at::Tensor& hidden, const at::Tensor& weight,
    const c10::optional<at::Tensor>& bias, const at::Tensor& target, const at::Tensor& row_weight,
    const at::Tensor& lse, const at::Tensor& grad_hidden_unit, const at::Tensor& grad_weight_unit,
    const at::Tensor& grad_bias_unit, int64_t exclude_index, c10::optional<int64_t> chunk_rows) {
  check_linear_masked_ce_args(hidden, weight, bias, target, row_weight, exclude_index, chunk_rows);
  const int64_t n = hidden.size(0), d = hidden.size(1), v = weight.size(0);
  TORCH_CHECK(grad_loss.dim() == 1 && grad_loss.size(0) == n,
              "mdfast: argument 'grad_loss' must have shape [", n, "], got ", grad_loss.sizes());
  const auto acc = ce_acc_dtype(hidden.scalar_type());
  const auto opts = hidden.options().dtype(acc);
  const at::Tensor g = grad_loss.to(acc);
  const bool have_unit = grad_hidden_unit.numel() == n * d && n * d > 0;
  const at::Tensor active = row_weight.ne(0);
  const at::Tensor g_active = g.masked_select(active);
  const auto out_opts = hidden.options();
  at::Tensor gh = at::empty({n, d}, out_opts);
  at::Tensor gw = at::empty({v, d}, out_opts);
  at::Tensor gb = bias.has_value() ? at::empty({v}, out_opts) : at::empty({0}, out_opts);
  if (g_active.numel() == 0) {  // no active row: every gradient is zero
    gh.zero_();
    gw.zero_();
    gb.zero_();
    return {gh, gw, gb};
  }
  bool uniform = false;
  if (have_unit) {
    // rows are independent: grad_hidden = g * (unit gradient) exactly, for any g
    at::mul_out(gh, grad_hidden_unit, g.unsqueeze(1));
    const at::Tensor g0 = g_active.slice(0, 0, 1);
    uniform = g_active.eq(g0).all().item<bool>();  // the usual sum / mean reduction
    if (uniform) {
      at::mul_out(gw, grad_weight_unit, g0);
      if (bias.has_value()) at::mul_out(gb, grad_bias_unit, g0);
      return {gh, gw, gb};
    }
  }
  // per-row upstream gradients differ: recompute the chunks with them
  at::Tensor gh_acc = have_unit ? at::Tensor() : at::zeros({n, d}, opts);
  at::Tensor gw_acc = at::empty({v, d}, opts);
  at::Tensor gb_acc = bias.has_value() ? at::empty({v}, opts) : at::Tensor();
  linear_masked_ce_chunks(hidden, weight, bias, target, row_weight.contiguous(), exclude_index,
                          chunk_rows.value_or(default_chunk_rows(v)), g, lse, at::Tensor(),
                          at::Tensor(), gh_acc, gw_acc, gb_acc);
  if (!have_unit) gh.copy_(gh_acc);
  gw.copy_(gw_acc);
  if (bias.has_value()) gb.copy_(gb_acc);
  return {gh, gw, gb};
}

}  // namespace mdfast
