"""How a task runs fast on its device: ``torch.compile`` of its networks, channels-last CNNs and
TF32 matrix products.

:func:`glimpse.run.train` calls :func:`prepare_for_device` once, after the task and the trainer
are built and before fitting:

* **Compilation** (``model.compile=true``). Each network a task lists in
  :attr:`~glimpse.tasks.base.GlimpseTask.NETWORKS` (the ``nn.Module`` s that compute, not the
  LightningModule's Python logic: losses, matching, logging, EMA updates stay eager) is compiled
  in place with :meth:`torch.nn.Module.compile`. The module tree is unchanged, so parameter
  names, ``state_dict()`` keys and checkpoints are those of the eager network (no ``_orig_mod.``
  prefix): a compiled run's checkpoint loads into an uncompiled task and back. A deep copy of
  a compiled module is an eager one (torch drops the compiled call when copying), so the
  momentum teachers, built by copying the student before compilation, are compiled on their
  own, and the EMA copy of Lightning's ``EMAWeightAveraging`` (whose parameters are only swapped
  in and out, never called) stays eager. Python loops over time (the scratch recurrent cells,
  the captioning decoders) are unrolled into the graph; a batch of another shape (another
  caption length, DINO's local crops, DETR's padded sizes, a sampled prefix) compiles another
  graph, made shape-generic on the second size with ``compile_dynamic: null`` (torch's
  automatic dynamic shapes). Every module compiled this way shares one code object
  (``nn.Module``'s call), whose graphs dynamo caps at ``recompile_limit`` (8) in all, so
  :func:`compile_networks` raises that cap by :data:`GRAPHS_PER_NETWORK` graphs for each network
  it compiles; past it a network runs eagerly (with dynamo's warning). torch.nn's fused
  recurrent layers (``nn.RNN``, ``nn.LSTM``, ``nn.GRU``: cuDNN kernels, ``impl=fused``) are not
  traced by dynamo, which then runs the whole network holding one eagerly; a warning says so
  (``impl=scratch`` compiles the cells' loop).
* **Channels-last CNNs** on CUDA: the convolutional backbones (torchvision ResNets, the
  captioning encoder, DETR's backbone, CLIP's modified ResNet) get NHWC weights, and cuDNN then
  runs their convolutions in NHWC, the layout of tensor cores, converting the input at the
  first convolution (a convolution runs channels-last when its input *or* its weight is).
* **TF32** on Ampere and newer GPUs: float32 matrix products may use TF32 tensor cores
  (``torch.set_float32_matmul_precision("high")``; cuDNN's convolutions already do by default).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
import torch._dynamo
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from torch import nn
from torchvision.models import ResNet

from glimpse.errors import ConfigError
from glimpse.models.captioning import CaptionEncoder
from glimpse.models.clip_resnet import ModifiedResNet
from glimpse.models.detr import Backbone
from glimpse.tasks.base import GlimpseTask

log = logging.getLogger(__name__)

#: The keys of every ``model`` config that :class:`CompileSettings` reads (conf/train.yaml).
COMPILE_KEYS = ("compile", "compile_mode", "compile_dynamic")
#: torch.compile's modes.
COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")
#: Graphs (shapes, train and eval mode, with and without gradients) allowed per compiled
#: network before it falls back to eager: dynamo's own per-function default.
GRAPHS_PER_NETWORK = 8
#: The networks run channels-last on CUDA.
CONVOLUTIONAL_BACKBONES: tuple[type[nn.Module], ...] = (
    ResNet,
    CaptionEncoder,
    Backbone,
    ModifiedResNet,
)


@dataclass(frozen=True)
class CompileSettings:
    """What ``model.compile``, ``model.compile_mode`` and ``model.compile_dynamic`` ask for.

    Attributes:
        enabled: compile the task's networks.
        mode: torch.compile's ``mode`` (:data:`COMPILE_MODES`).
        dynamic: torch.compile's ``dynamic``: None compiles for the first shape and makes the
            graph shape-generic when a second one comes; True shape-generic at once; False one
            graph per shape.
        backend: torch.compile's ``backend`` (``inductor``; the benchmarks' CPU mode uses
            ``aot_eager``, which traces the same graphs without generating kernels).
    """

    enabled: bool = False
    mode: str = "default"
    dynamic: bool | None = None
    backend: str = "inductor"

    @classmethod
    def from_model_config(cls, model: Mapping[str, Any]) -> CompileSettings:
        """The settings of a ``model`` config (missing keys: not compiled); ConfigError naming
        the key for a value that is not a boolean or not a known mode."""
        enabled = model.get("compile", False)
        mode = model.get("compile_mode") or "default"
        dynamic = model.get("compile_dynamic")
        if not isinstance(enabled, bool) or not (dynamic is None or isinstance(dynamic, bool)):
            raise ConfigError(
                f"model.compile={enabled!r} must be true or false and model.compile_dynamic="
                f"{dynamic!r} true, false or null."
            )
        if mode not in COMPILE_MODES:
            raise ConfigError(
                f"model.compile_mode={mode!r} must be one of {', '.join(COMPILE_MODES)}."
            )
        return cls(enabled=enabled, mode=mode, dynamic=dynamic)


def build_task(model: DictConfig | Mapping[str, Any], spec: dict[str, Any]) -> GlimpseTask:
    """The task of a ``model`` config for the DataSpec dict ``spec``: the config's ``_target_``
    instantiated with every key but :data:`COMPILE_KEYS`, which are run options (read by
    :meth:`CompileSettings.from_model_config`), not the task's hyperparameters."""
    config = OmegaConf.to_container(model, resolve=True) if isinstance(model, DictConfig) else model
    arguments = {key: value for key, value in config.items() if key not in COMPILE_KEYS}
    return instantiate(arguments, spec=spec, _recursive_=False)


