"""A small encoder–decoder Transformer for translation (T5-like), built in lesson 9.

The model is assembled from the package's pieces: `TokenEmbedding` for the source and the
target, an `Encoder` (bidirectional self-attention over the source), a `Decoder` (causal
self-attention over the target so far, plus cross-attention to the encoder's output) and a
linear LM head that turns each decoder position into scores over the target vocabulary.

Training uses teacher forcing (教师强制): the decoder reads the true target shifted right
by one (``<bos> I am a student``) and is asked, at every position at once, for the next
token (``I am a student <eos>``); the causal mask keeps each position from seeing the
answer. Generation (`Seq2SeqTransformer.greedy_decode`) feeds the decoder its own
predictions one token at a time and can report, for every step, what the decoder saw.

Masks follow encoding_world.masks: True where attention is allowed.
"""
from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from .masks import attention_mask, padding_mask
from .transformer import Decoder, Encoder, TokenEmbedding

__all__ = ["SPECIALS", "Vocab", "pad_sequences", "teacher_forcing_batch",
           "Seq2SeqTransformer", "DecodeStep", "decoder_with_weights"]

SPECIALS = ("<pad>", "<bos>", "<eos>", "<unk>")


class Vocab:
    """A word-level vocabulary: the four special tokens (ids 0–3), then the words, sorted.

    Sorting makes the ids the same in every run (a Python set's order is not).
    """

    pad_id, bos_id, eos_id, unk_id = 0, 1, 2, 3

    def __init__(self, tokens: Iterable[str]):
        words = sorted(set(tokens) - set(SPECIALS))
        self.tokens: list[str] = list(SPECIALS) + words
        self.index: dict[str, int] = {w: i for i, w in enumerate(self.tokens)}

    @classmethod
    def from_sentences(cls, sentences: Iterable[Sequence[str]]) -> Vocab:
        """Build a vocabulary from tokenised sentences (lists of tokens)."""
        return cls(token for sentence in sentences for token in sentence)

    def __len__(self) -> int:
        return len(self.tokens)

    def __contains__(self, token: str) -> bool:
        return token in self.index

    def encode(self, tokens: Sequence[str], bos: bool = False, eos: bool = False) -> list[int]:
        """Token ids of `tokens` (unknown words become <unk>), optionally framed by <bos>/<eos>."""
        ids = [self.index.get(t, self.unk_id) for t in tokens]
        return ([self.bos_id] if bos else []) + ids + ([self.eos_id] if eos else [])

    def decode(self, ids: Iterable[int]) -> list[str]:
        """Tokens of `ids`, stopping at the first <eos> and dropping <pad> and <bos>."""
        out = []
        for i in (int(i) for i in ids):
            if i == self.eos_id:
                break
            if i not in (self.pad_id, self.bos_id):
                out.append(self.tokens[i])
        return out


def pad_sequences(seqs: Sequence[Sequence[int]], pad_id: int = Vocab.pad_id) -> torch.Tensor:
    """[batch, longest] LongTensor of the id lists, padded on the right with `pad_id`."""
    if not seqs:
        raise ValueError("no sequences to pad")
    longest = max(len(s) for s in seqs)
    out = torch.full((len(seqs), longest), pad_id, dtype=torch.long)
    for row, s in enumerate(seqs):
        out[row, :len(s)] = torch.as_tensor(list(s), dtype=torch.long)
    return out


