"""Attribution maps from captum: Integrated Gradients, Grad-CAM and Occlusion.

Each function explains one image (1 x 3 x H x W, already normalised like the model's
input) for a target class (the predicted one by default) and returns an `Attribution`
whose `.map` is H x W on the CPU, in the method's own units and NOT normalised, so that
colour bars can show real values:

- "ig"         Integrated Gradients (Sundararajan et al., 2017) of the target logit,
               summed over the three colour channels (signed). Baseline: 0 in the
               normalised input space, i.e. the dataset's mean colour. The map sums to
               about logit(image) - logit(baseline) (completeness).
- "abs_ig"     |IG|: the absolute value of that map (summed over colour channels first,
               then made absolute). Evidence for a class is read from magnitudes: a pixel
               whose IG is strongly negative matters as much as a strongly positive one.
- "gradcam"    Grad-CAM (Selvaraju et al., 2017) of the target logit with ReLU, as in the
               paper, at `default_gradcam_layer(model)` unless another layer is chosen,
               bilinearly upsampled to the image with captum's LayerAttribution.interpolate.
- "occlusion"  Occlusion (Zeiler & Fergus, 2014): the drop of the target logit when a
               square window (1/8 of the image side, by default not overlapping: 64
               windows, one batched pass) is replaced by 0 (the mean colour). The window covers all colour channels, so every
               channel holds the same value; the map is their mean, which keeps the unit
               "logit drop" (a sum would triple it).

All attribute the target class's logit rather than its probability: logits are what
Grad-CAM is defined on and what IG's completeness is stated for.

captum registers hooks (Grad-CAM) and runs many forward passes, so every call holds
`resattn.trace.model_lock(model)`, the lock `trace` and interventions use.
"""
from __future__ import annotations

import time
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch
from torch import nn

from ..errors import ResattnError
from ..trace import attention_modules, model_lock

METHODS = ("abs_ig", "ig", "gradcam", "occlusion")
METHOD_LABELS = {"abs_ig": "|Integrated Gradients|", "ig": "Integrated Gradients (signed)", "gradcam": "Grad-CAM",
                 "occlusion": "Occlusion"}
# The dataset report's methods (agreement.csv's `method` column): Grad-CAM twice, at the
# last attention stage (`default_gradcam_layer`) and at the output of the compared module.
REPORT_METHODS = ("abs_ig", "ig", "grad_cam", "grad_cam_module", "occlusion")
REPORT_METHOD_LABELS = {"abs_ig": "|IG|", "ig": "signed IG", "grad_cam": "Grad-CAM at the last stage",
                        "grad_cam_module": "Grad-CAM at the module's output", "occlusion": "Occlusion"}


@dataclass
class Attribution:
    method: str  # one of METHODS
    map: torch.Tensor  # H x W float32 on the CPU, unnormalised
    target: int  # the class explained
    params: dict = field(default_factory=dict)  # e.g. n_steps, layer, window, stride
    seconds: float = 0.0  # wall time of the computation (set by `attribute`)

    @property
    def label(self) -> str:
        return METHOD_LABELS[self.method]


def default_gradcam_layer(model: nn.Module) -> str:
    """The name of the layer Grad-CAM uses by default: the last attention module of the
    last attention stage (e.g. "stage3.1"; its output, after the module's post-processing
    units). It is the deepest layer whose resolution matches a mask (8 x 8 at 128 px,
    twice the 4 x 4 of `final_units`), and the layer where the last mask acts."""
    modules = attention_modules(model)
    if modules:
        return modules[-1][0]
    if hasattr(model, "final_units"):
        return "final_units"
    raise ResattnError("This model has no attention module; pass the Grad-CAM layer explicitly.")