def compile_networks(task: GlimpseTask, settings: CompileSettings) -> list[str]:
    """Compile, in place, each of ``task.NETWORKS`` (dotted submodule names) with
    ``settings``, and raise dynamo's cap on graphs by :data:`GRAPHS_PER_NETWORK` for each
    (module docstring); returns the names. Compiling an already
    compiled module compiles it anew."""
    compiled = list(task.NETWORKS)
    for name in compiled:
        module = task.get_submodule(name)
        module.compile(backend=settings.backend, mode=settings.mode, dynamic=settings.dynamic)
        fused = [type(m).__name__ for m in module.modules() if isinstance(m, nn.RNNBase)]
        if fused:
            log.warning(
                "model.compile: %s holds a torch.nn.%s, which torch.compile does not trace, so "
                "it runs eagerly (cuDNN's fused kernels on a GPU); model.net.impl=scratch "
                "compiles the recurrent cells instead.",
                name,
                fused[0],
            )
    torch._dynamo.config.recompile_limit += GRAPHS_PER_NETWORK * len(compiled)
    log.info(
        "torch.compile (backend %s, mode %s, dynamic %s): %s",
        settings.backend,
        settings.mode,
        settings.dynamic,
        ", ".join(compiled),
    )
    return compiled


def is_compiled(module: nn.Module) -> bool:
    """Whether ``module``'s calls go through torch.compile (:meth:`nn.Module.compile`)."""
    return module._compiled_call_impl is not None


def channels_last_backbones(task: nn.Module) -> list[str]:
    """Convert every :data:`CONVOLUTIONAL_BACKBONES` module of ``task`` (the outermost, once)
    to ``torch.channels_last``; returns their names."""
    converted: list[str] = []
    for name, module in task.named_modules():
        inside = any(name.startswith(f"{done}.") for done in converted)
        if isinstance(module, CONVOLUTIONAL_BACKBONES) and not inside:
            module.to(memory_format=torch.channels_last)
            converted.append(name)
    return converted


def allow_tf32(device: torch.device) -> bool:
    """On a CUDA device of compute capability 8.0 or more (Ampere and newer), let float32
    matrix products use TF32 tensor cores (``torch.set_float32_matmul_precision("high")``: a
    10-bit mantissa for the products, float32 accumulation); returns whether it did."""
    if device.type != "cuda" or torch.cuda.get_device_capability(device)[0] < 8:
        return False
    torch.set_float32_matmul_precision("high")
    return True


def prepare_for_device(task: GlimpseTask, device: torch.device, settings: CompileSettings) -> None:
    """Everything of the module docstring that applies to a run of ``task`` on ``device``:
    TF32 and channels-last CNNs on CUDA, then compilation when ``settings.enabled``."""
    if device.type == "cuda":
        allow_tf32(device)
        converted = channels_last_backbones(task)
        if converted:
            log.info("Channels-last on %s: %s", device, ", ".join(converted))
    if settings.enabled:
        compile_networks(task, settings)
