"""The training command: a run killed mid-way and resumed ends exactly like an uninterrupted one."""
import json
import math
import signal
import subprocess
import sys

import pytest
import torch

from encoding_world import train as train_module
from encoding_world.training import CheckpointError, load_checkpoint

COMMAND = [sys.executable, "-m", "encoding_world.train", "--config", "tiny", "--no-progress"]


def run_to_end(out, *extra):
    result = subprocess.run(COMMAND + ["--out", str(out), *extra], capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])


def read_history(out):
    return torch.load(out / "checkpoint.pt", weights_only=True)["extra"]["history"]


def test_killed_run_resumes_to_the_same_result(tmp_path):
    config = train_module.CONFIGS["tiny"]
    uninterrupted = run_to_end(tmp_path / "straight")

    # Start the same run, and kill it (SIGKILL: no chance to clean up) between two checkpoints.
    kill_at = config.checkpoint_every * 2 + config.checkpoint_every // 2
    process = subprocess.Popen(COMMAND + ["--out", str(tmp_path / "killed"), "--log-every", "1"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    for line in process.stdout:
        if line.startswith(f"step {kill_at} "):
            process.send_signal(signal.SIGKILL)
            break
    process.wait(timeout=60)
    assert process.returncode == -signal.SIGKILL, "the run finished before it could be killed"
    saved_step = torch.load(tmp_path / "killed" / "checkpoint.pt", weights_only=True)["step"]
    assert config.checkpoint_every * 2 <= saved_step < config.max_steps

    resumed = run_to_end(tmp_path / "killed", "--resume")
    assert resumed["final_val_loss"] == uninterrupted["final_val_loss"]
    assert read_history(tmp_path / "killed") == read_history(tmp_path / "straight")


def test_resume_without_checkpoint_or_with_another_config_is_refused(tmp_path):
    result = subprocess.run(COMMAND + ["--out", str(tmp_path), "--resume"], capture_output=True, text=True)
    assert result.returncode == 2 and "no checkpoint" in result.stderr and "without --resume" in result.stderr
    run_to_end(tmp_path, "--max-steps", "5")
    result = subprocess.run(COMMAND + ["--out", str(tmp_path), "--resume", "--max-steps", "10"],
                            capture_output=True, text=True)
    assert result.returncode == 2 and "another configuration" in result.stderr


def test_corrupt_checkpoint_gives_a_clear_error(tmp_path):
    run_to_end(tmp_path, "--max-steps", "5")
    path = tmp_path / "checkpoint.pt"
    path.write_bytes(path.read_bytes()[:1000])
    result = subprocess.run(COMMAND + ["--out", str(tmp_path), "--resume", "--max-steps", "5"],
                            capture_output=True, text=True)
    assert result.returncode == 2 and "truncated or corrupt" in result.stderr


def test_checkpoint_loads_with_weights_only_and_rebuilds_the_model(tmp_path):
    run_to_end(tmp_path, "--max-steps", "5")
    state = torch.load(tmp_path / "checkpoint.pt", weights_only=True)
    config = train_module.TrainConfig(**state["extra"]["train_config"])
    model = train_module.GPT(config.model_config())
    info = load_checkpoint(tmp_path / "checkpoint.pt", model)
    assert info["step"] == 5 and len(info["vocab"]) == config.vocab_size
    wrong = train_module.GPT(train_module.GPTConfig(vocab_size=config.vocab_size, d_model=64, n_head=2))
    with pytest.raises(CheckpointError, match="does not fit this model"):
        load_checkpoint(tmp_path / "checkpoint.pt", wrong)


def test_learning_rate_schedule():
    lrs = [train_module.cosine_lr(s, peak=1e-3, floor=1e-4, warmup=10, total=110) for s in range(111)]
    assert lrs[0] == pytest.approx(1e-4) and lrs[9] == pytest.approx(1e-3)
    assert lrs[60] == pytest.approx(5.5e-4) and lrs[110] == pytest.approx(1e-4)
    assert all(a >= b for a, b in zip(lrs[9:], lrs[10:]))


def test_unknown_config_is_named():
    with pytest.raises(ValueError, match="unknown config 'huge'.*tiny"):
        train_module.named_config("huge")


def test_float16_training_with_a_scaler_resumes_exactly(tmp_path, monkeypatch):
    # The path of a GPU without bf16 (Colab's T4), rehearsed on the CPU: float16 autocast and
    # a gradient scaler whose state is saved with the checkpoint and restored on resume.
    monkeypatch.setenv("ENCODING_WORLD_AUTOCAST", "fp16")
    config = train_module.dataclasses.replace(train_module.CONFIGS["tiny"], max_steps=20, eval_every=10,
                                              checkpoint_every=10)
    _, _, straight = train_module.run(config, tmp_path / "straight", device="cpu")
    saved = torch.load(tmp_path / "straight" / "checkpoint.pt", weights_only=True)["extra"]
    assert saved["grad_scaler"]["scale"] > 0 and all(map(math.isfinite, straight["val_loss"]))

    class Cut(Exception):
        pass

    def cut_at_15(message):                     # train() logs "step N train loss ..." every step
        if message.startswith("step 15 "):
            raise Cut
    with pytest.raises(Cut):
        train_module.run(config, tmp_path / "cut", device="cpu", log_every=1, log=cut_at_15)
    assert torch.load(tmp_path / "cut" / "checkpoint.pt", weights_only=True)["step"] == 10
    _, _, resumed = train_module.run(config, tmp_path / "cut", resume=True, device="cpu", log=lambda _: None)
    assert resumed["val_loss"] == straight["val_loss"]


def quick_config(**changes):
    return train_module.dataclasses.replace(train_module.CONFIGS["tiny"], max_steps=20, eval_every=10,
                                            checkpoint_every=10, **changes)


def test_compile_failure_falls_back_to_eager_with_one_line(tmp_path, monkeypatch):
    class Broken(torch.nn.Module):             # what torch.compile returns where it cannot compile
        def __init__(self, model):
            super().__init__()
            self._orig_mod = model

        def forward(self, *args):
            raise RuntimeError("Compiler: cc not found\nmore detail")
    monkeypatch.setattr(torch, "compile", Broken)
    lines = []
    _, _, compiled = train_module.run(quick_config(compile=True), tmp_path / "a", device="cpu", log=lines.append)
    assert lines == ["torch.compile failed (RuntimeError: Compiler: cc not found); training in eager mode instead"]
    _, _, eager = train_module.run(quick_config(), tmp_path / "b", device="cpu", log=lines.append)
    assert compiled["val_loss"] == eager["val_loss"]        # the trial changed no random state, left no gradient


def test_compiled_run_resumes_into_an_uncompiled_one(tmp_path, monkeypatch):
    # torch.compile really traces the model (TorchDynamo and AOTAutograd); the "aot_eager" backend
    # runs the traced graphs without generating C++, which would take minutes on 2 cores.
    compile_for_real = torch.compile
    monkeypatch.setattr(torch, "compile", lambda model: compile_for_real(model, backend="aot_eager"))

    class Cut(Exception):
        pass

    def cut_at_15(step, loss):
        if step == 15:
            raise Cut
    with pytest.raises(Cut):
        train_module.run(quick_config(compile=True), tmp_path / "run", device="cpu", on_step=cut_at_15,
                         log=lambda _: None)
    state = torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=True)
    assert state["step"] == 10 and not [key for key in state["model"] if "_orig_mod" in key]
    assert state["extra"]["train_config"]["compile"] is True
    _, _, resumed = train_module.run(quick_config(), tmp_path / "run", resume=True, device="cpu", log=lambda _: None)
    _, _, eager = train_module.run(quick_config(), tmp_path / "eager", device="cpu", log=lambda _: None)
    assert resumed["val_loss"] == pytest.approx(eager["val_loss"], abs=1e-5)


@pytest.mark.parametrize("arch, n_kv_head", [("gpt", None), ("llama", 1)])
def test_each_architecture_trains_and_resumes_exactly(tmp_path, arch, n_kv_head):
    # arch selects the model in the training configuration: the mini-GPT or its LLaMA-style
    # twin (lesson 14), here with grouped-query attention (1 key/value head for 2 heads).
    config = train_module.dataclasses.replace(train_module.CONFIGS["tiny"], max_steps=8, eval_every=4,
                                              checkpoint_every=4, arch=arch, n_kv_head=n_kv_head)
    model, _, straight = train_module.run(config, tmp_path / "straight", device="cpu")
    expected = train_module.LlamaGPT if arch == "llama" else train_module.GPT
    assert type(model) is expected and straight["val_loss"][-1] < straight["val_loss"][0] + 1.0
    if arch == "llama":
        assert model.config.n_kv_head == 1 and model.blocks[0].attn.k_proj.weight.shape[0] == model.config.head_dim

    class Cut(Exception):
        pass

    def cut_at_6(step, loss):
        if step == 6:
            raise Cut
    with pytest.raises(Cut):
        train_module.run(config, tmp_path / "cut", device="cpu", on_step=cut_at_6)
    assert torch.load(tmp_path / "cut" / "checkpoint.pt", weights_only=True)["step"] == 4
    resumed_model, _, resumed = train_module.run(config, tmp_path / "cut", resume=True, device="cpu",
                                                 log=lambda _: None)
    assert resumed["val_loss"] == straight["val_loss"] and resumed["train_loss"] == straight["train_loss"]
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), resumed_model.state_dict().values()))

    other = "gpt" if arch == "llama" else "llama"   # a checkpoint of one architecture never resumes as the other
    with pytest.raises(CheckpointError, match=f"arch is '{arch}' in the checkpoint and '{other}' now"):
        train_module.run(train_module.dataclasses.replace(config, arch=other, n_kv_head=None), tmp_path / "cut",
                         resume=True, device="cpu", log=lambda _: None)