def _resolve_layer(model: nn.Module, layer: str | nn.Module | None) -> tuple[str, nn.Module]:
    if layer is None:
        layer = default_gradcam_layer(model)
    if isinstance(layer, nn.Module):
        names = [n for n, m in model.named_modules() if m is layer]
        if not names:
            raise ResattnError("The Grad-CAM layer is not part of this model.")
        return names[0], layer
    try:
        return str(layer), model.get_submodule(str(layer))
    except AttributeError:
        raise ResattnError(f"No layer {layer!r} in this model; use a module name such as "
                           f"{default_gradcam_layer(model)!r} or 'final_units'.") from None


def _check_image(image: torch.Tensor) -> None:
    if not isinstance(image, torch.Tensor) or image.ndim != 4 or image.shape[0] != 1 or image.shape[1] != 3:
        shape = tuple(image.shape) if isinstance(image, torch.Tensor) else type(image).__name__
        raise ResattnError(f"Attribution explains one image 1 x 3 x H x W, got {shape}.")


@contextmanager
def _gradients_on(model: nn.Module, image: torch.Tensor):
    """Hold the model's lock, allow autograd (even inside a caller's inference_mode) and
    give a plain copy of the image on the model's device."""
    device = next(model.parameters()).device
    with model_lock(model), torch.inference_mode(False), torch.enable_grad():
        yield image.detach().to(device).clone()


def _target(model: nn.Module, image: torch.Tensor, target: int | None) -> int:
    if target is not None:
        return int(target)
    with torch.no_grad():
        return int(model(image).argmax(dim=1).item())


def integrated_gradients(model: nn.Module, image: torch.Tensor, target: int | None = None, *,
                         n_steps: int = 32, internal_batch_size: int | None = 16) -> Attribution:
    """Integrated Gradients of the target logit, summed over colour channels (see module doc)."""
    from captum.attr import IntegratedGradients

    _check_image(image)
    with _gradients_on(model, image) as x:
        target = _target(model, x, target)
        attr = IntegratedGradients(model).attribute(
            x, baselines=torch.zeros_like(x), target=target, n_steps=int(n_steps),
            internal_batch_size=internal_batch_size)
    return Attribution("ig", attr[0].sum(dim=0).detach().float().cpu(), target, {"n_steps": int(n_steps)})


def absolute_integrated_gradients(model: nn.Module, image: torch.Tensor, target: int | None = None,
                                  **options) -> Attribution:
    """|IG|: Integrated Gradients summed over colour channels, then made absolute."""
    signed = integrated_gradients(model, image, target, **options)
    return Attribution("abs_ig", signed.map.abs(), signed.target, dict(signed.params))


def grad_cam(model: nn.Module, image: torch.Tensor, target: int | None = None, *,
             layer: str | nn.Module | None = None, relu: bool = True) -> Attribution:
    """Grad-CAM of the target logit at `layer` (a module name or module; default
    `default_gradcam_layer`), upsampled bilinearly to the image size."""
    from captum.attr import LayerAttribution, LayerGradCam

    _check_image(image)
    name, module = _resolve_layer(model, layer)
    with _gradients_on(model, image) as x:
        target = _target(model, x, target)
        cam = LayerGradCam(model, module).attribute(x, target=target, relu_attributions=relu)
        layer_size = tuple(cam.shape[-2:])
        cam = LayerAttribution.interpolate(cam, tuple(x.shape[-2:]), interpolate_mode="bilinear")
    return Attribution("gradcam", cam[0, 0].detach().float().cpu(), target,
                       {"layer": name, "layer_size": layer_size, "relu": relu})


def occlusion_window(size: int) -> tuple[int, int]:
    """(window, stride) for an image side of `size` pixels: 1/8 of the side with the stride
    equal to the window (16 / 16 px at 128 px): 64 windows. Half-window strides give
    smoother maps at 3.5 times the cost (225 windows); pass `stride` for them."""
    window = max(1, round(size / 8))
    return window, window


