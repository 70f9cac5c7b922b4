"""LoRA (low-rank adaptation) for the book's models, in plain PyTorch (lesson 12).

A frozen linear layer y = x·Wᵀ gets a trainable low-rank bypass:

    y = x·Wᵀ + (α/r) · x·Aᵀ·Bᵀ,   i.e.   W′ = W + ΔW,   ΔW = (α/r)·B·A

with A: [r, in_features], B: [out_features, r] and r much smaller than either dimension.
A starts like PEFT's (Kaiming-uniform, a=√5) and B at zero, so ΔW = 0 and the adapted
model starts out identical to the base. Only A and B train, and only they are saved: an
"adapter" file of a few hundred kilobytes instead of a full checkpoint.

    add_lora(model, targets=("q_proj", "v_proj"), r=8, alpha=16)  # wrap, freeze the rest
    ...train...
    save_lora(model, "song.safetensors")          # A and B only, with r/alpha/targets
    load_lora(base_model, "song.safetensors")     # wraps the same layers, loads A and B
    merge_lora(model) / unmerge_lora(model)       # fold ΔW into W (no extra latency) and back
    merge_and_unload(model)                       # a plain model again, ΔW folded in
    combine_adapters([a, b], [0.7, 0.3])          # ΔW = 0.7·ΔW_a + 0.3·ΔW_b, exactly

Targets are matched against module names the way PEFT matches `target_modules`: a module
is chosen when its name equals a target or ends with "." + target. In the book's GPT the
linear layers are blocks.{i}.self_attn.{q_proj,k_proj,v_proj,out_proj} and
blocks.{i}.ffn.{up,down} (lm_head shares its matrix with the token embedding: see add_lora).
The equations and initialisation follow PEFT's LoRA (`peft.tuners.lora`), and
tests/test_lora.py checks that both give the same outputs for the same A and B.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch import nn

__all__ = [
    "LoRAError", "LoRALinear", "Adapter", "add_lora", "lora_layers", "lora_parameters",
    "lora_state_dict", "get_adapter", "save_lora", "read_adapter", "load_lora", "merge_lora",
    "unmerge_lora", "merge_and_unload", "unload_lora", "combine_adapters",
]

FORMAT = "encoding_world.lora/1"   # written into every adapter file's metadata


class LoRAError(ValueError):
    """An adapter that does not fit the model, or a file that is not an adapter."""


class LoRALinear(nn.Module):
    """nn.Linear `base` (frozen) plus a trainable low-rank update (α/r)·B·A."""

    def __init__(self, base: nn.Linear, r: int = 8, alpha: float = 16.0, dropout: float = 0.0):
        super().__init__()
        if not isinstance(base, nn.Linear):
            raise TypeError(f"LoRALinear wraps an nn.Linear, got {type(base).__name__}")
        if not (isinstance(r, int) and r > 0):
            raise ValueError(f"the rank r must be a positive integer, got {r!r}")
        self.base = base
        self.r, self.alpha = r, float(alpha)
        self.scaling = self.alpha / r
        factory = {"device": base.weight.device, "dtype": base.weight.dtype}
        self.lora_A = nn.Parameter(torch.empty(r, base.in_features, **factory))
        self.lora_B = nn.Parameter(torch.zeros(base.out_features, r, **factory))
        nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))   # as nn.Linear and PEFT do
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.merged = False
        for p in self.base.parameters():
            p.requires_grad_(False)

    def delta_weight(self) -> torch.Tensor:
        """ΔW = (α/r)·B·A, shaped like the base weight [out_features, in_features]."""
        return (self.lora_B @ self.lora_A) * self.scaling

    def forward(self, x):
        out = self.base(x)
        if self.merged:              # ΔW already sits inside base.weight
            return out
        return out + (self.dropout(x) @ self.lora_A.T @ self.lora_B.T) * self.scaling

    @torch.no_grad()
    def merge(self) -> None:
        """W ← W + ΔW: the layer becomes one matrix multiply again."""
        if not self.merged:
            self.base.weight += self.delta_weight()
            self.merged = True

    @torch.no_grad()
    def unmerge(self) -> None:
        """W ← W − ΔW (equal to the original W up to float rounding)."""
        if self.merged:
            self.base.weight -= self.delta_weight()
            self.merged = False

    def extra_repr(self) -> str:
        return f"r={self.r}, alpha={self.alpha:g}, merged={self.merged}"


def _matches(name: str, targets) -> bool:
    return any(name == t or name.endswith("." + t) for t in targets)


def _set_module(model: nn.Module, name: str, module: nn.Module) -> None:
    parent, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, child, module)


def add_lora(model: nn.Module, targets=("q_proj", "v_proj"), r: int = 8, alpha: float = 16.0,
             dropout: float = 0.0) -> list[str]:
    """Wrap every nn.Linear whose name matches `targets` in a LoRALinear, freeze all other
    parameters, and return the wrapped modules' names (in model order)."""
    if isinstance(targets, str):
        targets = (targets,)
    if lora_layers(model):
        raise LoRAError("the model already has LoRA layers: call unload_lora(model) or "
                        "merge_and_unload(model) first")
    linears = {name: m for name, m in model.named_modules() if isinstance(m, nn.Linear)}
    chosen = [name for name in linears if _matches(name, targets)]
    if not chosen:
        raise LoRAError(f"no nn.Linear matches targets {list(targets)}; the model's linear layers "
                        f"are: {', '.join(linears)}")
    # A weight shared with another module (the GPT's lm_head is the token embedding) would
    # be changed in both places by merging: refuse it rather than corrupt the model.
    owners = {}
    for name, m in model.named_modules():
        for pname, p in m.named_parameters(recurse=False):
            owners.setdefault(id(p), []).append(f"{name}.{pname}" if name else pname)
    for name in chosen:
        shared = owners[id(linears[name].weight)]
        if len(shared) > 1:
            raise LoRAError(f"{name}.weight is shared with {', '.join(s for s in shared if s != name + '.weight')} "
                            f"(tied weights): merging an adapter into it would change both; leave "
                            f"{name} out of targets")
    for p in model.parameters():
        p.requires_grad_(False)
    for name in chosen:
        _set_module(model, name, LoRALinear(linears[name], r=r, alpha=alpha, dropout=dropout))
    return chosen


