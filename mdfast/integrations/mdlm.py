"""One-call patch of the ``Diffusion`` class of ``kuleshov-group/mdlm`` and ``kuleshov-group/remdm``
(and forks with the same methods) onto mdfast's fused loss and sampling steps.

In a clone of either codebase, before the model is built or loaded (``main.py``)::

    import diffusion
    from mdfast.integrations import mdlm as mdfast_mdlm

    mdfast_mdlm.patch(diffusion.Diffusion)     # or patch(model) for one instance

``patch`` replaces, keeping each method's signature and contract (their ``_sample`` loop, Lightning
steps, Hydra flags and checkpoints are untouched):

* ``_forward_pass_diffusion`` (``parameterization=subs``, continuous and discrete time, with
  ``change_of_variables`` / ``importance_sampling`` weights): raw logits through
  :func:`mdfast.ops.masked_ce`, or the output layer fused in with
  :func:`mdfast.ops.linear_masked_ce` where the backbone exposes it; MDLM's -1e6-offset
  log-softmax is never built. ``_subs_parameterization`` gains a raw-logits switch the loss and
  samplers use; otherwise it is the original.
* ``_ddpm_caching_update`` (MDLM, or ReMDM's with ``sampling.sampler`` in mdlm, remdm-cap,
  remdm-rescale, remdm-conf, remdm-loop, forward-backward and ``sampling.nucleus_p``),
  ``_ddpm_update`` and ReMDM's ``_dfm_caching_update``: :func:`mdfast.ops.mask_step` with the
  ``p_x0`` cache kept as an opaque :class:`DenoiserCache` (evaluated lazily; a step in which no
  position unmasks runs no network and reads no logits).
* the module-level ``_sample_categorical`` of the codebase: an exact float64 draw.

Left alone: ``parameterization`` sedd / d3pm / ar (one warning says so), the analytic (SEDD)
sampler (it gets the exact ``_sample_categorical``), the AR sampler, validation metrics.
Detection is by duck typing (``mask_index``, ``parameterization``, ``noise``, ``backbone``,
``config.sampling`` and the methods' signatures); an object that does not match raises a
``TypeError`` that lists what was found, and nothing is patched. :func:`unpatch` restores the
originals. ``docs/integrations.md`` has the details and measured speedups.
"""

from __future__ import annotations

import inspect
import sys
import types
from dataclasses import dataclass, field

from torch import nn

from mdfast.integrations import _mdlm_sampling as sampling_steps
from mdfast.integrations._mdlm_backbone import Network
from mdfast.integrations._mdlm_loss import forward_pass_diffusion
from mdfast.integrations._mdlm_sampling import DenoiserCache, Stepper, warn_once_factory

__all__ = ["DenoiserCache", "is_patched", "patch", "unpatch"]

_RECORD = "_mdfast_patch"
_STATE = "_mdfast_state"
_MISSING = object()
_SERVED = "subs"

# method -> the parameter lists (after self) of the versions this patch knows
_SIGNATURES = {
    "_forward_pass_diffusion": {("x0",): "mdlm"},
    "_subs_parameterization": {("logits", "xt"): "mdlm"},
    "_ddpm_caching_update": {
        ("x", "t", "dt", "p_x0"): "mdlm",
        ("x", "t", "dt", "p_x0", "conf"): "remdm",
    },
    "_ddpm_update": {("x", "t", "dt"): "mdlm"},
    "_dfm_caching_update": {("x", "t", "p_x0"): "remdm"},
    # called, not replaced: their contracts must be MDLM's too (BD3-LM's differ)
    "forward": {("x", "sigma"): "mdlm"},
    "_sample_t": {("n", "device"): "mdlm"},
    "q_xt": {("x", "move_chance"): "mdlm"},
}
# methods the patched code calls but does not replace
_CALLED = ("forward", "_sample_t", "q_xt")
_ATTRIBUTES = ("mask_index", "parameterization", "noise", "backbone", "config", "time_conditioning")
_LOSS_ATTRIBUTES = ("T", "change_of_variables", "importance_sampling", "neg_infinity")


