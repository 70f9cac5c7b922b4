"""The encoder–decoder translator of lesson 9: masks, decoding, and that it can learn."""
import pytest
import torch
import torch.nn.functional as F

from encoding_world.masks import causal_mask
from encoding_world.seq2seq import (
    SPECIALS,
    DecodeStep,
    Seq2SeqTransformer,
    Vocab,
    decoder_with_weights,
    pad_sequences,
    teacher_forcing_batch,
)
from encoding_world.transformer import Decoder

PAIRS = [("我 是 一个 学生", "I am a student"),
         ("她 喜欢 苹果", "she likes apples"),
         ("他们 是 老师", "they are teachers"),
         ("我 不 喜欢 猫", "I do not like cats"),
         ("你 有 书", "you have books"),
         ("他 是 一个 工程师", "he is an engineer")]
ZH = [zh.split() for zh, _ in PAIRS]
EN = [en.split() for _, en in PAIRS]


@pytest.fixture(autouse=True)
def seeded():
    torch.manual_seed(0)


@pytest.fixture
def vocabs():
    return Vocab.from_sentences(ZH), Vocab.from_sentences(EN)


@pytest.fixture
def model(vocabs):
    src_vocab, tgt_vocab = vocabs
    return Seq2SeqTransformer(len(src_vocab), len(tgt_vocab), d_model=32, n_head=4, n_layer=2).eval()


def test_vocab_round_trip_and_specials(vocabs):
    src_vocab, tgt_vocab = vocabs
    assert src_vocab.tokens[:4] == list(SPECIALS)
    assert (Vocab.pad_id, Vocab.bos_id, Vocab.eos_id, Vocab.unk_id) == (0, 1, 2, 3)
    assert tgt_vocab.tokens[4:] == sorted(tgt_vocab.tokens[4:])   # ids do not depend on set order
    ids = tgt_vocab.encode(EN[0], bos=True, eos=True)
    assert ids[0] == Vocab.bos_id and ids[-1] == Vocab.eos_id
    assert tgt_vocab.decode(ids + [5, 6]) == EN[0]            # stops at <eos>, drops <bos>
    assert src_vocab.encode(["火星"]) == [Vocab.unk_id]
    assert "学生" in src_vocab and "火星" not in src_vocab


def test_padding_and_teacher_forcing_batch(vocabs):
    src_vocab, tgt_vocab = vocabs
    assert pad_sequences([[5], [6, 7, 8]]).tolist() == [[5, 0, 0], [6, 7, 8]]
    with pytest.raises(ValueError):
        pad_sequences([])
    src, tgt_in, tgt_out = teacher_forcing_batch(ZH, EN, src_vocab, tgt_vocab)
    assert src.shape == (6, 4) and tgt_in.shape == tgt_out.shape == (6, 6)
    assert tgt_in[0].tolist() == tgt_vocab.encode(EN[0], bos=True) + [0]
    assert tgt_out[0].tolist() == tgt_vocab.encode(EN[0], eos=True) + [0]
    assert torch.equal(tgt_in[:, 1:][tgt_out[:, :-1] != 2], tgt_out[:, :-1][tgt_out[:, :-1] != 2])  # shifted by one
    with pytest.raises(ValueError):
        teacher_forcing_batch(ZH, EN[:2], src_vocab, tgt_vocab)


def test_forward_shapes(model, vocabs):
    src = torch.randint(4, len(vocabs[0]), (3, 5))
    tgt_in = torch.randint(4, len(vocabs[1]), (3, 7))
    assert model(src, tgt_in).shape == (3, 7, len(vocabs[1]))
    assert model.encode(src).shape == (3, 5, 32)
    with pytest.raises(ValueError, match="batch, len"):
        model(src[0], tgt_in)