def lora_layers(model: nn.Module) -> dict[str, LoRALinear]:
    """The model's LoRALinear modules by name."""
    return {name: m for name, m in model.named_modules() if isinstance(m, LoRALinear)}


def lora_parameters(model: nn.Module) -> list[nn.Parameter]:
    """Every A and B matrix (what the optimizer should get)."""
    return [p for layer in lora_layers(model).values() for p in (layer.lora_A, layer.lora_B)]


def lora_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """{"<module>.lora_A": A, "<module>.lora_B": B, ...}: the adapter's tensors only."""
    return {f"{name}.{key}": getattr(layer, key).detach()
            for name, layer in lora_layers(model).items() for key in ("lora_A", "lora_B")}


@dataclass
class Adapter:
    """An adapter apart from any model: its rank, α, module names and A/B tensors."""
    r: int
    alpha: float
    modules: list[str]
    tensors: dict[str, torch.Tensor]                 # "<module>.lora_A" / "<module>.lora_B"
    targets: list[str] = field(default_factory=list)  # the patterns it was made with
    info: dict[str, str] = field(default_factory=dict)  # free text kept in the file

    @property
    def scaling(self) -> float:
        return self.alpha / self.r

    def delta_weight(self, module: str) -> torch.Tensor:
        return (self.tensors[f"{module}.lora_B"] @ self.tensors[f"{module}.lora_A"]) * self.scaling

    def num_parameters(self) -> int:
        return sum(t.numel() for t in self.tensors.values())