def occlusion(model: nn.Module, image: torch.Tensor, target: int | None = None, *,
              window: int | None = None, stride: int | None = None, perturbations_per_eval: int = 64) -> Attribution:
    """Occlusion with a square window over all colour channels (see module doc)."""
    from captum.attr import Occlusion

    _check_image(image)
    window = int(window or occlusion_window(min(image.shape[-2:]))[0])
    stride = int(stride or window)
    with _gradients_on(model, image) as x, torch.no_grad():
        target = _target(model, x, target)
        attr = Occlusion(model).attribute(x, sliding_window_shapes=(3, window, window), strides=(3, stride, stride),
                                          baselines=0.0, target=target, perturbations_per_eval=perturbations_per_eval)
    return Attribution("occlusion", attr[0].mean(dim=0).detach().float().cpu(), target,
                       {"window": window, "stride": stride})


def attribute(model: nn.Module, image: torch.Tensor, method: str, target: int | None = None, **options) -> Attribution:
    """One attribution by method name ("abs_ig", "ig", "gradcam", "occlusion")."""
    functions = {"abs_ig": absolute_integrated_gradients, "ig": integrated_gradients, "gradcam": grad_cam,
                 "occlusion": occlusion}
    if method not in functions:
        raise ResattnError(f"Unknown attribution method {method!r}: choose one of {', '.join(METHODS)}.")
    start = time.perf_counter()
    result = functions[method](model, image, target, **options)
    result.seconds = time.perf_counter() - start
    return result


def attribute_all(model: nn.Module, image: torch.Tensor, target: int | None = None, *,
                  methods=METHODS, options: dict | None = None) -> dict[str, Attribution]:
    """Every method in `methods` for the same target (the predicted class when None).
    `options` maps a method name to its keyword arguments, e.g. {"ig": {"n_steps": 16}}.
    |IG| and signed IG share one IG computation (with the options of "ig")."""
    _check_image(image)
    options = options or {}
    if target is None:
        with _gradients_on(model, image) as x:
            target = _target(model, x, None)
    signed = None
    if "ig" in methods or "abs_ig" in methods:
        signed = integrated_gradients(model, image, target, **options.get("ig", options.get("abs_ig", {})))
    out = {}
    for m in methods:
        if m == "ig":
            out[m] = signed
        elif m == "abs_ig":
            out[m] = Attribution("abs_ig", signed.map.abs(), signed.target, dict(signed.params))
        else:
            out[m] = attribute(model, image, m, target, **options.get(m, {}))
    return out


def mask_gradients(model: nn.Module, image: torch.Tensor, target: int) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """{module: (M, d logit_target / d H)} for every attention module with a mask, from one
    forward and one backward pass: the soft mask M (C x h x w) and the gradient of the
    target logit at the module's output H = (1 + M)·T or M·T (C x h x w), on the CPU. The
    gradient's spatial means are the class-weighted reduction's channel weights."""
    from ..trace import trace

    _check_image(image)
    with _gradients_on(model, image) as x:
        tr = trace(model, x, grad=True)
        records = [r for r in tr.modules if r.mask is not None]
        if not records:
            return {}
        grads = torch.autograd.grad(tr.logits[0, int(target)], [r.output for r in records])
    return {r.name: (r.mask[0].detach().float().cpu(), g[0].detach().float().cpu()) for r, g in zip(records, grads)}


def report_attributions(model: nn.Module, image: torch.Tensor, target: int, modules: list[str], *,
                        ig_steps: int = 32) -> dict[str, torch.Tensor]:
    """The dataset report's attribution maps of one image (H x W each, CPU, unnormalised):
    "abs_ig", "ig" (one IG computation), "grad_cam" (at `default_gradcam_layer`), one
    "grad_cam_module:<module>" per name in `modules` (Grad-CAM at that attention module's
    output) and "occlusion"."""
    signed = integrated_gradients(model, image, target, n_steps=ig_steps)
    maps = {"abs_ig": signed.map.abs(), "ig": signed.map}
    last = default_gradcam_layer(model)
    cams = {name: grad_cam(model, image, target, layer=name).map for name in dict.fromkeys([*modules, last])}
    maps["grad_cam"] = cams[last]
    maps.update({f"grad_cam_module:{name}": cams[name] for name in modules})
    maps["occlusion"] = occlusion(model, image, target).map
    return maps