@dataclass(frozen=True)
class _Options:
    loss: bool
    sampling: bool
    sample_categorical: bool
    fuse_output_layer: bool | None
    inplace_backward: bool


@dataclass
class _Record:
    options: _Options
    originals: dict = field(default_factory=dict)  # name -> previous own attribute or _MISSING
    categorical_module: str | None = None
    flavour: str = "mdlm"


# module name -> [original _sample_categorical, number of patches using the replacement]
_CATEGORICAL: dict[str, list] = {}


# ---------------------------------------------------------------------------------------------
# detection
# ---------------------------------------------------------------------------------------------


def _params(fn) -> tuple[str, ...] | None:
    try:
        names = list(inspect.signature(fn).parameters)
    except (TypeError, ValueError):
        return None
    return tuple(names[1:])  # drop self


def _describe(target) -> str:
    cls = target if isinstance(target, type) else type(target)
    kind = "class" if isinstance(target, type) else "instance of"
    return f"{kind} {cls.__module__}.{cls.__qualname__}"


def _method_problems(cls, options: _Options) -> tuple[list[str], str]:
    """Problems with the class's methods, and the sampler flavour ("mdlm" / "remdm")."""
    problems: list[str] = []
    needed = []
    if options.loss:
        needed += ["_forward_pass_diffusion", "_subs_parameterization", *_CALLED]
    if options.sampling:
        needed += ["_ddpm_caching_update", "_ddpm_update", "_subs_parameterization", "forward"]
    flavour = "mdlm"
    for name in dict.fromkeys(needed):
        fn = getattr(cls, name, None)
        if not callable(fn):
            problems.append(f"no method {name}()")
            continue
        known = _SIGNATURES.get(name)
        if known is None:
            continue
        params = _params(fn)
        if params not in known:
            expected = " or ".join(f"({', '.join(('self', *p))})" for p in known)
            got = "?" if params is None else f"({', '.join(('self', *params))})"
            problems.append(f"{name}{got} (expected {name}{expected})")
        elif name == "_ddpm_caching_update":
            flavour = known[params]
    dfm = getattr(cls, "_dfm_caching_update", None)
    known_dfm = _SIGNATURES["_dfm_caching_update"]
    if options.sampling and callable(dfm) and _params(dfm) not in known_dfm:
        problems.append(f"_dfm_caching_update{_params(dfm)} (expected (self, x, t, p_x0))")
    return problems, flavour


def _config_value(obj, path: str, default=_MISSING):
    for name in path.split("."):
        obj = getattr(obj, name, _MISSING)
        if obj is _MISSING:
            return default
    return obj


def _instance_problems(obj, options: _Options, flavour: str) -> list[str]:
    """Problems with an instance's attributes (checked at patch time for an instance, at its first
    patched call for a patched class)."""
    problems = []
    names = _ATTRIBUTES + (_LOSS_ATTRIBUTES if options.loss else ())
    missing = [n for n in names if not hasattr(obj, n)]
    if missing:
        problems.append(f"no attribute(s) {', '.join(missing)}")
        return problems
    if not isinstance(obj.backbone, nn.Module):
        problems.append(f"backbone is a {type(obj.backbone).__name__}, not an nn.Module")
    if not callable(obj.noise):
        problems.append("noise is not callable (MDLM: noise(t) -> (sigma, dsigma))")
    if not isinstance(obj.parameterization, str):
        problems.append(f"parameterization is {obj.parameterization!r}, not a string")
    mask = obj.mask_index
    if isinstance(mask, bool) or not hasattr(mask, "__index__") or int(mask) < 0:
        problems.append(f"mask_index is {mask!r}, not a non-negative int")
    sampling = getattr(obj.config, "sampling", None)
    if sampling is None:
        problems.append("config has no 'sampling' section")
    if options.loss and float(obj.neg_infinity) > -1e4:
        problems.append(
            f"neg_infinity = {obj.neg_infinity} (the fused loss drops the mask class, which "
            "equals the original only for offsets <= -1e4)"
        )
    target_length = _config_value(obj.config, "prime.target_length", 1)
    if target_length != 1:
        problems.append(
            f"config.prime.target_length = {target_length}: MDM-Prime sub-tokens are not served "
            "(mdfast.ops.prime_ce / prime_sample_step are the ops for them)"
        )
    if options.sampling and flavour == "remdm" and sampling is not None:
        problems += _remdm_config_problems(sampling)
    return problems