def teacher_forcing_batch(src_sentences: Sequence[Sequence[str]], tgt_sentences: Sequence[Sequence[str]],
                          src_vocab: Vocab, tgt_vocab: Vocab) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(src_ids, tgt_in_ids, tgt_out_ids) for teacher forcing, each padded with <pad> (id 0).

    tgt_in is the target shifted right behind <bos>; tgt_out is the target followed by
    <eos>: position t of the decoder reads tgt_in[:t+1] and must predict tgt_out[t].
    """
    if len(src_sentences) != len(tgt_sentences):
        raise ValueError(f"{len(src_sentences)} source sentences but {len(tgt_sentences)} targets")
    src = pad_sequences([src_vocab.encode(s) for s in src_sentences])
    tgt_in = pad_sequences([tgt_vocab.encode(t, bos=True) for t in tgt_sentences])
    tgt_out = pad_sequences([tgt_vocab.encode(t, eos=True) for t in tgt_sentences])
    return src, tgt_in, tgt_out


def decoder_with_weights(decoder: Decoder, x, mask=None, memory=None, memory_mask=None):
    """Run `decoder` as its forward does, also returning every block's attention weights.

    Returns (output, self_weights, cross_weights): lists with one tensor per block, of
    shapes [batch, heads, tgt_len, tgt_len] and [batch, heads, tgt_len, src_len]
    (cross_weights is empty for a decoder-only stack, built with cross_attention=False).
    """
    return decoder.forward_with_weights(x, mask=mask, memory=memory, memory_mask=memory_mask)


@dataclass
class DecodeStep:
    """What the decoder saw and did at one step of greedy decoding.

    decoder_input: [batch, t+1] the target ids so far (<bos> first) — all it may see;
    mask: the causal self-attention mask used, True where a position may look;
    logits: [batch, vocab] scores for the next token; next_id: [batch] the chosen one;
    self_attention / cross_attention: per block, [batch, heads, t+1, t+1] / [batch, heads, t+1, src_len].
    """

    step: int
    decoder_input: torch.Tensor
    mask: torch.Tensor
    logits: torch.Tensor
    next_id: torch.Tensor
    self_attention: list
    cross_attention: list


class Seq2SeqTransformer(nn.Module):
    """Encoder–decoder Transformer: source ids → encoder memory; target prefix → next-token logits."""

    def __init__(self, src_vocab_size: int, tgt_vocab_size: int, d_model: int = 64, n_head: int = 4,
                 n_layer: int = 2, d_ff: int | None = None, dropout: float = 0.0, block_size: int = 64,
                 pad_id: int = Vocab.pad_id):
        super().__init__()
        self.pad_id = pad_id
        self.src_embed = TokenEmbedding(src_vocab_size, d_model, block_size, dropout)
        self.tgt_embed = TokenEmbedding(tgt_vocab_size, d_model, block_size, dropout)
        self.encoder = Encoder(n_layer, d_model, n_head, d_ff, dropout)
        self.decoder = Decoder(n_layer, d_model, n_head, d_ff, dropout, cross_attention=True)
        self.lm_head = nn.Linear(d_model, tgt_vocab_size)

    def masks(self, src_ids, tgt_in_ids):
        """(encoder mask, decoder self-attention mask, cross-attention mask), True = may attend.

        The encoder sees every real source token (padding hidden); the decoder sees the
        target positions up to its own (causal) that are not padding; cross-attention sees
        every real source token.
        """
        src_keys = padding_mask(src_ids, self.pad_id)                          # [batch, src_len]
        enc_mask = attention_mask(src_keys)                                     # [batch, 1, S, S]
        dec_mask = attention_mask(padding_mask(tgt_in_ids, self.pad_id), causal=True)  # [batch, 1, T, T]
        cross_mask = src_keys[:, None, None, :]                                 # [batch, 1, 1, S]
        return enc_mask, dec_mask, cross_mask

    def encode(self, src_ids):
        """Encoder output ("memory") [batch, src_len, d_model] for source ids [batch, src_len]."""
        enc_mask = attention_mask(padding_mask(src_ids, self.pad_id))
        return self.encoder(self.src_embed(src_ids), mask=enc_mask)

    def decode(self, tgt_in_ids, memory, src_ids, need_weights: bool = False):
        """Next-token logits [batch, tgt_len, vocab] for every target position.

        With need_weights=True returns (logits, self_weights, cross_weights) as in
        `decoder_with_weights`.
        """
        _, dec_mask, cross_mask = self.masks(src_ids, tgt_in_ids)
        x = self.tgt_embed(tgt_in_ids)
        if need_weights:
            h, self_w, cross_w = decoder_with_weights(self.decoder, x, dec_mask, memory, cross_mask)
            return self.lm_head(h), self_w, cross_w
        return self.lm_head(self.decoder(x, mask=dec_mask, memory=memory, memory_mask=cross_mask))

    def forward(self, src_ids, tgt_in_ids):
        """Logits [batch, tgt_len, tgt_vocab]: position t scores the token after tgt_in_ids[:, :t+1]."""
        if src_ids.dim() != 2 or tgt_in_ids.dim() != 2:
            raise ValueError("src_ids and tgt_in_ids must be [batch, len] id tensors, got shapes "
                             f"{tuple(src_ids.shape)} and {tuple(tgt_in_ids.shape)}")
        return self.decode(tgt_in_ids, self.encode(src_ids), src_ids)

    @torch.no_grad()
    def greedy_decode(self, src_ids, max_new_tokens: int, bos_id: int, eos_id: int, return_steps: bool = False):
        """Translate by always taking the most likely next token, one token at a time.

        Returns the generated ids [batch, n] (without <bos>; a sentence that has produced
        <eos> is padded with pad_id afterwards); stops once every sentence has produced
        <eos>, or after `max_new_tokens` tokens. With return_steps=True returns (ids, steps), a
        list of `DecodeStep`, one per generated token.
        """
        was_training = self.training
        self.eval()
        try:
            memory = self.encode(src_ids)
            batch = src_ids.shape[0]
            ys = torch.full((batch, 1), bos_id, dtype=torch.long, device=src_ids.device)
            done = torch.zeros(batch, dtype=torch.bool, device=src_ids.device)
            steps = []
            for t in range(max_new_tokens):
                if return_steps:
                    logits, self_w, cross_w = self.decode(ys, memory, src_ids, need_weights=True)
                else:
                    logits = self.decode(ys, memory, src_ids)
                next_id = logits[:, -1].argmax(-1)
                next_id = torch.where(done, torch.full_like(next_id, self.pad_id), next_id)
                if return_steps:
                    steps.append(DecodeStep(step=t, decoder_input=ys.clone(),
                                            mask=self.masks(src_ids, ys)[1], logits=logits[:, -1],
                                            next_id=next_id, self_attention=self_w, cross_attention=cross_w))
                ys = torch.cat([ys, next_id[:, None]], dim=1)
                done |= next_id == eos_id
                if done.all():
                    break
        finally:
            self.train(was_training)
        return (ys[:, 1:], steps) if return_steps else ys[:, 1:]
