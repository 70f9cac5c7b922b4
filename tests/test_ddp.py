"""Many processes with torchrun (gloo on the CPU): the same training as one process, and resumable.

Every process draws the same seeded stream of global batches and trains on its share of each.
So 2 processes of 8 windows compute, bit for bit, what 1 process computes when it accumulates
the gradients of the same two halves of each global batch of 16 (--micro-batch-size 8), with the
same number of threads (torchrun gives each process one): the tolerance of that comparison is
zero. Taking each batch of 16 whole instead changes only the order of floating-point sums,
which 60 steps of training amplify to ~4e-4 nats on the final validation loss (measured here).
"""
import dataclasses
import json
import os
import shutil
import signal
import subprocess
import sys

import psutil
import pytest
import torch

from encoding_world import train as train_module

STEPS = 60
ARGS = ["-m", "encoding_world.train", "--config", "tiny", "--max-steps", str(STEPS), "--device", "cpu", "--no-progress"]
TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"] + ARGS


def one_process(out, *extra):
    """The same run in one process of one thread, accumulating the two halves of each batch."""
    result = subprocess.run([sys.executable] + ARGS + ["--micro-batch-size", "8", "--out", str(out), *extra],
                            capture_output=True, text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])


def torchrun(out, *extra):
    result = subprocess.run(TORCHRUN + ["--out", str(out), *extra], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def two_processes(tmp_path_factory):
    out = tmp_path_factory.mktemp("ddp") / "straight"
    return out, torchrun(out)


def history(out):
    return torch.load(out / "checkpoint.pt", weights_only=True)["extra"]["history"]


def test_two_processes_train_like_one(two_processes, tmp_path):
    out, summary = two_processes
    first, second = summary["weights_sha256_by_rank"]
    assert first == second                                        # the same parameters on both ranks
    single = one_process(tmp_path / "single")
    assert summary["final_val_loss"] == single["final_val_loss"]
    assert history(out) == history(tmp_path / "single")
    saved = torch.load(out / "checkpoint.pt", weights_only=True)
    assert not [key for key in saved["model"] if key.startswith(("module.", "_orig_mod."))]
    assert len(saved["extra"]["rank_rngs"]) == 2


def test_killed_torchrun_resumes_to_the_same_result(two_processes, tmp_path):
    straight, summary = two_processes
    killed = tmp_path / "killed"
    process = subprocess.Popen(TORCHRUN + ["--out", str(killed), "--log-every", "1"], stdout=subprocess.PIPE,
                               stderr=subprocess.DEVNULL, text=True)
    kill_at = 26                                   # between the checkpoints of steps 25 and 50
    for line in process.stdout:
        if line.startswith(f"step {kill_at} "):
            # A power cut: every worker and torchrun itself, with no chance to clean up.
            for child in psutil.Process(process.pid).children(recursive=True):
                child.send_signal(signal.SIGKILL)
            process.send_signal(signal.SIGKILL)
            break
    process.wait(timeout=60)
    assert process.returncode == -signal.SIGKILL, "the run finished before it could be killed"
    assert torch.load(killed / "checkpoint.pt", weights_only=True)["step"] == 25
    shutil.copytree(killed, tmp_path / "one-process")

    resumed = torchrun(killed, "--resume")          # the same number of processes: bit for bit
    assert resumed["final_val_loss"] == summary["final_val_loss"]
    assert history(killed) == history(straight)

    # Another number of processes (here 1) goes on with the same batches, and ends there too.
    assert one_process(tmp_path / "one-process", "--resume")["final_val_loss"] == summary["final_val_loss"]
    assert history(tmp_path / "one-process") == history(straight)


def test_batch_must_share_out_evenly():
    config = train_module.CONFIGS["tiny"]              # batch_size 16
    assert train_module.batch_split(config, 2) == (8, 1)
    assert train_module.batch_split(dataclasses.replace(config, micro_batch_size=2), 2) == (8, 4)
    with pytest.raises(ValueError, match="batch_size 16 .* cannot be shared evenly by 3 processes"):
        train_module.batch_split(config, 3)
    with pytest.raises(ValueError, match="micro_batch_size 3 does not divide"):
        train_module.batch_split(dataclasses.replace(config, micro_batch_size=3), 2)
