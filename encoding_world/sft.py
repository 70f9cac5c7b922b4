"""Instruction tuning in miniature (指令微调, SFT) for the book's mini-GPT (lesson 16).

A pretrained language model continues text. Supervised fine-tuning (SFT) on requests and
answers teaches it to treat part of the text as a request and to answer it. Here a request
asks for a poem: a form, a title, and optionally a character the poem must contain. The
template writes a conversation out as the one string the model reads, as a chat template
does:

    render("五绝题春晓含花", "春眠不觉晓，…花落知多少。")
    == "\\n问五绝题春晓含花答春眠不觉晓，…花落知多少。\\n"

END ("\\n", the separator between poems in pretraining) opens the text, as a begin-of-text
token does, and closes the answer, as an end-of-turn token does; 问 ("ask") and 答 ("answer")
mark the user's and the model's turns. The template is terse because the model reads only
64 characters (`block_size`): a five-character quatrain is 24 characters, an eight-line
seven-character poem 64 on its own, so that form (七律) is left out.

Only the answer is learnt: `encode` gives next-token targets with the prompt's positions set
to IGNORE_INDEX (PyTorch's default `ignore_index`, and Hugging Face's label convention), so
`F.cross_entropy(logits, targets, ignore_index=IGNORE_INDEX)` averages over the answer's
characters and its closing END only. GPT's own loss ignores those targets too, so
`sft_batches` feed `train.train_steps` unchanged, and `lm_data.mean_loss(model,
sft_batch(examples, vocab))` is the mean loss per answer character. `in_form` checks an
answer's form.
"""
from __future__ import annotations

import random
import re
from dataclasses import dataclass

import torch

from .checks import check_int
from .lm_data import END, IGNORE_INDEX, UNKNOWN

__all__ = ["FORMS", "ASK", "ANSWER", "IGNORE_INDEX", "MAX_TITLE", "Request", "render", "in_form",
           "form_of", "follows", "make_requests", "encode", "sft_batch", "sft_batches"]

# name -> (characters per line, lines). 七律 (7, 8) would need 64 characters for the poem alone.
FORMS = {"五绝": (5, 4), "七绝": (7, 4), "五律": (5, 8)}
ASK, ANSWER = "问", "答"     # the user's and the model's turn, like <|user|> and <|assistant|>
MAX_TITLE = 8                 # the longest title a request may carry (a 五律 request then fits in 64)
PUNCTUATION = "，。？！"


@dataclass(frozen=True)
class Request:
    """Write a poem in `form` (a key of FORMS) titled `title`; if `char`, it must contain it."""
    form: str
    title: str
    char: str = ""

    def __post_init__(self):
        if self.form not in FORMS:
            raise ValueError(f"form must be one of {', '.join(FORMS)}, got {self.form!r}")
        if not 1 <= len(self.title) <= MAX_TITLE:
            raise ValueError(f"title must have 1 to {MAX_TITLE} characters, got {self.title!r}")
        if len(self.char) > 1:
            raise ValueError(f"char must be one character or empty, got {self.char!r}")

    @property
    def text(self) -> str:
        """The user's turn: form, 题 + title, and 含 + char when there is one."""
        return f"{self.form}题{self.title}" + (f"含{self.char}" if self.char else "")


def render(user: str, answer: str | None = None) -> str:
    """The chat template: END 问 user 答 [answer END].

    Without an answer it ends after 答, where the model is to start writing (what Hugging Face
    calls the generation prompt)."""
    prompt = f"{END}{ASK}{user}{ANSWER}"
    return prompt if answer is None else prompt + answer + END


def form_of(text: str) -> str | None:
    """The form (a key of FORMS) `text` is written in, or None.

    In form means: lines of n characters, each followed by one punctuation mark, "，" after
    odd lines and one of "。？！" after even ones, and exactly the form's number of lines.
    """
    for name, (n, lines) in FORMS.items():
        line = f"[^{PUNCTUATION}{END}]{{{n}}}"
        if re.fullmatch(f"(?:{line}，{line}[。？！]){{{lines // 2}}}", text):
            return name
    return None


