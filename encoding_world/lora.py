"""LoRA (low-rank adaptation) for the book's models, in plain PyTorch (lesson 15).

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

An embedding table E [num_embeddings, dim] is adapted the same way (LoRAEmbedding):
E′ = E + (α/r)·B·A with A: [r, dim], B: [num_embeddings, r], so a token's vector moves by
(α/r)·B[token]·A. When the model's output layer is tied to the embedding (the GPT's
lm_head *is* token_embedding, lesson 12), targeting the embedding adapts both: the head
computes h·E′ᵀ with the same A and B (TiedLoRAHead), and merging changes the one shared
matrix, as it should.

Targets are matched against module names the way PEFT matches `target_modules`: a module
is chosen when its name equals a target or ends with "." + target. In the book's GPT the
linear layers are blocks.{i}.self_attn.{q_proj,k_proj,v_proj,out_proj} and
blocks.{i}.ffn.{up,down}; the embeddings are token_embedding and position_embedding.
The equations follow PEFT's LoRA (`peft.tuners.lora`), and tests/test_lora.py checks that
both give the same outputs for the same A and B (for the embedding and the tied head, on an
untied copy of the model: PEFT's LoRA knows nothing of our GPT's tying).
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors import safe_open
from safetensors.torch import save_file
from torch import nn

from .checks import check_finite, check_number

__all__ = [
    "LoRAError", "LoRALinear", "LoRAEmbedding", "TiedLoRAHead", "Adapter", "add_lora", "lora_layers", "lora_parameters",
    "lora_state_dict", "get_adapter", "save_lora", "read_adapter", "load_lora", "merge_lora",
    "unmerge_lora", "merge_and_unload", "unload_lora", "combine_adapters",
]

FORMAT = "encoding_world.lora/1"   # written into every adapter file's metadata


class LoRAError(ValueError):
    """An adapter that does not fit the model, or a file that is not an adapter."""


def _check_rank_and_alpha(r, alpha) -> None:
    if not (isinstance(r, int) and r > 0):
        raise ValueError(f"the rank r must be a positive integer, got {r!r}")
    check_number("alpha", alpha)


class _LoRALayer(nn.Module):
    """What LoRALinear and LoRAEmbedding share: a frozen base whose weight has `rows` × `cols`
    entries, A: [r, cols] drawn at random, B: [rows, r] at zero, and the update
    ΔW = (α/r)·B·A, merged into the base weight and taken out again."""

    def __init__(self, base: nn.Module, r: int, alpha: float, rows: int, cols: int):
        super().__init__()
        _check_rank_and_alpha(r, alpha)
        self.base = base
        self.r, self.alpha = r, float(alpha)
        self.scaling = self.alpha / r
        factory = {"device": base.weight.device, "dtype": base.weight.dtype}
        self.lora_A = nn.Parameter(torch.empty(r, cols, **factory))
        self.lora_B = nn.Parameter(torch.zeros(rows, r, **factory))
        nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))   # as nn.Linear and PEFT's linear LoRA do
        self.merged = False
        for p in self.base.parameters():
            p.requires_grad_(False)

    def delta_weight(self) -> torch.Tensor:
        """ΔW = (α/r)·B·A, shaped like the base weight ([out, in] for a linear layer,
        [num_embeddings, embedding_dim] for an embedding)."""
        return (self.lora_B @ self.lora_A) * self.scaling

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


class LoRALinear(_LoRALayer):
    """nn.Linear `base` (frozen) plus a trainable low-rank update (α/r)·B·A."""

    def __init__(self, base: nn.Linear, r: int = 8, alpha: float = 16.0, dropout: float = 0.0):
        if not isinstance(base, nn.Linear):
            raise TypeError(f"LoRALinear wraps an nn.Linear, got {type(base).__name__}")
        super().__init__(base, r, alpha, rows=base.out_features, cols=base.in_features)
        dropout = check_number("dropout", dropout, low=0, high=1, high_open=True)
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()

    def forward(self, x):
        out = self.base(x)
        if self.merged:              # ΔW already sits inside base.weight
            return out
        return out + (self.dropout(x) @ self.lora_A.T @ self.lora_B.T) * self.scaling


class LoRAEmbedding(_LoRALayer):
    """nn.Embedding `base` (frozen) plus a trainable low-rank update of its table, (α/r)·B·A.

    A: [r, embedding_dim], B: [num_embeddings, r]; looking up token t adds (α/r)·B[t]·A to
    its vector. B starts at zero (ΔE = 0), A random: the same roles as in LoRALinear, so
    that a tied output layer can use A and B as a LoRALinear would (TiedLoRAHead). PEFT
    stores the same two matrices transposed (lora_embedding_A = Bᵀ, lora_embedding_B = Aᵀ)
    and draws its random one from N(0, 1); we keep the Kaiming rule of the linear layers,
    which gives the update the same scale wherever it is applied. There is no dropout on
    this path (PEFT has none either): the input is a token id, not a vector.
    """

    def __init__(self, base: nn.Embedding, r: int = 8, alpha: float = 16.0):
        if not isinstance(base, nn.Embedding):
            raise TypeError(f"LoRAEmbedding wraps an nn.Embedding, got {type(base).__name__}")
        if base.max_norm is not None:
            raise ValueError("LoRAEmbedding does not support an nn.Embedding with max_norm "
                             "(the renormalisation would apply to E, not to E + ΔE)")
        super().__init__(base, r, alpha, rows=base.num_embeddings, cols=base.embedding_dim)

    def forward(self, ids):
        out = self.base(ids)
        if self.merged:
            return out
        # Look up B's rows (r numbers per token), then map them to vectors with A: the
        # full-size ΔE is never formed.
        rows = F.embedding(ids, self.lora_B, padding_idx=self.base.padding_idx)
        return out + (rows @ self.lora_A) * self.scaling


class TiedLoRAHead(nn.Module):
    """An output layer whose weight is a LoRAEmbedding's table (weight tying).

    The head computes logits = h·E′ᵀ = h·Eᵀ + (α/r)·(h·Aᵀ)·Bᵀ with the embedding's own A
    and B: one adapted matrix reads tokens in and writes them out, as the base model's one
    matrix did. It owns no parameters (A and B are trained, saved and merged with the
    embedding) and follows the embedding's merged state: once ΔE sits in the shared matrix,
    adding it again would count it twice.
    """

    def __init__(self, base: nn.Linear, embedding: LoRAEmbedding):
        super().__init__()
        if base.weight is not embedding.base.weight:
            raise LoRAError("TiedLoRAHead needs a linear layer whose weight is the embedding's table")
        self.base = base
        self._embedding = (embedding,)   # a reference, not a submodule: its A and B are counted once

    @property
    def embedding(self) -> LoRAEmbedding:
        return self._embedding[0]

    def forward(self, h):
        out = self.base(h)
        emb = self.embedding
        if emb.merged:
            return out
        return out + (h @ emb.lora_A.T @ emb.lora_B.T) * emb.scaling

    def extra_repr(self) -> str:
        return "adapted with the tied embedding's A and B"


def _matches(name: str, targets) -> bool:
    return any(name == t or name.endswith("." + t) for t in targets)


def _set_module(model: nn.Module, name: str, module: nn.Module) -> None:
    parent, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, child, module)


def add_lora(model: nn.Module, targets=("q_proj", "v_proj"), r: int = 8, alpha: float = 16.0,
             dropout: float = 0.0) -> list[str]:
    """Wrap every nn.Linear and nn.Embedding whose name matches `targets` (in a LoRALinear
    or a LoRAEmbedding), freeze all other parameters, and return the wrapped modules' names
    in model order. `dropout` applies to the linear layers' LoRA path.

    A linear layer whose weight *is* a targeted embedding's table (weight tying, like the
    GPT's lm_head) becomes a TiedLoRAHead that applies the embedding's update as well; it
    is not in the returned list, because it has no A and B of its own.
    """
    if isinstance(targets, str):
        targets = (targets,)
    _check_rank_and_alpha(r, alpha)        # before anything in the model changes
    check_number("dropout", dropout, low=0, high=1, high_open=True)
    if lora_layers(model):
        raise LoRAError("the model already has LoRA layers: call unload_lora(model) or "
                        "merge_and_unload(model) first")
    candidates = {name: m for name, m in model.named_modules() if isinstance(m, (nn.Linear, nn.Embedding))}
    chosen = [name for name in candidates if _matches(name, targets)]
    if not chosen:
        raise LoRAError(f"no nn.Linear or nn.Embedding matches targets {list(targets)}; the model's are: "
                        f"{', '.join(candidates)}")
    # A weight shared between modules (the GPT's lm_head is its token embedding) must get one
    # update seen by all of them: the embedding's. An adapter of the head's own would be
    # merged into the shared matrix and change the embedding behind its back.
    owners = {}
    for name, m in model.named_modules():
        for pname, p in m.named_parameters(recurse=False):
            owners.setdefault(id(p), []).append(f"{name}.{pname}" if name else pname)
    tied_heads = {}                                   # head's name -> embedding's name
    for name in chosen:
        shared = [o for o in owners[id(candidates[name].weight)] if o != f"{name}.weight"]
        if not shared:
            continue
        if isinstance(candidates[name], nn.Linear):
            embeddings = [o.rpartition(".")[0] for o in shared
                          if isinstance(candidates.get(o.rpartition(".")[0]), nn.Embedding)]
            hint = (f"target the embedding ({', '.join(embeddings)}) instead: {name} then uses its adapter"
                    if embeddings else f"leave {name} out of targets")
            raise LoRAError(f"{name}.weight is shared with {', '.join(shared)} (tied weights): an adapter "
                            f"of its own would change both when merged; {hint}")
        for other in shared:
            head, _, pname = other.rpartition(".")
            if pname != "weight" or not isinstance(candidates.get(head), nn.Linear):
                raise LoRAError(f"{name}.weight is also {other}, which LoRA cannot follow; leave {name} "
                                f"out of targets")
            tied_heads[head] = name
    for p in model.parameters():
        p.requires_grad_(False)
    for name in chosen:
        module = candidates[name]
        _set_module(model, name, LoRALinear(module, r=r, alpha=alpha, dropout=dropout)
                    if isinstance(module, nn.Linear) else LoRAEmbedding(module, r=r, alpha=alpha))
    for head, embedding in tied_heads.items():
        _set_module(model, head, TiedLoRAHead(candidates[head], model.get_submodule(embedding)))
    return chosen


def lora_layers(model: nn.Module) -> dict[str, LoRALinear | LoRAEmbedding]:
    """The model's LoRA layers (those that own an A and a B) by name."""
    return {name: m for name, m in model.named_modules() if isinstance(m, (LoRALinear, LoRAEmbedding))}


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

    def delta_shape(self, module: str) -> tuple[int, int]:
        """The shape of ΔW for `module` (B's rows × A's columns), without computing it."""
        return self.tensors[f"{module}.lora_B"].shape[0], self.tensors[f"{module}.lora_A"].shape[1]

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
    _check_values(adapter)           # a diverged adapter would only be refused when loaded
    metadata = {"format": FORMAT, "r": str(adapter.r), "alpha": repr(adapter.alpha),
                "modules": json.dumps(adapter.modules), "targets": json.dumps(adapter.targets),
                **adapter.info, **{k: str(v) for k, v in info.items()}}
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in adapter.tensors.items()}, str(path), metadata=metadata)
    return path


