"""LoRA (encoding_world.lora): identity at start, merging, freezing, adapter files, mixing,
and the same numbers as PEFT's LoRA. Tiny random models, so it runs in seconds."""
import copy
import math

import pytest
import torch
from safetensors.torch import save_file
from torch import nn

from encoding_world.gpt import GPT, GPTConfig
from encoding_world.lora import (
    Adapter,
    LoRAEmbedding,
    LoRAError,
    LoRALinear,
    TiedLoRAHead,
    add_lora,
    combine_adapters,
    get_adapter,
    load_lora,
    lora_layers,
    lora_parameters,
    lora_state_dict,
    merge_and_unload,
    merge_lora,
    read_adapter,
    save_lora,
    unload_lora,
    unmerge_lora,
)

TARGETS = ("q_proj", "v_proj", "ffn.down")


def tiny_gpt(d_model=32, seed=0):
    torch.manual_seed(seed)
    return GPT(GPTConfig(vocab_size=40, block_size=12, n_layer=2, n_head=2, d_model=d_model)).eval()


def tokens(seed=1):
    return torch.randint(40, (3, 12), generator=torch.Generator().manual_seed(seed))


def randomise_b(model, seed=2):
    """B starts at zero; give it values so that the adapter does something."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for layer in lora_layers(model).values():
            layer.lora_B.copy_(torch.randn(layer.lora_B.shape, generator=g) * 0.1)


def adapted(r=4, alpha=8.0, seed=2, targets=TARGETS):
    model = tiny_gpt()
    add_lora(model, targets, r=r, alpha=alpha)
    randomise_b(model, seed)
    return model


def logits(model, x=None):
    with torch.no_grad():
        return model(tokens() if x is None else x)[0]


# ------------------------------------------------------------------ the layer itself

def test_starts_identical_to_the_base():
    base = tiny_gpt()
    model = copy.deepcopy(base)
    names = add_lora(model, TARGETS, r=4, alpha=8)
    assert names == ["blocks.0.self_attn.q_proj", "blocks.0.self_attn.v_proj", "blocks.0.ffn.down",
                     "blocks.1.self_attn.q_proj", "blocks.1.self_attn.v_proj", "blocks.1.ffn.down"]
    assert torch.equal(logits(model), logits(base))      # B = 0, so ΔW = 0 exactly
    for layer in lora_layers(model).values():
        assert torch.count_nonzero(layer.lora_B) == 0 and torch.count_nonzero(layer.lora_A) > 0


def test_a_is_initialised_like_nn_linear_and_peft():
    linear = nn.Linear(24, 10, bias=False)
    torch.manual_seed(5)
    layer = LoRALinear(linear, r=3, alpha=6)
    torch.manual_seed(5)
    expected = torch.empty(3, 24)
    nn.init.kaiming_uniform_(expected, a=math.sqrt(5))    # bound 1/√in_features
    assert torch.equal(layer.lora_A, expected)
    assert layer.lora_A.abs().max() <= 1 / math.sqrt(24)
    assert layer.scaling == 2.0 and layer.delta_weight().shape == linear.weight.shape


def test_forward_is_w_plus_scaled_ba():
    linear = nn.Linear(8, 5)
    layer = LoRALinear(linear, r=2, alpha=3)
    with torch.no_grad():
        layer.lora_B.normal_()
    x = torch.randn(4, 8, dtype=torch.float32)
    w_prime = linear.weight + (3 / 2) * layer.lora_B @ layer.lora_A
    assert torch.allclose(layer(x), x @ w_prime.T + linear.bias, atol=1e-6)


def test_rank_must_be_positive_and_base_linear():
    with pytest.raises(ValueError, match="positive integer"):
        LoRALinear(nn.Linear(4, 4), r=0)
    with pytest.raises(TypeError, match="nn.Linear"):
        LoRALinear(nn.Conv1d(4, 4, 1))


def test_gradient_reaches_b_first():
    """At the start B = 0, so A's gradient is zero and only B moves on the first step."""
    model = tiny_gpt()
    add_lora(model, TARGETS, r=4, alpha=8)
    x = tokens()
    model(x, x)[1].backward()
    layer = lora_layers(model)["blocks.0.self_attn.q_proj"]
    assert torch.count_nonzero(layer.lora_A.grad) == 0 and torch.count_nonzero(layer.lora_B.grad) > 0


