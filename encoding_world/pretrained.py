"""The book's pretrained mini-GPT: export it from a training checkpoint, load it back.

The weights live in `data/minigpt_tang.safetensors` (a format that holds tensors and text
only, so loading it can never run code); its model card is `data/minigpt_tang.json` (the
figures, read by the tests) and `data/minigpt_tang.md` (the same figures for people).
Both are written by

    python -m encoding_world.train --config cpu-full --out runs/cpu-full
    python -m encoding_world.pretrained runs/cpu-full/checkpoint.pt --hardware "..."

which also recomputes the validation loss over the whole validation stream.
"""
import argparse
import dataclasses
import hashlib
import json
import platform
import sys
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import load_model, save_model

from . import lm_data
from .data import DATA_DIR, data_path
from .gpt import GPT, GPTConfig
from .train import TrainConfig, evaluate, load_data
from .training import CheckpointError, load_checkpoint

WEIGHTS = "minigpt_tang.safetensors"
CARD = "minigpt_tang.json"
CARD_TEXT = "minigpt_tang.md"


def sha256(path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def full_validation_loss(model: GPT, data: torch.Tensor, block_size: int, batch_size: int = 256) -> float:
    """Nats per character over the whole validation stream, cut into windows of block_size."""
    config = TrainConfig(block_size=block_size, batch_size=batch_size, eval_windows=None)
    device = next(model.parameters()).device
    return evaluate(model, data, config, device)


def load_pretrained(device=None) -> tuple[GPT, lm_data.CharVocab]:
    """The pretrained GPT (in eval mode, on `device`, default CPU) and its vocabulary."""
    path = data_path(WEIGHTS)
    with safe_open(path, framework="pt") as f:
        metadata = f.metadata() or {}
    if "model_config" not in metadata or "vocab" not in metadata:
        raise CheckpointError(f"{path} has no model_config/vocab metadata; re-export it with "
                              f"`python -m encoding_world.pretrained CHECKPOINT`")
    model = GPT(GPTConfig(**json.loads(metadata["model_config"])))
    missing, unexpected = load_model(model, path, strict=False)
    # The LM head shares the token embedding's matrix, so the file stores that matrix once.
    if set(missing) - {"lm_head.weight", "token_embedding.weight"} or unexpected:
        raise CheckpointError(f"{path} does not fit the model: missing {missing}, unexpected {unexpected}")
    model.eval()
    return model.to(device or "cpu"), lm_data.CharVocab(json.loads(metadata["vocab"]))


def model_card() -> dict:
    """The figures of the pretrained model's card (data/minigpt_tang.json)."""
    with open(data_path(CARD), encoding="utf-8") as f:
        return json.load(f)


def export(checkpoint: Path, out_dir: Path = DATA_DIR, hardware: str | None = None,
           training_seconds: float | None = None) -> dict:
    """Write the weights and the model card from a training checkpoint; return the card."""
    saved = torch.load(checkpoint, map_location="cpu", weights_only=True) if Path(checkpoint).is_file() else {}
    extra = saved.get("extra", {}) if isinstance(saved, dict) else {}
    if "train_config" not in extra or "vocab" not in extra:
        raise CheckpointError(f"{checkpoint} is not a checkpoint written by encoding_world.train: "
                              f"train one with `python -m encoding_world.train --config cpu-full`")
    train_config = TrainConfig(**extra["train_config"])
    model = GPT(train_config.model_config())
    load_checkpoint(checkpoint, model)  # checks every key and shape
    model.eval()

    data = load_data(train_config)
    if data.vocab.chars != list(extra["vocab"]):
        raise CheckpointError(f"{checkpoint} was trained with another vocabulary than the corpus gives now")
    history = extra["history"]
    if training_seconds is None:
        training_seconds = history.get("seconds")
    if training_seconds is None:
        raise ValueError("the checkpoint does not record the training time: pass --training-seconds "
                         "(summary.json beside the checkpoint has it)")
    card = {
        "model": "mini-GPT on Tang poems (character level)",
        "model_config": train_config.model_config().to_dict(),
        "train_config": dataclasses.asdict(train_config),
        "parameters": model.num_parameters(),
        "steps": saved["step"],
        "tokens_seen": saved["step"] * train_config.batch_size * train_config.block_size,
        "training_seconds": round(training_seconds, 1),
        "hardware": hardware or f"{platform.processor() or platform.machine()}, CPU",
        "torch": torch.__version__.split("+")[0],
        "data": {"file": "data/tang_poems.tsv", "sha256": sha256(data_path("tang_poems.tsv")),
                 "train_characters": data.train.numel(), "validation_characters": data.val.numel()},
        "validation_loss_during_training": round(history["val_loss"][-1], 4),
        "validation_windows_during_training": train_config.eval_windows,
        "validation_loss": round(full_validation_loss(model, data.val, train_config.block_size), 4),
        "command": "python -m encoding_world.train --config cpu-full --out runs/cpu-full",
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    metadata = {"model_config": json.dumps(card["model_config"]),
                "vocab": json.dumps(data.vocab.chars, ensure_ascii=False)}
    save_model(model, str(out_dir / WEIGHTS), metadata=metadata)
    card["weights_sha256"] = sha256(out_dir / WEIGHTS)
    (out_dir / CARD).write_text(json.dumps(card, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    (out_dir / CARD_TEXT).write_text(card_markdown(card), encoding="utf-8")
    return card


def card_markdown(card: dict) -> str:
    m, t = card["model_config"], card["train_config"]
    return f"""# Model card: the book's pretrained mini-GPT

A character-level, decoder-only Transformer (`encoding_world.gpt.GPT`) trained on the Tang
poems of `data/tang_poems.tsv`. Lessons 10, 11 and 12 load it with
`encoding_world.pretrained.load_pretrained()`. The figures below are also in
`minigpt_tang.json`; `tests/test_pretrained.py` recomputes the validation loss and checks it.

| | |
| --- | --- |
| weights | `minigpt_tang.safetensors` (safetensors: tensors and text only), SHA-256 `{card["weights_sha256"]}` |
| architecture | {m["n_layer"]} blocks, {m["n_head"]} heads, d_model {m["d_model"]}, context {m["block_size"]} characters, vocabulary {m["vocab_size"]} characters, tied input/output embedding |
| parameters | {card["parameters"]:,} (position embeddings excluded) |
| made by | `{card["command"]}`, then `python -m encoding_world.pretrained runs/cpu-full/checkpoint.pt` |
| training | {card["steps"]:,} steps of {t["batch_size"]} windows × {t["block_size"]} characters ({card["tokens_seen"]:,} characters seen); AdamW, learning rate {t["learning_rate"]} → {t["min_learning_rate"]} (cosine), weight decay {t["weight_decay"]}, seed {t["seed"]} |
| hardware and time | {card["hardware"]}; {card["training_seconds"] / 60:.1f} minutes of training; PyTorch {card["torch"]} |
| data | `{card["data"]["file"]}` (SHA-256 `{card["data"]["sha256"]}`); every 20th poem held out: {card["data"]["train_characters"]:,} training and {card["data"]["validation_characters"]:,} validation characters |
| validation loss | **{card["validation_loss"]:.4f} nats/character** over the whole validation stream (windows of {m["block_size"]}); {card["validation_loss_during_training"]:.4f} on the first {card["validation_windows_during_training"]:,} windows at the last evaluation during training |

For comparison (lesson 9, same split and vocabulary): the uniform model scores ln 3000 =
8.0064 and the best n-gram model (Kneser–Ney 5-gram) 4.9973 nats/character.

Limits: it has read only Tang poems, it writes plausible-looking lines that are often
meaningless, and it knows 3,000 characters (rarer ones become □). It is a teaching model.
"""


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description="Export a training checkpoint as the book's pretrained model.")
    parser.add_argument("checkpoint", type=Path)
    parser.add_argument("--out", type=Path, default=DATA_DIR)
    parser.add_argument("--hardware", help="what it was trained on, for the model card")
    parser.add_argument("--training-seconds", type=float, help="wall-clock training time, if not the checkpoint's")
    args = parser.parse_args(argv)
    try:
        card = export(args.checkpoint, args.out, args.hardware, args.training_seconds)
    except (FileNotFoundError, CheckpointError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"validation loss {card['validation_loss']:.4f} nats/character; wrote {args.out / WEIGHTS}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