def _remdm_config_problems(sampling) -> list[str]:
    sampler = getattr(sampling, "sampler", None)
    if sampler not in sampling_steps.REMDM_SAMPLERS:
        return [
            f"config.sampling.sampler = {sampler!r}, not one of "
            f"{', '.join(sampling_steps.REMDM_SAMPLERS)}"
        ]
    problems = []
    p = float(getattr(sampling, "nucleus_p", 1.0))
    if not 0.0 < p <= 1.0:
        problems.append(f"config.sampling.nucleus_p = {p}, not in (0, 1]")
    if sampler in ("remdm-cap", "remdm-rescale", "remdm-loop"):
        eta = float(getattr(sampling, "eta", -1.0))
        if not 0.0 <= eta <= 1.0:
            problems.append(f"config.sampling.eta = {eta}, not in [0, 1]")
    if sampler == "remdm-loop":
        t_on, t_off = float(sampling.t_on), float(sampling.t_off)
        alpha_on = float(sampling.alpha_on)
        if not (0.0 < t_off < t_on < 1.0 and 0.0 < alpha_on < 1.0):
            problems.append(
                f"remdm-loop needs 0 < t_off < t_on < 1 and 0 < alpha_on < 1, got t_on={t_on}, "
                f"t_off={t_off}, alpha_on={alpha_on}"
            )
    return problems


def _raise(target, problems: list[str], at_call: bool = False) -> None:
    found = sorted(
        n for n in (*_ATTRIBUTES, *_LOSS_ATTRIBUTES, *_SIGNATURES, *_CALLED) if hasattr(target, n)
    )
    outcome = (
        "Its class is patched, but this instance cannot use it."
        if at_call
        else "Nothing was patched."
    )
    raise TypeError(
        f"mdfast.integrations.mdlm.patch: {_describe(target)} is not an MDLM-family Diffusion "
        f"this patch can serve: {'; '.join(problems)}. Found: {', '.join(found) or 'nothing'}. "
        "Known: the Diffusion of kuleshov-group/mdlm and kuleshov-group/remdm; pass loss=False "
        f"or sampling=False to patch only the part that matches. {outcome}"
    )


# ---------------------------------------------------------------------------------------------
# per-instance state and the replacement methods
# ---------------------------------------------------------------------------------------------


class _State:
    def __init__(self, obj, options: _Options, flavour: str):
        self.options = options
        self.warned: set[str] = set()
        self.warn_once = warn_once_factory(self.warned)
        self.network = Network(obj, options.fuse_output_layer)
        self.stepper = Stepper(obj, self.network, self.warn_once)
        self.flavour = flavour

    def serves(self, obj) -> bool:
        if obj.parameterization == _SERVED:
            return True
        self.warn_once(
            "parameterization",
            f"parameterization={obj.parameterization!r} is left alone (mdfast serves 'subs'); "
            "its loss and samplers run the original code",
        )
        return False


def _state(obj, options: _Options, flavour: str) -> _State:
    st = obj.__dict__.get(_STATE)
    if st is None or st.options is not options:
        problems = _instance_problems(obj, options, flavour)
        if problems:
            _raise(obj, problems, at_call=True)
        st = _State(obj, options, flavour)
        obj.__dict__[_STATE] = st
    return st