def in_form(text: str, form: str) -> bool:
    """Is `text` (an answer, without its END) a poem of exactly `form`?"""
    if form not in FORMS:
        raise ValueError(f"form must be one of {', '.join(FORMS)}, got {form!r}")
    return form_of(text) == form


def follows(request: Request, answer: str) -> bool:
    """In the requested form, and containing the requested character (if any)."""
    return in_form(answer, request.form) and request.char in answer


def make_requests(poems, vocab, char_share: float = 0.5, seed: int = 0) -> list[tuple[Request, str]]:
    """(request, poem body) for every poem that can answer a request about itself.

    A poem qualifies when its body is in one of FORMS, its title has at most MAX_TITLE
    characters and no spaces, and every character of both is in the vocabulary. With
    probability `char_share` the request also names a character of the body that is not in
    the title (drawn with random.Random(seed), so the same poems give the same requests).
    """
    if not 0.0 <= char_share <= 1.0:
        raise ValueError(f"char_share must be in [0, 1], got {char_share}")
    rng = random.Random(seed)
    out = []
    for poem in poems:
        form = form_of(poem.body)
        title = poem.title
        if (form is None or not 1 <= len(title) <= MAX_TITLE or any(c.isspace() or c in PUNCTUATION for c in title)
                or UNKNOWN in title + poem.body or any(c not in vocab.index for c in title + poem.body)):
            continue
        char = ""
        if rng.random() < char_share:
            candidates = sorted({c for c in poem.body if c not in PUNCTUATION and c not in title})
            char = rng.choice(candidates)
        out.append((Request(form, title, char), poem.body))
    return out


def encode(prompt: str, answer: str, vocab, mask_prompt: bool = True) -> tuple[list[int], list[int]]:
    """Inputs and next-token targets of one example, the text being prompt + answer.

    `prompt` is render(user) (it ends with 答) and `answer` ends with END. inputs = text[:-1],
    targets = text[1:]; with mask_prompt, the targets that are prompt characters become
    IGNORE_INDEX, so that only the answer (and its END) is learnt.
    """
    if not prompt.startswith(END) or not prompt.endswith(ANSWER):
        raise ValueError(f"prompt must be render(user): END + 问 + user + 答, got {prompt!r}")
    if not answer.endswith(END):
        raise ValueError(f"answer must end with END ({END!r}), got {answer!r}")
    ids = vocab.encode(prompt + answer, strict=True)
    targets = ids[1:]
    if mask_prompt:
        targets = [IGNORE_INDEX] * (len(prompt) - 1) + targets[len(prompt) - 1:]
    return ids[:-1], targets


def sft_batch(examples, vocab, mask_prompt: bool = True, block_size: int = 64):
    """A padded batch (inputs [B, T], targets [B, T]) from (prompt, answer) pairs.

    Rows are padded on the right to the longest: inputs with END, targets with IGNORE_INDEX.
    A causal model never looks right, so the padding changes nothing in the real positions,
    and no attention mask is needed.
    """
    rows = [encode(prompt, answer, vocab, mask_prompt) for prompt, answer in examples]
    if not rows:
        raise ValueError("examples is empty")
    length = max(len(x) for x, _ in rows)
    if length > block_size:
        raise ValueError(f"an example has {length} inputs, more than block_size={block_size}")
    pad = vocab.index[END]
    x = torch.tensor([ids + [pad] * (length - len(ids)) for ids, _ in rows])
    y = torch.tensor([t + [IGNORE_INDEX] * (length - len(t)) for _, t in rows])
    return x, y


def sft_batches(examples, vocab, batch_size: int, mask_prompt: bool = True, block_size: int = 64):
    """sft_batch of examples[0:batch_size], then of the next batch_size, … in order: the
    batches `train.train_steps` takes. It needs steps × batch_size examples; with fewer,
    its next() raises StopIteration when they run out."""
    check_int("batch_size", batch_size, low=1)
    for i in range(0, len(examples), batch_size):
        yield sft_batch(examples[i:i + batch_size], vocab, mask_prompt, block_size)