def test_causal_changing_future_targets_leaves_earlier_logits(model, vocabs):
    src = torch.randint(4, len(vocabs[0]), (2, 5))
    tgt_in = torch.randint(4, len(vocabs[1]), (2, 6))
    changed = tgt_in.clone()
    changed[:, 3:] = torch.randint(4, len(vocabs[1]), (2, 3))
    a, b = model(src, tgt_in), model(src, changed)
    assert torch.allclose(a[:, :3], b[:, :3], atol=1e-6)
    assert not torch.allclose(a[:, 3:], b[:, 3:], atol=1e-3)   # the later positions do read them


def test_source_is_seen_bidirectionally(model, vocabs):
    src = torch.randint(4, len(vocabs[0]), (1, 5))
    changed = src.clone()
    changed[0, -1] = 4 if src[0, -1] != 4 else 5
    memory_a, memory_b = model.encode(src), model.encode(changed)
    assert not torch.allclose(memory_a[:, 0], memory_b[:, 0], atol=1e-4)  # the first source word sees the last


def test_source_padding_does_not_change_outputs(model, vocabs):
    src = torch.randint(4, len(vocabs[0]), (2, 4))
    tgt_in = torch.randint(4, len(vocabs[1]), (2, 5))
    padded = torch.cat([src, torch.zeros(2, 3, dtype=torch.long)], dim=1)
    assert torch.allclose(model(src, tgt_in), model(padded, tgt_in), atol=1e-5)
    assert torch.allclose(model.encode(src), model.encode(padded)[:, :4], atol=1e-5)


def test_target_padding_does_not_change_real_positions(model, vocabs):
    src = torch.randint(4, len(vocabs[0]), (1, 4))
    tgt_in = torch.randint(4, len(vocabs[1]), (1, 4))
    padded = torch.cat([tgt_in, torch.zeros(1, 2, dtype=torch.long)], dim=1)
    assert torch.allclose(model(src, tgt_in), model(src, padded)[:, :4], atol=1e-5)


def test_decoder_with_weights_matches_forward_and_hides_the_future(model, vocabs):
    src = torch.randint(4, len(vocabs[0]), (2, 5))
    src[1, 3:] = 0                                              # the second sentence is padded
    tgt_in = torch.randint(4, len(vocabs[1]), (2, 6))
    _, dec_mask, cross_mask = model.masks(src, tgt_in)
    memory, x = model.encode(src), model.tgt_embed(tgt_in)
    out, self_w, cross_w = decoder_with_weights(model.decoder, x, dec_mask, memory, cross_mask)
    assert torch.allclose(out, model.decoder(x, mask=dec_mask, memory=memory, memory_mask=cross_mask), atol=1e-6)
    assert len(self_w) == len(cross_w) == 2
    future = torch.ones(6, 6, dtype=torch.bool).triu(1)
    for w, cw in zip(self_w, cross_w):
        assert w.shape == (2, 4, 6, 6) and cw.shape == (2, 4, 6, 5)
        assert (w[..., future] == 0).all()                          # no weight on later target positions
        assert (cw[1, :, :, 3:] == 0).all()                         # none on source padding
        assert torch.allclose(w.sum(-1), torch.ones(2, 4, 6)) and torch.allclose(cw.sum(-1), torch.ones(2, 4, 6))


def test_decoder_with_weights_works_for_a_decoder_only_stack():
    decoder = Decoder(2, 16, 2, cross_attention=False).eval()
    x = torch.randn(1, 4, 16)
    out, self_w, cross_w = decoder_with_weights(decoder, x, mask=causal_mask(4))
    assert torch.allclose(out, decoder(x, mask=causal_mask(4)), atol=1e-6)
    assert len(self_w) == 2 and cross_w == []
    assert all((w[..., ~causal_mask(4)] == 0).all() for w in self_w)


def test_greedy_decode_stops_at_eos(model, vocabs):
    src = torch.randint(4, len(vocabs[0]), (2, 4))
    with torch.no_grad():                                       # make the model always say <eos>
        model.lm_head.weight.zero_()
        model.lm_head.bias.fill_(0.0)
        model.lm_head.bias[Vocab.eos_id] = 10.0
    out = model.greedy_decode(src, max_new_tokens=10, bos_id=Vocab.bos_id, eos_id=Vocab.eos_id)
    assert out.tolist() == [[Vocab.eos_id], [Vocab.eos_id]]