def _replacements(originals: dict, options: _Options, flavour: str) -> dict:
    """name -> function(self, ...) for every method this patch replaces."""
    out = {}

    def original(name):
        return originals[name]

    def subs_parameterization(self, logits, xt):
        if self.__dict__.get("_mdfast_raw", False):
            return logits
        return original("_subs_parameterization")(self, logits, xt)

    out["_subs_parameterization"] = subs_parameterization

    if options.loss:

        def _forward_pass_diffusion(self, x0):
            st = _state(self, options, flavour)
            if not st.serves(self):
                return original("_forward_pass_diffusion")(self, x0)
            return forward_pass_diffusion(self, x0, st.network, options.inplace_backward)

        out["_forward_pass_diffusion"] = _forward_pass_diffusion

    if options.sampling:

        def _ddpm_update(self, x, t, dt):
            st = _state(self, options, flavour)
            if not st.serves(self):
                return original("_ddpm_update")(self, x, t, dt)
            return sampling_steps.ddpm_update(st.stepper, self, x, t, dt)

        out["_ddpm_update"] = _ddpm_update

        if flavour == "remdm":

            def _ddpm_caching_update(self, x, t, dt, p_x0=None, conf=None):
                st = _state(self, options, flavour)
                if not st.serves(self):
                    return original("_ddpm_caching_update")(self, x, t, dt, p_x0, conf)
                return sampling_steps.remdm_caching_update(st.stepper, self, x, t, dt, p_x0, conf)

        else:

            def _ddpm_caching_update(self, x, t, dt, p_x0=None):
                st = _state(self, options, flavour)
                if not st.serves(self):
                    return original("_ddpm_caching_update")(self, x, t, dt, p_x0)
                return sampling_steps.mdlm_caching_update(st.stepper, self, x, t, dt, p_x0)

        out["_ddpm_caching_update"] = _ddpm_caching_update

        if "_dfm_caching_update" in originals:

            def _dfm_caching_update(self, x, t, p_x0=None):
                st = _state(self, options, flavour)
                if not st.serves(self):
                    return original("_dfm_caching_update")(self, x, t, p_x0)
                return sampling_steps.dfm_caching_update(st.stepper, self, x, t, p_x0)

            out["_dfm_caching_update"] = _dfm_caching_update

    for name, fn in out.items():
        fn.__name__ = fn.__qualname__ = name
        fn.__doc__ = f"mdfast replacement of {name} (see mdfast.integrations.mdlm)."
        fn.__wrapped__ = originals[name]
    return out


# ---------------------------------------------------------------------------------------------
# patch / unpatch
# ---------------------------------------------------------------------------------------------


def _record_of(target) -> tuple[object, _Record] | None:
    """The patched object (the target, or the class it inherits a patch from) and its record."""
    if not isinstance(target, type) and _RECORD in getattr(target, "__dict__", {}):
        return target, target.__dict__[_RECORD]
    cls = target if isinstance(target, type) else type(target)
    for klass in cls.__mro__:
        if _RECORD in klass.__dict__:
            return klass, klass.__dict__[_RECORD]
    return None


def is_patched(target) -> bool:
    """Whether ``target`` (a Diffusion class or instance) runs mdfast's replacements."""
    return _record_of(target) is not None