# ------------------------------------------------------------------ freezing

def test_only_adapter_parameters_train():
    model = tiny_gpt()
    base_state = {k: v.clone() for k, v in model.state_dict().items()}
    add_lora(model, TARGETS, r=4, alpha=8)
    trainable = [p for p in model.parameters() if p.requires_grad]
    assert {id(p) for p in trainable} == {id(p) for p in lora_parameters(model)}
    # Each wrapped d×d (q, v) or 4d→d (down) layer adds r·(in + out) parameters.
    assert sum(p.numel() for p in trainable) == 2 * (2 * 4 * (32 + 32) + 4 * (128 + 32))
    optimizer = torch.optim.AdamW(lora_parameters(model), lr=1e-2)
    model.train()
    for _ in range(3):
        x = tokens()
        loss = model(x, x)[1]
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    state = model.state_dict()
    for key, value in base_state.items():          # the base weights did not move
        wrapped = key.replace("q_proj.", "q_proj.base.").replace("v_proj.", "v_proj.base.").replace(
            "down.", "down.base.")
        assert torch.equal(state[wrapped], value), key
    assert all(torch.count_nonzero(layer.lora_B) > 0 for layer in lora_layers(model).values())


# ------------------------------------------------------------------ merging

def test_merge_unmerge_round_trip():
    model = adapted()
    before = logits(model)
    weights = {n: layer.base.weight.clone() for n, layer in lora_layers(model).items()}
    merge_lora(model)
    assert all(layer.merged for layer in lora_layers(model).values())
    assert torch.allclose(logits(model), before, atol=1e-5, rtol=0)
    merge_lora(model)                                   # merging twice is a no-op
    assert torch.allclose(logits(model), before, atol=1e-5, rtol=0)
    unmerge_lora(model)
    for name, layer in lora_layers(model).items():
        assert torch.allclose(layer.base.weight, weights[name], atol=1e-6, rtol=0)
    assert torch.allclose(logits(model), before, atol=1e-5, rtol=0)


def test_merge_and_unload_gives_the_base_structure():
    base = tiny_gpt()
    model = adapted()
    before = logits(model)
    plain = merge_and_unload(model)
    assert not lora_layers(plain)
    assert list(plain.state_dict()) == list(base.state_dict())
    assert sum(p.numel() for p in plain.parameters()) == sum(p.numel() for p in base.parameters())
    assert all(type(a) is type(b) for a, b in zip(plain.modules(), base.modules()))
    assert torch.allclose(logits(plain), before, atol=1e-5, rtol=0)
    assert not torch.allclose(logits(plain), logits(base), atol=1e-3)


def test_unload_restores_the_base_exactly():
    base = tiny_gpt()
    model = adapted()
    assert torch.equal(logits(unload_lora(model)), logits(base))
    assert all(p.requires_grad for p in model.parameters())


# ------------------------------------------------------------------ adapter files