def get_adapter(model: nn.Module, targets=()) -> Adapter:
    """The model's adapter (copies of A and B)."""
    layers = lora_layers(model)
    if not layers:
        raise LoRAError("the model has no LoRA layers: call add_lora or load_lora first")
    ranks = {(m.r, m.alpha) for m in layers.values()}
    if len(ranks) != 1:
        raise LoRAError(f"the model's LoRA layers have different (r, alpha): {sorted(ranks)}")
    (r, alpha), = ranks
    tensors = {k: v.clone().cpu().contiguous() for k, v in lora_state_dict(model).items()}
    return Adapter(r, alpha, list(layers), tensors, list(targets) or sorted({n.rpartition(".")[2] for n in layers}))


def save_lora(model_or_adapter, path, **info: str) -> Path:
    """Write only the adapter (A and B of every LoRA layer) as safetensors, with r, alpha,
    the module names and the targets in the file's metadata (plus any text in `info`)."""
    adapter = model_or_adapter if isinstance(model_or_adapter, Adapter) else get_adapter(model_or_adapter)
    metadata = {"format": FORMAT, "r": str(adapter.r), "alpha": repr(adapter.alpha),
                "modules": json.dumps(adapter.modules), "targets": json.dumps(adapter.targets),
                **adapter.info, **{k: str(v) for k, v in info.items()}}
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in adapter.tensors.items()}, str(path), metadata=metadata)
    return path