def patch(
    target,
    *,
    loss: bool = True,
    sampling: bool = True,
    sample_categorical: bool = True,
    fuse_output_layer: bool | None = None,
    inplace_backward: bool = True,
):
    """Patch an MDLM / ReMDM ``Diffusion`` class (every instance) or one instance in place.

    Args:
        target: the ``Diffusion`` class, or a model instance.
        loss: replace the SUBS loss path (``_forward_pass_diffusion``).
        sampling: replace ``_ddpm_update``, ``_ddpm_caching_update`` and (ReMDM)
            ``_dfm_caching_update``.
        sample_categorical: replace the module-level ``_sample_categorical`` of the module that
            defines the class (shared by every class there) with the exact float64 draw.
        fuse_output_layer: None fuses the backbone's ``output_layer.linear`` into the loss and the
            samplers' token draws when it is valid (checked on the first call), False never, True
            always (and raises where it is not valid).
        inplace_backward: the unfused loss writes its gradient into the logits buffer
            (:func:`mdfast.ops.masked_ce`), saving one B x L x V buffer.

    Returns ``target``. Patching an already patched target does nothing. Raises ``TypeError``
    (nothing patched) when ``target`` does not look like an MDLM-family ``Diffusion``.
    """
    if is_patched(target):
        return target
    options = _Options(loss, sampling, sample_categorical, fuse_output_layer, inplace_backward)
    cls = target if isinstance(target, type) else type(target)
    if not isinstance(cls, type) or not issubclass(cls, nn.Module):
        _raise(target, [f"{cls.__qualname__} is not a torch.nn.Module subclass"])
    problems, flavour = _method_problems(cls, options)
    if problems:
        _raise(target, problems)
    if not isinstance(target, type):
        problems = _instance_problems(target, options, flavour)
        if problems:
            _raise(target, problems)
        target.__dict__.pop(_STATE, None)
        state = _State(target, options, flavour)  # raises for an invalid fuse_output_layer=True

    names = ["_subs_parameterization"]
    if loss:
        names.append("_forward_pass_diffusion")
    if sampling:
        names += ["_ddpm_update", "_ddpm_caching_update"]
        if callable(getattr(cls, "_dfm_caching_update", None)):
            names.append("_dfm_caching_update")
    if isinstance(target, type):
        originals = {n: getattr(cls, n) for n in names}
    else:  # the instance's own bound methods, called with self dropped
        originals = {n: _unbind(getattr(target, n)) for n in names}
    record = _Record(options, flavour=flavour)
    for name, fn in _replacements(originals, options, flavour).items():
        if isinstance(target, type):
            record.originals[name] = cls.__dict__.get(name, _MISSING)
            setattr(cls, name, fn)
        else:
            record.originals[name] = target.__dict__.get(name, _MISSING)
            target.__dict__[name] = types.MethodType(fn, target)
    if sample_categorical:
        record.categorical_module = _patch_categorical(cls.__module__)
    if isinstance(target, type):
        setattr(cls, _RECORD, record)
    else:
        target.__dict__[_RECORD] = record
        target.__dict__[_STATE] = state
        state.serves(target)  # warn now for sedd / d3pm / ar
    return target


def _unbind(bound):
    return lambda self, *args, **kwargs: bound(*args, **kwargs)


def _patch_categorical(module_name: str) -> str | None:
    module = sys.modules.get(module_name)
    original = getattr(module, "_sample_categorical", None)
    if not callable(original):
        return None
    entry = _CATEGORICAL.get(module_name)
    if entry is None:
        entry = _CATEGORICAL[module_name] = [original, 0]
        module._sample_categorical = sampling_steps.make_sample_categorical(original)
    entry[1] += 1
    return module_name


def unpatch(target) -> None:
    """Restore the original methods (and ``_sample_categorical`` once no patch uses it) of a
    target :func:`patch` was called on. Raises ``ValueError`` if it is not patched."""
    found = _record_of(target)
    if found is None or found[0] is not target:
        where = "" if found is None else f" (the patch is on {_describe(found[0])})"
        raise ValueError(
            f"mdfast.integrations.mdlm.unpatch: {_describe(target)} is not patched{where}"
        )
    _, record = found
    is_class = isinstance(target, type)
    for name, previous in record.originals.items():
        if is_class:
            if previous is _MISSING:
                delattr(target, name)
            else:
                setattr(target, name, previous)
        elif previous is _MISSING:
            del target.__dict__[name]
        else:
            target.__dict__[name] = previous
    if is_class:
        delattr(target, _RECORD)
    else:
        del target.__dict__[_RECORD]
        target.__dict__.pop(_STATE, None)
    if record.categorical_module is not None:
        entry = _CATEGORICAL[record.categorical_module]
        entry[1] -= 1
        if entry[1] == 0:
            sys.modules[record.categorical_module]._sample_categorical = entry[0]
            del _CATEGORICAL[record.categorical_module]