def test_save_load_round_trip(tmp_path):
    model = adapted()
    path = save_lora(model, tmp_path / "a.safetensors", name="test")
    adapter = read_adapter(path)
    assert (adapter.r, adapter.alpha, adapter.info["name"]) == (4, 8.0, "test")
    assert adapter.modules == list(lora_layers(model))
    assert sorted(adapter.targets) == ["down", "q_proj", "v_proj"]
    assert set(adapter.tensors) == set(lora_state_dict(model))
    assert adapter.num_parameters() == sum(p.numel() for p in lora_parameters(model))

    fresh = tiny_gpt()
    load_lora(fresh, path)
    assert torch.equal(logits(fresh), logits(model))
    assert all(not p.requires_grad for n, p in fresh.named_parameters() if "lora_" not in n)

    # The file holds the adapter only: far smaller than the model's own weights.
    full = tmp_path / "full.safetensors"
    save_file({k: v.contiguous() for k, v in tiny_gpt().state_dict().items() if k != "lm_head.weight"}, str(full))
    assert path.stat().st_size < full.stat().st_size / 3


def test_swapping_adapters(tmp_path):
    a, b = adapted(seed=2), adapted(seed=3)
    pa, pb = save_lora(a, tmp_path / "a.safetensors"), save_lora(b, tmp_path / "b.safetensors")
    model = tiny_gpt()
    load_lora(model, pa)
    base_weight = lora_layers(model)["blocks.0.ffn.down"].base.weight.clone()
    load_lora(model, pb)
    assert torch.equal(logits(model), logits(b))
    load_lora(model, pa)
    assert torch.equal(logits(model), logits(a))
    assert torch.equal(lora_layers(model)["blocks.0.ffn.down"].base.weight, base_weight)


def test_errors(tmp_path):
    with pytest.raises(LoRAError, match="no nn.Linear or nn.Embedding matches.*blocks.0.self_attn.q_proj"):
        add_lora(tiny_gpt(), ("query",))
    # The head is the embedding's matrix: its own adapter would break the tie when merged.
    with pytest.raises(LoRAError, match="tied weights.*target the embedding \\(token_embedding\\)"):
        add_lora(tiny_gpt(), ("lm_head",))
    with pytest.raises(LoRAError, match="tied weights"):
        add_lora(tiny_gpt(), ("token_embedding", "lm_head"))
    with pytest.raises(LoRAError, match="already has LoRA layers"):
        add_lora(adapted(), TARGETS)

    path = save_lora(adapted(), tmp_path / "a.safetensors")
    wide = tiny_gpt(d_model=48)
    with pytest.raises(LoRAError, match="another size"):
        load_lora(wide, path)
    assert not lora_layers(wide)                        # nothing changed on failure

    other_rank = tiny_gpt()
    add_lora(other_rank, TARGETS, r=2, alpha=4)
    with pytest.raises(LoRAError, match="r=2.*r=4.*unload_lora"):
        load_lora(other_rank, path)
    other_modules = tiny_gpt()
    add_lora(other_modules, ("k_proj",))
    with pytest.raises(LoRAError, match="unload_lora"):
        load_lora(other_modules, path)
    merged = adapted()
    merge_lora(merged)
    with pytest.raises(LoRAError, match="unmerge_lora"):
        load_lora(merged, path)

    not_adapter = tmp_path / "model.safetensors"
    save_file({"w": torch.zeros(2)}, str(not_adapter))
    with pytest.raises(LoRAError, match="not an adapter"):
        read_adapter(not_adapter)
    damaged = tmp_path / "damaged.safetensors"
    damaged.write_bytes(path.read_bytes()[:200])
    with pytest.raises(LoRAError, match="not a readable"):
        read_adapter(damaged)
    with pytest.raises(FileNotFoundError):
        read_adapter(tmp_path / "missing.safetensors")
    with pytest.raises(LoRAError, match="no LoRA layers"):
        get_adapter(tiny_gpt())


# ------------------------------------------------------------------ embeddings and the tied head

EMBEDDING_TARGETS = TARGETS + ("token_embedding",)


