"""python -m myconv.train: short runs (a few steps each) of the training script,
its outputs, --resume, the float64 match with nn.Conv2d, and DDP on 2 gloo
processes."""
import csv
import json
import os
import socket
import subprocess
import sys

import pytest
import torch

import myconv
from myconv import train


def run(tmp_path, *args, out="run"):
    return train.main(["--out", str(tmp_path / out), "--no-progress", *args])


def params(path):
    return torch.load(path, weights_only=False)["model"]


def test_short_run_writes_checkpoint_metrics_and_plot(tmp_path):
    result = run(tmp_path, "--epochs", "2", "--batch-size", "128")
    out = tmp_path / "run"
    assert len(result["history"]) == 2 and result["steps"] == 2 * 12  # 1438 images / 128
    assert 0.0 <= result["test_accuracy"] <= 1.0 and result["images_per_s"] > 0
    rows = list(csv.DictReader(open(out / "metrics-myconv.csv")))
    assert [int(r["epoch"]) for r in rows] == [1, 2]
    assert float(rows[1]["train_loss"]) < float(rows[0]["train_loss"])
    data = json.load(open(out / "metrics-myconv.json"))
    assert len(data["step_losses"]) == 24 and data["conv"] == "myconv"
    assert (out / "training.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    ckpt = torch.load(out / "checkpoint-myconv.pt", weights_only=False)
    assert ckpt["epoch"] == 2 and {"model", "optimizer", "scheduler", "rng"} <= set(ckpt)


def test_checkpoint_loads_into_the_plain_nn_conv2d_model(tmp_path):
    run(tmp_path, "--steps", "5", "--no-plot")
    state = params(tmp_path / "run" / "checkpoint-myconv.pt")
    plain = train.small_cnn(1, 10)  # nn.Conv2d layers
    plain.load_state_dict(state)
    converted = myconv.convert(train.small_cnn(1, 10))
    converted.load_state_dict(state)
    assert any(type(m) is myconv.Conv2d for m in converted.modules())
    x = torch.rand(4, 1, 8, 8)
    plain.eval(), converted.eval()
    torch.testing.assert_close(converted(x), plain(x), rtol=1e-5, atol=1e-6)


def test_myconv_and_torch_losses_match_in_float64_for_50_steps(tmp_path):
    ours = run(tmp_path, "--dtype", "float64", "--steps", "50", "--no-plot")
    ref = run(tmp_path, "--dtype", "float64", "--steps", "50", "--no-plot", "--conv", "torch")
    assert len(ours["step_losses"]) == len(ref["step_losses"]) == 50
    for a, b in zip(ours["step_losses"], ref["step_losses"]):
        assert abs(a - b) <= 1e-8 * abs(b)
    # both runs in one folder: one plot overlays them
    assert (tmp_path / "run" / "metrics-torch.json").exists()


def test_resume_ends_where_an_uninterrupted_run_ends(tmp_path):
    whole = run(tmp_path, "--dtype", "float64", "--epochs", "2", "--no-plot", out="whole")
    # interrupted in the middle of the second epoch (23 steps an epoch), then resumed
    first = run(tmp_path, "--dtype", "float64", "--epochs", "2", "--steps", "30", "--no-plot", out="parts")
    assert first["steps"] == 30
    rest = run(tmp_path, "--dtype", "float64", "--epochs", "2", "--resume", "--no-plot", out="parts")
    assert rest["steps"] == whole["steps"]
    assert rest["step_losses"] == whole["step_losses"]
    a, b = params(tmp_path / "whole" / "checkpoint-myconv.pt"), params(tmp_path / "parts" / "checkpoint-myconv.pt")
    for k in a:
        assert torch.equal(a[k], b[k]), k
    assert [h["epoch"] for h in rest["history"]] == [1, 2]


def test_image_folder_data(tmp_path):
    from PIL import Image

    g = torch.Generator().manual_seed(0)
    for label in ("bright", "dark"):
        os.makedirs(tmp_path / "data" / label)
        for i in range(12):
            level = 200 if label == "bright" else 40
            pixels = (level + 20 * torch.randn(10, 10, generator=g)).clamp(0, 255).to(torch.uint8)
            Image.fromarray(pixels.numpy(), mode="L").save(tmp_path / "data" / label / f"{i}.png")
    result = run(tmp_path, "--data", str(tmp_path / "data"), "--image-size", "12", "--epochs", "2",
                 "--batch-size", "8", "--no-plot")
    assert len(result["history"]) == 2


def test_amp_runs(tmp_path):
    result = run(tmp_path, "--amp", "--steps", "4", "--no-plot")
    assert len(result["step_losses"]) == 4 and all(l == l for l in result["step_losses"])


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_ddp_on_two_gloo_processes_equals_one_process_over_the_combined_batch(tmp_path):
    steps = "5"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_addr=127.0.0.1",
           f"--master_port={free_port()}", "-m", "myconv.train", "--ddp", "--dtype", "float64",
           "--steps", steps, "--batch-size", "16", "--out", str(tmp_path / "ddp"), "--no-progress", "--no-plot"]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    ddp = json.load(open(tmp_path / "ddp" / "metrics-myconv.json"))
    assert ddp["world_size"] == 2 and ddp["ranks_identical"] is True
    single = run(tmp_path, "--dtype", "float64", "--steps", steps, "--batch-size", "32", "--no-plot", out="single")
    a = params(tmp_path / "ddp" / "checkpoint-myconv.pt")
    b = params(tmp_path / "single" / "checkpoint-myconv.pt")
    for k in b:
        if b[k].is_floating_point():
            scale = b[k].abs().max().item() or 1.0
            assert (a[k] - b[k]).abs().max().item() <= 1e-8 * scale, k
    for x, y in zip(ddp["step_losses"], single["step_losses"]):
        assert abs(x - y) <= 1e-8 * abs(y)


def test_ddp_without_torchrun_says_how_to_launch(tmp_path, monkeypatch):
    monkeypatch.delenv("RANK", raising=False)
    with pytest.raises(SystemExit, match="torchrun"):
        run(tmp_path, "--ddp", "--steps", "1")
