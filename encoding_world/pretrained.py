"""The book's pretrained mini-GPT: export it from a training checkpoint, load it back.

The weights live in `data/minigpt_tang.safetensors` (a format that holds tensors and text
only, so loading it can never run code); its model card is `data/minigpt_tang.json` (the
figures, read by the tests) and `data/minigpt_tang.md` (the same figures for people).
Loading checks the weights against the SHA-256 in the card, so a damaged or swapped file
is reported rather than loaded. The three files are written by

    python -m encoding_world.train --config cpu-full --out runs/cpu-full
    python -m encoding_world.pretrained runs/cpu-full/checkpoint.pt --hardware "..."

which also recomputes the validation loss over the whole validation stream. By default
they go beside the checkpoint (runs/cpu-full/); `--out data --overwrite` replaces the
book's own model, and nothing is ever written over an exported model without --overwrite.
"""
import argparse
import dataclasses
import json
import platform
import sys
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_model, save

from . import lm_data
from .checks import check_finite, check_output_folder
from .data import DATA_DIR, DataError, data_path, restore_hint, sha256
from .gpt import GPT, GPTConfig
from .train import TrainConfig, load_data
from .training import CheckpointError, load_checkpoint, read_checkpoint, remove_leftover_temporaries, write_atomically

WEIGHTS = "minigpt_tang.safetensors"
CARD = "minigpt_tang.json"
CARD_TEXT = "minigpt_tang.md"
TRAIN_COMMAND = "python -m encoding_world.train --config cpu-full --out runs/cpu-full"


def full_validation_loss(model: GPT, data: torch.Tensor, block_size: int, batch_size: int = 256) -> float:
    """Nats per character over the whole validation stream, cut into windows of block_size."""
    return lm_data.mean_loss(model, lm_data.consecutive_windows(data, block_size), batch_size)


def load_pretrained(device=None) -> tuple[GPT, lm_data.CharVocab]:
    """The pretrained GPT (in eval mode, on `device`, default CPU) and its vocabulary.

    The weights file must have the SHA-256 its model card records (about 15 ms to check),
    and hold finite numbers; otherwise a CheckpointError names the file and how to restore it
    (a DataError, for a card that is missing its checksum or is not JSON).
    """
    card = model_card()
    path = data_path(WEIGHTS)
    expected = card.get("weights_sha256")
    if not isinstance(expected, str):
        raise DataError(f"{data_path(CARD)} has no weights_sha256 to check {WEIGHTS} against: "
                        f"{restore_hint(CARD)}")
    found = sha256(path)
    if found != expected:
        raise CheckpointError(
            f"{path} is not the model its card describes: its SHA-256 is {found[:12]}…, {CARD} records "
            f"{expected[:12]}…. The file was damaged, or replaced without its card (an export writes both); "
            f"{restore_hint(WEIGHTS)}")
    try:
        with safe_open(str(path), framework="pt") as f:
            metadata = f.metadata() or {}
        config = GPTConfig(**json.loads(metadata["model_config"]))
        vocab = lm_data.CharVocab(json.loads(metadata["vocab"]))
        model = GPT(config)
        missing, unexpected = load_model(model, str(path), strict=False)
    except (SafetensorError, OSError, KeyError, TypeError, ValueError) as err:
        raise CheckpointError(f"{path} cannot be read as the book's model ({type(err).__name__}: {err}); "
                              f"{restore_hint(WEIGHTS)}") from err
    # The LM head shares the token embedding's matrix, so the file stores that matrix once.
    if set(missing) - {"lm_head.weight", "token_embedding.weight"} or unexpected:
        raise CheckpointError(f"{path} does not fit the model: missing {missing}, unexpected {unexpected}; "
                              f"{restore_hint(WEIGHTS)}")
    try:
        for name, tensor in model.state_dict().items():
            check_finite(f"{path}: {name}", tensor, restore_hint(WEIGHTS))
    except ValueError as err:
        raise CheckpointError(str(err)) from None
    model.eval()
    return model.to(device or "cpu"), vocab