def test_embedding_lora_forward_is_e_plus_scaled_ba():
    torch.manual_seed(0)
    table = nn.Embedding(40, 16)
    layer = LoRAEmbedding(table, r=3, alpha=6)
    ids = torch.randint(40, (4, 7))
    assert torch.equal(layer(ids), table(ids))                 # B = 0: no change at the start
    with torch.no_grad():
        layer.lora_B.normal_()
    expected = table.weight + 2.0 * layer.lora_B @ layer.lora_A
    assert torch.allclose(layer(ids), expected[ids], atol=1e-6, rtol=0)
    assert torch.allclose(layer.delta_weight(), expected - table.weight, atol=1e-6, rtol=0)
    assert [n for n, p in layer.named_parameters() if p.requires_grad] == ["lora_A", "lora_B"]
    with pytest.raises(TypeError, match="nn.Embedding"):
        LoRAEmbedding(nn.Linear(3, 3))
    with pytest.raises(ValueError, match="max_norm"):
        LoRAEmbedding(nn.Embedding(5, 3, max_norm=1.0))


def test_targeting_the_tied_embedding_adapts_the_head_with_the_same_update():
    model = adapted(targets=EMBEDDING_TARGETS)
    assert isinstance(model.token_embedding, LoRAEmbedding) and isinstance(model.lm_head, TiedLoRAHead)
    assert "lm_head" not in lora_layers(model)            # no A and B of its own
    assert sum(p.numel() for p in lora_parameters(model)) == sum(
        p.numel() for p in model.parameters() if p.requires_grad)
    # Reference: a plain GPT whose one shared matrix is E + ΔE, and W + ΔW elsewhere.
    reference = tiny_gpt()
    with torch.no_grad():
        for name, layer in lora_layers(model).items():
            reference.get_submodule(name).weight += layer.delta_weight()
    assert reference.lm_head.weight is reference.token_embedding.weight
    assert torch.allclose(logits(model), logits(reference), atol=1e-5, rtol=0)
    # Merging writes ΔE once into the shared matrix; the head must not add it a second time.
    unmerged = logits(model)
    merge_lora(model)
    assert torch.allclose(logits(model), unmerged, atol=1e-5, rtol=0)
    unmerge_lora(model)
    assert torch.allclose(logits(model), unmerged, atol=1e-6, rtol=0)
    plain = merge_and_unload(copy.deepcopy(model))
    assert type(plain.lm_head) is nn.Linear and plain.lm_head.weight is plain.token_embedding.weight
    assert torch.allclose(logits(plain), unmerged, atol=1e-5, rtol=0)
    restored = unload_lora(model)                  # merged and unmerged once: equal up to rounding
    assert type(restored.lm_head) is nn.Linear and type(restored.token_embedding) is nn.Embedding
    assert restored.lm_head.weight is restored.token_embedding.weight
    assert torch.allclose(logits(restored), logits(tiny_gpt()), atol=1e-6, rtol=0)


def test_a_deep_copy_keeps_the_head_tied_to_its_own_embedding():
    model = adapted(targets=EMBEDDING_TARGETS)
    twin = copy.deepcopy(model)
    assert twin.lm_head.embedding is twin.token_embedding is not model.token_embedding
    with torch.no_grad():
        twin.token_embedding.lora_B.zero_()
        for layer in lora_layers(twin).values():
            layer.lora_B.zero_()
    assert torch.equal(logits(twin), logits(tiny_gpt()))  # both halves follow the copy's B
    assert not torch.equal(logits(model), logits(twin))


def test_gradients_reach_the_embedding_adapter_from_both_ends():
    model = tiny_gpt()
    add_lora(model, ("token_embedding",), r=2, alpha=4)
    with torch.no_grad():
        model.token_embedding.lora_B.normal_()
    x = tokens()
    model(x, x)[1].backward()
    grad_b = model.token_embedding.lora_B.grad
    # Through the head every row of B gets a gradient, not only the rows of tokens in x.
    unused = sorted(set(range(40)) - set(x.flatten().tolist()))
    assert unused and grad_b[unused].abs().sum(dim=1).min() > 0
    assert model.token_embedding.base.weight.grad is None