def test_arch_settings_are_checked_and_offered_on_the_command_line(tmp_path):
    with pytest.raises(ValueError, match="arch must be one of 'gpt', 'llama', got 'mamba'"):
        train_module.check_config(train_module.TrainConfig(arch="mamba"))
    with pytest.raises(ValueError, match="n_kv_head=2 is a setting of arch='llama'"):
        train_module.check_config(train_module.TrainConfig(n_kv_head=2))
    with pytest.raises(ValueError, match="must divide n_head"):
        train_module.check_config(train_module.TrainConfig(arch="llama", n_kv_head=3))
    summary = run_to_end(tmp_path, "--max-steps", "3", "--arch", "llama", "--n-kv-head", "1")
    assert summary["arch"] == "llama" and summary["steps"] == 3
    saved = torch.load(tmp_path / "checkpoint.pt", weights_only=True)["extra"]["train_config"]
    assert saved["arch"] == "llama" and saved["n_kv_head"] == 1


def test_checkpoints_written_before_arch_existed_still_resume(tmp_path):
    config = train_module.dataclasses.replace(train_module.CONFIGS["tiny"], max_steps=4, checkpoint_every=2)
    train_module.run(config, tmp_path, device="cpu")
    path = tmp_path / "checkpoint.pt"
    state = torch.load(path, weights_only=True)
    for name in ("arch", "n_kv_head"):
        del state["extra"]["train_config"][name]
    torch.save(state, path)
    train_module.run(train_module.dataclasses.replace(config, max_steps=6), tmp_path, extend=True, device="cpu",
                     log=lambda _: None)