def read_adapter(path) -> Adapter:
    """An adapter file written by save_lora, checked for completeness."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no adapter at {path}")
    try:
        with safe_open(str(path), framework="pt") as f:
            metadata = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except Exception as err:  # safetensors raises its own error types for damaged files
        raise LoRAError(f"{path} is not a readable safetensors file ({type(err).__name__}: {err})") from err
    if metadata.get("format") != FORMAT:
        raise LoRAError(f"{path} is not an adapter written by encoding_world.lora.save_lora "
                        f"(its metadata has format {metadata.get('format')!r}); a full model checkpoint "
                        f"is loaded with load_pretrained / load_checkpoint instead")
    known = {"format", "r", "alpha", "modules", "targets"}
    adapter = Adapter(int(metadata["r"]), float(metadata["alpha"]), json.loads(metadata["modules"]), tensors,
                      json.loads(metadata["targets"]), {k: v for k, v in metadata.items() if k not in known})
    expected = {f"{m}.{k}" for m in adapter.modules for k in ("lora_A", "lora_B")}
    if set(tensors) != expected:
        raise LoRAError(f"{path} is incomplete or damaged: tensors {sorted(set(tensors) ^ expected)} "
                        f"do not agree with its list of modules")
    return adapter


def load_lora(model: nn.Module, adapter, dropout: float = 0.0) -> Adapter:
    """Put an adapter (an Adapter or a file from save_lora) into `model`.

    A model without LoRA layers gets them first (the adapter's modules, rank and α) and its
    base is frozen. A model that already has LoRA layers (e.g. another adapter, to swap)
    must have the same modules, rank and α; only A and B are replaced. Nothing changes in
    the model unless every check passes.
    """
    if not isinstance(adapter, Adapter):
        adapter = read_adapter(adapter)
    layers = lora_layers(model)
    if layers:
        if list(layers) != adapter.modules:
            raise LoRAError(f"the adapter is for modules {adapter.modules}, the model's LoRA layers are "
                            f"{list(layers)}: call unload_lora(model) before loading it")
        for name, layer in layers.items():
            if (layer.r, layer.alpha) != (adapter.r, adapter.alpha):
                raise LoRAError(f"{name} has r={layer.r}, alpha={layer.alpha:g}; the adapter has "
                                f"r={adapter.r}, alpha={adapter.alpha:g}: call unload_lora(model) first")
            if layer.merged:
                raise LoRAError(f"{name} holds a merged adapter: call unmerge_lora(model) before swapping")
        linears = {name: layer.base for name, layer in layers.items()}
    else:
        modules = dict(model.named_modules())
        missing = [m for m in adapter.modules if not isinstance(modules.get(m), nn.Linear)]
        if missing:
            raise LoRAError(f"the adapter targets modules this model has no nn.Linear for: {missing}; "
                            f"was it trained for another model?")
        linears = {m: modules[m] for m in adapter.modules}
    for name, linear in linears.items():
        want = {"lora_A": (adapter.r, linear.in_features), "lora_B": (linear.out_features, adapter.r)}
        for key, shape in want.items():
            got = tuple(adapter.tensors[f"{name}.{key}"].shape)
            if got != shape:
                raise LoRAError(f"{name}.{key} has shape {list(got)} in the adapter but this model needs "
                                f"{list(shape)}: the adapter was trained for a model of another size")
    if not layers:
        add_lora(model, targets=adapter.modules, r=adapter.r, alpha=adapter.alpha, dropout=dropout)
        layers = lora_layers(model)
    with torch.no_grad():
        for name, layer in layers.items():
            layer.lora_A.copy_(adapter.tensors[f"{name}.lora_A"])
            layer.lora_B.copy_(adapter.tensors[f"{name}.lora_B"])
    return adapter


def merge_lora(model: nn.Module) -> None:
    for layer in lora_layers(model).values():
        layer.merge()


def unmerge_lora(model: nn.Module) -> None:
    for layer in lora_layers(model).values():
        layer.unmerge()


def _unwrap(model: nn.Module, merge: bool) -> nn.Module:
    for name, layer in lora_layers(model).items():
        if merge:
            layer.merge()
        else:
            layer.unmerge()
        _set_module(model, name, layer.base)
    for p in model.parameters():
        p.requires_grad_(True)
    return model


def merge_and_unload(model: nn.Module) -> nn.Module:
    """Fold every ΔW into its base weight and put the plain nn.Linear back: the model has
    exactly the base's structure and parameter count again (PEFT's merge_and_unload)."""
    return _unwrap(model, merge=True)


def unload_lora(model: nn.Module) -> nn.Module:
    """Remove the LoRA layers without merging: the base model as it was."""
    return _unwrap(model, merge=False)


def combine_adapters(adapters, weights) -> Adapter:
    """One adapter whose update is Σᵢ wᵢ·ΔWᵢ for every module, exactly.

    The ranks add up: A = [w₁s₁A₁; w₂s₂A₂; …] stacked by rows, B = [B₁ B₂ …] side by side,
    α = r (scaling 1), so B·A = Σᵢ wᵢ·sᵢ·Bᵢ·Aᵢ = Σᵢ wᵢ·ΔWᵢ. This is PEFT's
    add_weighted_adapter(..., combination_type="cat"). Adding A's and B's of equal rank
    instead would not do it: (B₁+B₂)(A₁+A₂) has cross terms B₁A₂ + B₂A₁.
    """
    adapters = [a if isinstance(a, Adapter) else read_adapter(a) for a in adapters]
    weights = [float(w) for w in weights]
    if not adapters or len(adapters) != len(weights):
        raise ValueError(f"give one weight per adapter: {len(adapters)} adapters, {len(weights)} weights")
    modules = adapters[0].modules
    for a in adapters[1:]:
        if a.modules != modules:
            raise LoRAError(f"adapters for different modules cannot be combined: {modules} vs {a.modules}")
    r = sum(a.r for a in adapters)
    tensors = {}
    for m in modules:
        tensors[f"{m}.lora_A"] = torch.cat([w * a.scaling * a.tensors[f"{m}.lora_A"]
                                            for a, w in zip(adapters, weights)])
        tensors[f"{m}.lora_B"] = torch.cat([a.tensors[f"{m}.lora_B"] for a in adapters], dim=1)
    mix = " + ".join(f"{w:g}*{a.info.get('name', f'adapter{i}')}" for i, (a, w) in enumerate(zip(adapters, weights)))
    return Adapter(r, float(r), list(modules), tensors, list(adapters[0].targets), {"name": mix})