def test_untied_embeddings_are_adapted_alone():
    model = tiny_gpt()
    wrapped = add_lora(model, ("position_embedding",), r=2, alpha=4)
    assert wrapped == ["position_embedding"] and type(model.lm_head) is nn.Linear
    assert isinstance(model.position_embedding, LoRAEmbedding)


def test_embedding_adapters_save_load_and_mix(tmp_path):
    a_model = adapted(targets=EMBEDDING_TARGETS, seed=2)
    path = save_lora(a_model, tmp_path / "a.safetensors")
    adapter = read_adapter(path)
    assert adapter.modules[0] == "token_embedding"
    assert adapter.tensors["token_embedding.lora_B"].shape == (40, 4)
    fresh = tiny_gpt()
    load_lora(fresh, path)
    assert isinstance(fresh.lm_head, TiedLoRAHead)
    assert torch.equal(logits(fresh), logits(a_model))
    b = get_adapter(adapted(targets=EMBEDDING_TARGETS, seed=3))
    mix = combine_adapters([adapter, b], [0.7, 0.3])
    assert torch.allclose(mix.delta_weight("token_embedding"),
                          0.7 * adapter.delta_weight("token_embedding") + 0.3 * b.delta_weight("token_embedding"),
                          atol=1e-6, rtol=0)
    small = tiny_gpt()
    small.token_embedding = nn.Embedding(30, 32)
    with pytest.raises(LoRAError, match="token_embedding.lora_B has shape \\[40, 4\\].*another size"):
        load_lora(small, path)


# ------------------------------------------------------------------ mixing adapters

def test_weighted_combination_is_the_weighted_sum_of_updates(tmp_path):
    a = get_adapter(adapted(r=4, alpha=8, seed=2))
    b = get_adapter(adapted(r=2, alpha=8, seed=3))
    mix = combine_adapters([a, b], [0.7, 0.3])
    assert mix.r == 6 and mix.scaling == 1.0
    for m in mix.modules:
        expected = 0.7 * a.delta_weight(m) + 0.3 * b.delta_weight(m)
        assert torch.allclose(mix.delta_weight(m), expected, atol=1e-6, rtol=0)
    # Loaded into the base, it is W + 0.7·ΔW_a + 0.3·ΔW_b.
    model = tiny_gpt()
    load_lora(model, save_lora(mix, tmp_path / "mix.safetensors"))
    reference = tiny_gpt()
    with torch.no_grad():
        for m in mix.modules:
            reference.get_submodule(m).weight += 0.7 * a.delta_weight(m) + 0.3 * b.delta_weight(m)
    assert torch.allclose(logits(model), logits(reference), atol=1e-5, rtol=0)
    # Weights (1, 0) give back the first adapter's model.
    alone = tiny_gpt()
    load_lora(alone, combine_adapters([a, b], [1.0, 0.0]))
    first = tiny_gpt()
    load_lora(first, a)
    assert torch.allclose(logits(alone), logits(first), atol=1e-6, rtol=0)
    with pytest.raises(ValueError, match="one weight per adapter"):
        combine_adapters([a, b], [1.0])
    fewer = a.modules[:2]
    c = Adapter(a.r, a.alpha, fewer, {k: v for k, v in a.tensors.items() if k.split(".lora")[0] in fewer})
    with pytest.raises(LoRAError, match="different modules"):
        combine_adapters([a, c], [0.5, 0.5])


# ------------------------------------------------------------------ PEFT

peft = pytest.importorskip("peft")