class Scripted(Seq2SeqTransformer):
    """A model whose next token follows a script per sentence (to test the decoding loop alone)."""

    script = [[5, 2, 6, 6, 6], [5, 6, 7, 2, 6]]                 # sentence 0 ends at step 1, sentence 1 at step 3

    def decode(self, tgt_in_ids, memory, src_ids, need_weights=False):
        batch, t = tgt_in_ids.shape
        logits = torch.zeros(batch, t, self.lm_head.out_features)
        for b in range(batch):
            logits[b, -1, self.script[b][t - 1]] = 1.0
        return logits


def test_greedy_decode_pads_finished_sentences_and_respects_max_new_tokens(vocabs):
    model = Scripted(len(vocabs[0]), len(vocabs[1]), d_model=16, n_head=2, n_layer=1)
    src = torch.randint(4, len(vocabs[0]), (2, 4))
    out = model.greedy_decode(src, max_new_tokens=10, bos_id=Vocab.bos_id, eos_id=Vocab.eos_id)
    assert out.tolist() == [[5, 2, 0, 0], [5, 6, 7, 2]]          # stops when both are done; pads after <eos>
    out = model.greedy_decode(src, max_new_tokens=2, bos_id=Vocab.bos_id, eos_id=Vocab.eos_id)
    assert out.tolist() == [[5, 2], [5, 6]]                      # never more than max_new_tokens tokens


def test_decode_steps_record_what_the_decoder_saw(model, vocabs):
    src = torch.randint(4, len(vocabs[0]), (1, 4))
    out, steps = model.greedy_decode(src, max_new_tokens=5, bos_id=Vocab.bos_id, eos_id=Vocab.eos_id, return_steps=True)
    assert len(steps) == out.shape[1] and all(isinstance(s, DecodeStep) for s in steps)
    for t, step in enumerate(steps):
        assert step.step == t
        assert step.decoder_input.tolist() == [[Vocab.bos_id] + out[0, :t].tolist()]   # only the past
        assert step.mask.shape[-2:] == (t + 1, t + 1) and step.mask[0, 0].tril().equal(step.mask[0, 0])
        assert step.next_id.item() == out[0, t].item() == step.logits.argmax(-1).item()
        for w in step.self_attention:
            assert w.shape == (1, 4, t + 1, t + 1) and (w[..., step.mask[0, 0].logical_not()] == 0).all()
    # teacher forcing on the generated sequence reproduces each step's logits: the causal mask
    # makes one parallel pass equal to the step-by-step loop
    tgt_in = torch.cat([torch.tensor([[Vocab.bos_id]]), out[:, :-1]], dim=1)
    parallel = model(src, tgt_in)
    for t, step in enumerate(steps):
        assert torch.allclose(parallel[0, t], step.logits[0], atol=1e-5)


@pytest.fixture
def one_thread():
    previous = torch.get_num_threads()
    torch.set_num_threads(1)        # a tiny model: a second thread only adds waiting on a busy machine
    yield
    torch.set_num_threads(previous)


def test_overfits_a_handful_of_pairs(vocabs, one_thread):
    src_vocab, tgt_vocab = vocabs
    src, tgt_in, tgt_out = teacher_forcing_batch(ZH, EN, src_vocab, tgt_vocab)
    model = Seq2SeqTransformer(len(src_vocab), len(tgt_vocab), d_model=32, n_head=4, n_layer=2)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(100):
        loss = F.cross_entropy(model(src, tgt_in).flatten(0, 1), tgt_out.flatten(), ignore_index=Vocab.pad_id)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert loss.item() < 0.05
    assert model.training                                         # greedy_decode restores the mode
    out = model.greedy_decode(src, max_new_tokens=8, bos_id=Vocab.bos_id, eos_id=Vocab.eos_id)
    assert model.training
    assert [tgt_vocab.decode(row) for row in out] == EN