def model_card() -> dict:
    """The figures of the pretrained model's card (data/minigpt_tang.json)."""
    path = data_path(CARD)
    try:
        card = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise DataError(f"{path} is not valid JSON ({err}): {restore_hint(CARD)}") from None
    if not isinstance(card, dict):
        raise DataError(f"{path} holds a {type(card).__name__}, not a model card: {restore_hint(CARD)}")
    return card


def export(checkpoint, out_dir=None, hardware: str | None = None, training_seconds: float | None = None,
           overwrite: bool = False) -> dict:
    """Write the weights and the model card from a training checkpoint; return the card.

    They go to `out_dir`, by default the checkpoint's own folder. Files of an exported model
    already there (such as the book's own in data/) are replaced only with overwrite=True.
    Everything that can be checked is checked before the validation loss is computed.
    """
    checkpoint = Path(checkpoint)
    needed = f"the exporter needs a checkpoint written by encoding_world.train: train one with `{TRAIN_COMMAND}`"
    if not checkpoint.exists():
        raise CheckpointError(f"no checkpoint at {checkpoint}: the file is missing; {needed}")
    try:
        saved = read_checkpoint(checkpoint)    # a folder, truncated, corrupt, foreign: all refused here
    except CheckpointError as err:
        raise CheckpointError(f"{err} ({needed})") from None
    extra = saved["extra"]
    if "train_config" not in extra or "vocab" not in extra:
        raise CheckpointError(f"{checkpoint} is not a checkpoint written by encoding_world.train: "
                              f"train one with `{TRAIN_COMMAND}`")
    out_dir = checkpoint.parent if out_dir is None else Path(out_dir)
    existing = [name for name in (WEIGHTS, CARD, CARD_TEXT) if (out_dir / name).exists()]
    if existing and not overwrite:
        shipped = ", the book's own pretrained model" if out_dir.resolve() == DATA_DIR.resolve() else ""
        raise FileExistsError(f"{out_dir} already holds {', '.join(existing)}{shipped}: pass --overwrite "
                              f"(overwrite=True) to replace them, or choose another --out")
    check_output_folder(out_dir, "--out", need_bytes=checkpoint.stat().st_size)
    for name in (WEIGHTS, CARD, CARD_TEXT):
        remove_leftover_temporaries(out_dir / name)       # from an export that was killed
    history = extra.get("history") or {}
    if training_seconds is None:
        training_seconds = history.get("seconds")
    if training_seconds is None:
        raise ValueError("the checkpoint does not record the training time: pass --training-seconds "
                         "(summary.json beside the checkpoint has it)")
    try:
        train_config = TrainConfig(**extra["train_config"])
    except TypeError as err:
        raise CheckpointError(f"{checkpoint} was written by another version of encoding_world.train ({err}): "
                              f"retrain with `{TRAIN_COMMAND}`") from None
    if train_config.data is not None:
        raise CheckpointError(f"{checkpoint} was trained on --data {train_config.data}, not on the Tang poems this "
                              f"exporter describes: write with it directly, python -m encoding_world.sample "
                              f"--checkpoint {checkpoint}")
    model = GPT(train_config.model_config())
    load_checkpoint(checkpoint, model)  # checks every key and shape
    for name, tensor in model.state_dict().items():
        check_finite(f"{checkpoint}: {name}", tensor,
                     "the run diverged; export an earlier checkpoint, or retrain with a lower learning rate")
    model.eval()

    data = load_data(train_config)
    if data.vocab.tokens != list(extra["vocab"]):
        raise CheckpointError(f"{checkpoint} was trained with another vocabulary than the corpus gives now: "
                              f"retrain with `{TRAIN_COMMAND}`")
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
        "command": TRAIN_COMMAND,
    }
    metadata = {"model_config": json.dumps(card["model_config"]),
                "vocab": json.dumps(data.vocab.tokens, ensure_ascii=False)}
    # The LM head is the token embedding (tied): the file stores that matrix once, under the
    # head's name, as safetensors' save_model does.
    tensors = {k: v.contiguous() for k, v in model.state_dict().items() if k != "token_embedding.weight"}
    weights = write_atomically(out_dir / WEIGHTS, lambda f: f.write(save(tensors, metadata=metadata)))
    card["weights_sha256"] = sha256(weights)
    card_json = json.dumps(card, indent=2, ensure_ascii=False) + "\n"
    write_atomically(out_dir / CARD, lambda f: f.write(card_json.encode("utf-8")))
    write_atomically(out_dir / CARD_TEXT, lambda f: f.write(card_markdown(card).encode("utf-8")))
    return card