def test_same_outputs_as_peft_on_one_linear():
    from peft import LoraConfig, inject_adapter_in_model
    torch.manual_seed(0)
    linear = nn.Linear(16, 12)
    ours = LoRALinear(copy.deepcopy(linear), r=4, alpha=8, dropout=0.1)
    holder = nn.Module()
    holder.proj = copy.deepcopy(linear)
    inject_adapter_in_model(LoraConfig(r=4, lora_alpha=8, lora_dropout=0.1, target_modules=["proj"]), holder)
    theirs = holder.proj
    with torch.no_grad():
        ours.lora_B.normal_()
        theirs.lora_A["default"].weight.copy_(ours.lora_A)
        theirs.lora_B["default"].weight.copy_(ours.lora_B)
    ours.eval(), theirs.eval()                           # dropout off, as at inference
    x = torch.randn(5, 16)
    assert torch.allclose(ours(x), theirs(x), atol=1e-6, rtol=0)
    assert torch.allclose(ours.delta_weight(), theirs.get_delta_weight("default"), atol=1e-6, rtol=0)
    assert theirs.scaling["default"] == ours.scaling


def test_same_outputs_as_peft_on_the_gpt_and_cat_mixing():
    from peft import LoraConfig, get_peft_model
    a_model, b_model = adapted(seed=2), adapted(seed=3)
    peft_model = get_peft_model(tiny_gpt(), LoraConfig(r=4, lora_alpha=8, target_modules=list(TARGETS)),
                                adapter_name="first")
    peft_model.add_adapter("second", LoraConfig(r=4, lora_alpha=8, target_modules=list(TARGETS)))
    with torch.no_grad():
        for name in lora_layers(a_model):
            module = peft_model.base_model.model.get_submodule(name)
            for adapter, source in (("first", a_model), ("second", b_model)):
                layer = lora_layers(source)[name]
                module.lora_A[adapter].weight.copy_(layer.lora_A)
                module.lora_B[adapter].weight.copy_(layer.lora_B)
    peft_model.eval()
    peft_model.set_adapter("first")
    assert torch.allclose(logits(peft_model), logits(a_model), atol=1e-6, rtol=0)

    peft_model.add_weighted_adapter(["first", "second"], [0.7, 0.3], "mix", combination_type="cat")
    peft_model.set_adapter("mix")
    ours = tiny_gpt()
    load_lora(ours, combine_adapters([get_adapter(a_model), get_adapter(b_model)], [0.7, 0.3]))
    assert torch.allclose(logits(peft_model), logits(ours), atol=1e-6, rtol=0)



def test_same_outputs_as_peft_for_the_embedding_and_the_head_on_an_untied_copy():
    # PEFT's LoRA knows nothing of our GPT's tying: untie a copy (same matrix, two tensors),
    # give PEFT's embedding LoRA and its head LoRA our A and B, and compare whole models.
    from peft import LoraConfig, get_peft_model
    ours = adapted(targets=EMBEDDING_TARGETS, seed=2)
    untied = tiny_gpt()
    untied.lm_head.weight = nn.Parameter(untied.token_embedding.weight.detach().clone())
    config = LoraConfig(r=4, lora_alpha=8, target_modules=list(EMBEDDING_TARGETS) + ["lm_head"])
    peft_model = get_peft_model(untied, config)
    inner = peft_model.base_model.model
    emb = ours.token_embedding
    with torch.no_grad():
        for name, layer in lora_layers(ours).items():
            if name == "token_embedding":   # PEFT stores the embedding's pair transposed
                inner.token_embedding.lora_embedding_A["default"].copy_(emb.lora_B.T)
                inner.token_embedding.lora_embedding_B["default"].copy_(emb.lora_A.T)
            else:
                inner.get_submodule(name).lora_A["default"].weight.copy_(layer.lora_A)
                inner.get_submodule(name).lora_B["default"].weight.copy_(layer.lora_B)
        inner.lm_head.lora_A["default"].weight.copy_(emb.lora_A)
        inner.lm_head.lora_B["default"].weight.copy_(emb.lora_B)
    peft_model.eval()
    assert torch.allclose(inner.token_embedding.get_delta_weight("default"), emb.delta_weight(), atol=1e-6, rtol=0)
    assert torch.allclose(logits(peft_model), logits(ours), atol=1e-6, rtol=0)