def read_adapter(path) -> Adapter:
    """An adapter file written by save_lora, checked for completeness and finite values."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no adapter at {path}" + (" (it is a folder: give the adapter file inside it)"
                                                           if path.is_dir() else ""))
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
    try:
        adapter = Adapter(int(metadata["r"]), float(metadata["alpha"]), json.loads(metadata["modules"]), tensors,
                          json.loads(metadata["targets"]), {k: v for k, v in metadata.items() if k not in known})
    except (KeyError, ValueError) as err:
        raise LoRAError(f"{path} is damaged: its metadata (r, alpha, modules, targets) cannot be read "
                        f"({type(err).__name__}: {err}); save the adapter again with save_lora") from None
    expected = {f"{m}.{k}" for m in adapter.modules for k in ("lora_A", "lora_B")}
    if set(tensors) != expected:
        raise LoRAError(f"{path} is incomplete or damaged: tensors {sorted(set(tensors) ^ expected)} "
                        f"do not agree with its list of modules")
    _check_values(adapter, f"{path}: ")
    return adapter


def _check_values(adapter: Adapter, where: str = "") -> None:
    """LoRAError unless alpha and every A and B are finite: NaN would spread to every output."""
    try:
        check_number(f"{where}alpha", adapter.alpha)
        for key, tensor in adapter.tensors.items():
            check_finite(f"{where}{key}", tensor, "the adapter is damaged or its training diverged; "
                                                  "retrain it, or restore the file")
    except ValueError as err:
        raise LoRAError(str(err)) from None


def _ab_shapes(module: nn.Module, r: int) -> dict[str, tuple[int, int]]:
    """The shapes of A and B for a LoRA of rank r on a linear layer or an embedding."""
    if isinstance(module, nn.Embedding):
        return {"lora_A": (r, module.embedding_dim), "lora_B": (module.num_embeddings, r)}
    return {"lora_A": (r, module.in_features), "lora_B": (module.out_features, r)}


def load_lora(model: nn.Module, adapter, dropout: float = 0.0) -> Adapter:
    """Put an adapter (an Adapter or a file from save_lora) into `model`.

    A model without LoRA layers gets them first (the adapter's modules, rank and α) and its
    base is frozen. A model that already has LoRA layers (e.g. another adapter, to swap)
    must have the same modules, rank and α; only A and B are replaced. Nothing changes in
    the model unless every check passes.
    """
    if not isinstance(adapter, Adapter):
        adapter = read_adapter(adapter)
    else:
        _check_values(adapter)
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
        bases = {name: layer.base for name, layer in layers.items()}
    else:
        modules = dict(model.named_modules())
        missing = [m for m in adapter.modules if not isinstance(modules.get(m), (nn.Linear, nn.Embedding))]
        if missing:
            raise LoRAError(f"the adapter targets modules this model has no nn.Linear or nn.Embedding for: "
                            f"{missing}; was it trained for another model?")
        bases = {m: modules[m] for m in adapter.modules}
    for name, module in bases.items():
        for key, shape in _ab_shapes(module, adapter.r).items():
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


def _without_adapters(model: nn.Module, merge: bool) -> nn.Module:
    for name, layer in lora_layers(model).items():
        if merge:
            layer.merge()
        else:
            layer.unmerge()
        _set_module(model, name, layer.base)
    for name, head in [(n, m) for n, m in model.named_modules() if isinstance(m, TiedLoRAHead)]:
        _set_module(model, name, head.base)       # the shared matrix already holds ΔE, or not
    for p in model.parameters():
        p.requires_grad_(True)
    return model


def merge_and_unload(model: nn.Module) -> nn.Module:
    """Fold every ΔW into its base weight and put the plain nn.Linear back: the model has
    exactly the base's structure and parameter count again (PEFT's merge_and_unload)."""
    return _without_adapters(model, merge=True)


def unload_lora(model: nn.Module) -> nn.Module:
    """Remove the LoRA layers without merging: the base model as it was."""
    return _without_adapters(model, merge=False)


def combine_adapters(adapters, weights) -> Adapter:
    """One adapter whose update is Σᵢ wᵢ·ΔWᵢ for every module, exactly.

    The ranks add up: A = [w₁s₁A₁; w₂s₂A₂; …] stacked by rows, B = [B₁ B₂ …] side by side,
    α = r (scaling 1), so B·A = Σᵢ wᵢ·sᵢ·Bᵢ·Aᵢ = Σᵢ wᵢ·ΔWᵢ. This is PEFT's
    add_weighted_adapter(..., combination_type="cat"). Adding A's and B's of equal rank
    instead would not do it: (B₁+B₂)(A₁+A₂) has cross terms B₁A₂ + B₂A₁.
    """
    adapters = [a if isinstance(a, Adapter) else read_adapter(a) for a in adapters]
    if not hasattr(weights, "__len__"):
        raise TypeError(f"weights must be a list of numbers, one per adapter, got {weights!r}")
    weights = [check_number(f"weights[{i}]", w) for i, w in enumerate(weights)]
    if not adapters or len(adapters) != len(weights):
        raise ValueError(f"give one weight per adapter: {len(adapters)} adapters, {len(weights)} weights")
    modules = adapters[0].modules
    for i, a in enumerate(adapters[1:], 1):
        if a.modules != modules:
            raise LoRAError(f"adapters for different modules cannot be combined: {modules} vs {a.modules}")
        for m in modules:       # ranks may differ; the sizes of the layers may not
            ours, first = a.delta_shape(m), adapters[0].delta_shape(m)
            if ours != first:
                raise LoRAError(f"adapter {i} changes {m} by a [{ours[0]}, {ours[1]}] matrix, adapter 0 by a "
                                f"[{first[0]}, {first[1]}] one: the adapters were trained for models of "
                                f"different sizes")
    r = sum(a.r for a in adapters)
    tensors = {}
    for m in modules:
        tensors[f"{m}.lora_A"] = torch.cat([w * a.scaling * a.tensors[f"{m}.lora_A"]
                                            for a, w in zip(adapters, weights)])
        tensors[f"{m}.lora_B"] = torch.cat([a.tensors[f"{m}.lora_B"] for a in adapters], dim=1)
    mix = " + ".join(f"{w:g}*{a.info.get('name', f'adapter{i}')}" for i, (a, w) in enumerate(zip(adapters, weights)))
    return Adapter(r, float(r), list(modules), tensors, list(adapters[0].targets), {"name": mix})