def card_markdown(card: dict) -> str:
    m, t = card["model_config"], card["train_config"]
    return f"""# Model card: the book's pretrained mini-GPT

A character-level, decoder-only Transformer (`encoding_world.gpt.GPT`) trained on the Tang
poems of `data/tang_poems.tsv`. Lessons 12, 13 and 15 load it with
`encoding_world.pretrained.load_pretrained()`. The figures below are also in
`minigpt_tang.json`; `tests/test_pretrained.py` recomputes the validation loss and checks it.

| | |
| --- | --- |
| weights | `minigpt_tang.safetensors` (safetensors: tensors and text only), SHA-256 `{card["weights_sha256"]}` |
| architecture | {m["n_layer"]} blocks, {m["n_head"]} heads, d_model {m["d_model"]}, context {m["block_size"]} characters, vocabulary {m["vocab_size"]} characters, tied input/output embedding |
| parameters | {card["parameters"]:,} (position embeddings excluded) |
| made by | `{card["command"]}`, then `python -m encoding_world.pretrained runs/cpu-full/checkpoint.pt --out data --overwrite` |
| training | {card["steps"]:,} steps of {t["batch_size"]} windows × {t["block_size"]} characters ({card["tokens_seen"]:,} characters seen); AdamW, learning rate {t["learning_rate"]} → {t["min_learning_rate"]} (cosine), weight decay {t["weight_decay"]}, seed {t["seed"]} |
| hardware and time | {card["hardware"]}; {card["training_seconds"] / 60:.1f} minutes of training; PyTorch {card["torch"]} |
| data | `{card["data"]["file"]}` (SHA-256 `{card["data"]["sha256"]}`); every 20th poem held out: {card["data"]["train_characters"]:,} training and {card["data"]["validation_characters"]:,} validation characters |
| validation loss | **{card["validation_loss"]:.4f} nats/character** over the whole validation stream (windows of {m["block_size"]}); {card["validation_loss_during_training"]:.4f} on the first {card["validation_windows_during_training"]:,} windows at the last evaluation during training |

For comparison (lesson 10, same split and vocabulary): the uniform model scores ln 3000 =
8.0064 and the best n-gram model (Kneser–Ney 5-gram) 4.9973 nats/character.

Limits: it has read only Tang poems, it writes plausible-looking lines that are often
meaningless, and it knows 3,000 characters (rarer ones become □). It is a teaching model.
"""


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description="Export a training checkpoint as the book's pretrained model.")
    parser.add_argument("checkpoint", type=Path)
    parser.add_argument("--out", type=Path, help="folder for the weights and the model card (default: the "
                                                 "checkpoint's folder; the book's own model is in data/)")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace an exported model already in --out (e.g. the book's, with --out data)")
    parser.add_argument("--hardware", help="what it was trained on, for the model card")
    parser.add_argument("--training-seconds", type=float, help="wall-clock training time, if not the checkpoint's")
    args = parser.parse_args(argv)
    try:
        card = export(args.checkpoint, args.out, args.hardware, args.training_seconds, overwrite=args.overwrite)
    except (OSError, CheckpointError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted: files already in --out were left as they were", file=sys.stderr)
        return 130
    out = args.checkpoint.parent if args.out is None else args.out
    print(f"validation loss {card['validation_loss']:.4f} nats/character; wrote {out / WEIGHTS}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
