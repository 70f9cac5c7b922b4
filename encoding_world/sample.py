"""Write with a trained mini-GPT from the terminal: `python -m encoding_world.sample`.

    python -m encoding_world.sample                                   # a new poem from the book's model
    python -m encoding_world.sample --prompt 春风 --num-samples 3 --temperature 0.8 --top-k 50
    python -m encoding_world.sample --checkpoint runs/mine --prompt "Once" --max-new-tokens 300

The model is the book's pretrained one (data/minigpt_tang.safetensors), or with --checkpoint
any checkpoint that `python -m encoding_world.train` wrote (its folder or the file), with the
vocabulary stored in it. The text is chosen by lesson 13's decoding functions, through the
book's one generation loop (`decoding.decode`), and written to the terminal as it is
generated. A sample starts a new document (the end token comes first), so an empty prompt
starts a new poem; it ends at the model's end token or after --max-new-tokens. Characters
of the prompt that the vocabulary lacks are named on stderr, with what they become (the
unknown token □): never silently dropped. The same --seed writes the same samples.
"""
import argparse
import sys
from pathlib import Path

import torch

from . import lm_data
from .checks import check_int
from .data import DataError
from .decoding import _check_settings, decode
from .gpt import GPT, GPTConfig
from .runtime import DeviceUnavailableError, get_device
from .training import CheckpointError, load_checkpoint, read_checkpoint


def load_model(checkpoint=None, device=None) -> tuple[GPT, lm_data.CharVocab]:
    """The model and vocabulary of a training checkpoint (a file, or a folder holding
    checkpoint.pt), or the book's pretrained model when `checkpoint` is None; in eval mode."""
    device = get_device(device) if device is not None else torch.device("cpu")
    if checkpoint is None:
        from .pretrained import load_pretrained
        return load_pretrained(device)
    path = Path(checkpoint)
    if path.is_dir() and (path / "checkpoint.pt").is_file():
        path = path / "checkpoint.pt"
    extra = read_checkpoint(path)["extra"]
    if "train_config" not in extra or "vocab" not in extra:
        raise CheckpointError(f"{path} was not written by encoding_world.train (it holds no train_config and "
                              f"vocab): give the checkpoint of a training run, or leave out --checkpoint for "
                              f"the book's pretrained model")
    saved = extra["train_config"]
    try:
        vocab = lm_data.CharVocab.from_tokens(extra["vocab"])
    except ValueError as err:
        raise CheckpointError(f"{path}: its vocabulary cannot be read ({err})") from None
    fields = set(GPTConfig.__dataclass_fields__)
    model_config = GPTConfig(**{key: value for key, value in saved.items() if key in fields})
    if saved.get("data") is not None:              # trained on a file: the model has its vocabulary's size
        model_config.vocab_size = len(vocab)
    if len(vocab) > model_config.vocab_size:
        raise CheckpointError(f"{path}: its vocabulary has {len(vocab)} tokens but the model only "
                              f"{model_config.vocab_size}: the file is not a consistent training checkpoint")
    model = GPT(model_config)
    load_checkpoint(path, model)       # every key and shape checked
    return model.to(device).eval(), vocab


def describe(char: str) -> str:
    """A character by name, as a message shows it: '龘' (U+9F98)."""
    return f"{char!r} (U+{ord(char):04X})"


def encode_prompt(vocab: lm_data.CharVocab, prompt: str, warn=print) -> list[int]:
    """The ids of a sample's start: the end token (a new document), then the prompt; each
    character the vocabulary lacks is named once through `warn`."""
    missing = sorted({c for c in prompt if c not in vocab})
    if missing:
        names = ", ".join(describe(c) for c in missing)
        warn(f"not in the model's vocabulary: {names}; each becomes the unknown token "
             f"{lm_data.UNKNOWN!r}, so the model reads the prompt as {vocab.decode(vocab.encode(prompt))!r}")
    return [0] + vocab.encode(prompt)


def sample(model, vocab, prompt: str = "", num_samples: int = 1, max_new_tokens: int = 200,
           temperature: float = 1.0, top_k: int | None = None, top_p: float | None = None, seed: int = 0,
           write=None, warn=print) -> list[str]:
    """`num_samples` texts, each the prompt and what the model writes after it, one after
    another from one generator seeded with `seed`; write(text), if given, receives the text
    piece by piece as it is generated (the prompt first), with a newline between two samples
    (a blank line where the model's documents may hold newlines)."""
    check_int("num_samples", num_samples, low=1)
    check_int("max_new_tokens", max_new_tokens, low=0)
    _check_settings(temperature, top_k, top_p)
    device = next(model.parameters()).device
    start = torch.tensor([encode_prompt(vocab, prompt, warn)], device=device)
    generator = torch.Generator(device).manual_seed(seed)
    separator = "\n" if vocab.end == lm_data.END else "\n\n"
    texts = []
    for i in range(num_samples):
        if i and write is not None:
            write(separator)
        pieces = [vocab.decode(start[0, 1:])]
        if write is not None:
            write(pieces[0])

        def on_token(next_id, pieces=pieces):   # called within this iteration
            token = int(next_id[0, 0])
            if token != 0:                     # the end token closes the sample: not written
                pieces.append(vocab.tokens[token])
                if write is not None:
                    write(pieces[-1])
        decode(model, start, max_new_tokens, temperature, top_k, top_p, generator, stop_id=0, on_token=on_token)
        texts.append("".join(pieces))
    return texts


def _positive(text: str) -> int:
    try:
        return check_int("the value", int(text), low=1)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive whole number, got {text!r}") from None


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description="Write text with the book's mini-GPT or a checkpoint of your own.")
    parser.add_argument("--checkpoint", type=Path,
                        help="a checkpoint written by encoding_world.train, or its folder (default: the book's "
                             "pretrained model)")
    parser.add_argument("--prompt", default="", help="how the text begins (default: empty, a new poem)")
    parser.add_argument("--num-samples", type=_positive, default=1)
    parser.add_argument("--max-new-tokens", type=_positive, default=200,
                        help="at most this many characters after the prompt (a sample ends earlier at the "
                             "model's end token)")
    parser.add_argument("--temperature", type=float, default=0.8, help="0 for greedy decoding")
    parser.add_argument("--top-k", type=int, help="keep the k most probable tokens")
    parser.add_argument("--top-p", type=float, help="keep the most probable tokens whose probabilities sum to p")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", help="cpu, cuda or mps (default: cpu)")
    args = parser.parse_args(argv)
    stream = sys.stdout.isatty()

    def write(text: str) -> None:
        sys.stdout.write(text)
        if stream:
            sys.stdout.flush()

    try:
        _check_settings(args.temperature, args.top_k, args.top_p)      # before loading anything
        model, vocab = load_model(args.checkpoint, args.device)
        sample(model, vocab, args.prompt, args.num_samples, args.max_new_tokens, args.temperature, args.top_k,
               args.top_p, seed=args.seed, write=write, warn=lambda message: print(message, file=sys.stderr))
        write("\n")
        sys.stdout.flush()
    except (OSError, ValueError, TypeError, CheckpointError, DataError, DeviceUnavailableError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("\ninterrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
