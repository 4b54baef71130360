"""Smoke test of the benchmark tool (python -m myconv.benchmark): it runs, and
writes its table, raw samples and plot. No timing assertions: speed goals are
judged on the tool's output (docs/benchmarks.md), never in tests."""
import json

import pytest
import torch

from myconv import benchmark


TINY = [
    benchmark.Layer("tiny3x3", "tiny 3x3 (4->6, 9)", 2, 4, 6, 9, 3, padding=1),
    benchmark.Layer("tinydw", "tiny depthwise (4, 8)", 2, 4, 4, 8, 3, padding=1, groups=4),
    benchmark.Layer("tinyT", "tiny transposed 3x3/2 (4->6, 5)", 2, 4, 6, 5, 3, stride=2, padding=1,
                    transposed=True, output_padding=1),
    benchmark.Layer("tiny1d", "tiny 1-D k5/2 (3->4, 40)", 2, 3, 4, 40, 5, stride=2, dims=1),
    benchmark.Layer("tiny3d", "tiny 3-D (2->3, 4x5x6)", 2, 2, 3, (4, 5, 6), (3, 1, 3), padding=(1, 0, 1), dims=3),
    benchmark.Layer("tinyT3d", "tiny transposed 3-D (3->2, 3x3x3)", 1, 3, 2, 3, 2, stride=2, transposed=True,
                    dims=3),
]


@pytest.mark.parametrize("channels_last", [False, True])
def test_benchmark_writes_table_samples_and_plot(tmp_path, channels_last):
    printed = []
    rows = benchmark.run(TINY, min_run_time=0.001, channels_last=channels_last, out_dir=str(tmp_path),
                         progress=False, print_fn=printed.append)
    assert len(rows) == 2 * len(TINY)  # forward and forward+backward
    table = (tmp_path / "benchmark.md").read_text()
    assert "geometric mean" in table and "tiny 3x3" in table and table.strip() in printed[0]
    data = json.loads((tmp_path / "benchmark.json").read_text())
    assert data["machine"]["channels_last"] is channels_last
    for row in data["rows"]:
        names = set(row["results"])
        assert {"myconv", "F.conv", "aten-im2col", "gemm"} <= names
        assert ("unfold+mm" in names) == (row["layer"]["groups"] == 1 and row["layer"]["dims"] == 2)
        for res in row["results"].values():
            assert len(res["samples"]) >= 5 and all(s > 0 for s in res["samples"])
    assert (tmp_path / "benchmark.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_cli_lists_the_suite_and_rejects_unknown_layers(capsys):
    benchmark.main(["--list"])
    out = capsys.readouterr().out
    assert all(layer.key in out for layer in benchmark.SUITES["all"])
    assert "small:" in out and "tiny" in out
    with pytest.raises(SystemExit, match="unknown layer"):
        benchmark.main(["--layers", "nope", "--no-progress"])


@pytest.mark.parametrize("layer", benchmark.SUITES["all"] + TINY, ids=lambda l: l.key)
def test_layer_sizes_match_torch_functional(layer):
    x = torch.zeros((1,) + layer.input_shape()[1:], device="meta")
    w = torch.zeros(layer.weight_shape(), device="meta")
    name = f"conv_transpose{layer.dims}d" if layer.transposed else f"conv{layer.dims}d"
    y = getattr(torch.nn.functional, name)(x, w, **layer.args())
    assert tuple(y.shape[1:]) == layer.output_shape()[1:]


def test_cli_runs_a_layer_with_options(tmp_path, capsys):
    threads = torch.get_num_threads()
    try:
        benchmark.main(["--layers", "seed", "--batch", "1", "--threads", "1", "--pass", "forward",
                        "--min-run-time", "0.001", "--no-progress", "--out", str(tmp_path)])
    finally:
        torch.set_num_threads(threads)
    out = capsys.readouterr().out
    assert "seed 3x3" in out and "1 threads" in out
    assert (tmp_path / "benchmark.json").exists()


def test_cli_sets_the_engine_and_tile_size_for_its_run_only(tmp_path, capsys):
    import myconv
    myconv.set_cpu_gemm_engine("aten")
    try:
        benchmark.main(["--quick", "--batch", "1", "--cpu-gemm-engine", "blas", "--tile-bytes", "65536",
                        "--pass", "forward", "--min-run-time", "0.001", "--no-progress", "--out", str(tmp_path)])
        assert myconv.get_cpu_gemm_engine() == "aten" and myconv.get_tile_bytes() == 0
        machine = json.loads((tmp_path / "benchmark.json").read_text())["machine"]
        assert machine["cpu_gemm_engine"] == "blas" and machine["tile_bytes"] == 65536
        benchmark.main(["--quick", "--batch", "2", "--pass", "forward", "--min-run-time", "0.001",
                        "--no-progress", "--out", str(tmp_path)])
        data = json.loads((tmp_path / "benchmark.json").read_text())
        assert data["machine"]["cpu_gemm_engine"] == "aten"  # the caller's setting
        assert [r["layer"]["n"] for r in data["rows"]] == [2]  # --quick takes --batch
    finally:
        myconv.set_cpu_gemm_engine("auto")
    assert "seed 3x3" in capsys.readouterr().out


def test_cli_runs_several_batch_sizes(tmp_path, capsys):
    benchmark.main(["--layers", "seed", "--batch", "1,2", "--pass", "forward", "--min-run-time", "0.001",
                    "--no-progress", "--out", str(tmp_path)])
    out = capsys.readouterr().out
    assert "## batch 1" in out and "## batch 2" in out
    for b in (1, 2):
        rows = json.loads((tmp_path / f"batch-{b}" / "benchmark.json").read_text())["rows"]
        assert [r["layer"]["n"] for r in rows] == [b]
    with pytest.raises(SystemExit, match="--batch expects integers"):
        benchmark.main(["--batch", "8,x"])


@pytest.fixture
def precision_flags_restored():
    """The process's TF32 settings (current API) as they were before the test."""
    saved = (torch.backends.cuda.matmul.fp32_precision, torch.backends.cudnn.conv.fp32_precision,
             torch.backends.cudnn.rnn.fp32_precision)
    yield saved
    (torch.backends.cuda.matmul.fp32_precision, torch.backends.cudnn.conv.fp32_precision,
     torch.backends.cudnn.rnn.fp32_precision) = saved


def test_the_legacy_tf32_trap_is_real_here(precision_flags_restored):
    # What killed `--device cuda` on its first case: cuDNN's precision set
    # through the current API, then torch.backends.cudnn.flags(), which reads
    # the legacy getter. It raises on the CPU too, so the benchmark's own
    # handling (next tests) is checked without a GPU.
    torch.backends.cudnn.conv.fp32_precision = "ieee"
    try:
        with torch.backends.cudnn.flags(enabled=False):
            pass
    except RuntimeError as e:
        assert "legacy and new APIs" in str(e)
    else:
        pytest.skip(f"torch {torch.__version__} no longer raises here (the benchmark avoids the getter anyway)")


@pytest.mark.parametrize("tf32", [False, True], ids=["ieee", "tf32"])
def test_the_aten_comparator_runs_under_the_cuda_precision_setting(tf32, precision_flags_restored):
    # the benchmark's CUDA set-up, then every implementation of a case
    # (aten-im2col switches cuDNN and oneDNN off) on the CPU
    with benchmark.cuda_fp32_precision(tf32):
        want = "tf32" if tf32 else "ieee"
        assert torch.backends.cuda.matmul.fp32_precision == want
        assert torch.backends.cudnn.conv.fp32_precision == want
        rows = benchmark.run(TINY[:1], min_run_time=0.001, progress=False, print_fn=lambda *_: None)
        assert {"myconv", "F.conv", "aten-im2col", "unfold+mm", "gemm"} <= set(rows[0]["results"])
        with benchmark.aten_im2col_flags():
            assert not torch.backends.cudnn.enabled and not torch.backends.mkldnn.enabled
        assert torch.backends.cuda.matmul.fp32_precision == want  # the comparator left TF32 alone
    saved = precision_flags_restored
    assert (torch.backends.cuda.matmul.fp32_precision, torch.backends.cudnn.conv.fp32_precision) == saved[:2]
    assert torch.backends.cudnn.enabled and torch.backends.mkldnn.enabled


def test_cpu_and_cuda_side_by_side_in_one_report(tmp_path, capsys, precision_flags_restored):
    benchmark.main(["--device", "cpu,cuda", "--quick", "--batch", "1", "--pass", "forward", "--min-run-time",
                    "0.001", "--no-progress", "--out", str(tmp_path)])
    out = capsys.readouterr().out
    data = json.loads((tmp_path / "benchmark.json").read_text())
    measured = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    assert list(data["devices"]) == measured
    assert [r["device"] for r in data["rows"]] == measured
    if not torch.cuda.is_available():
        assert data["skipped"] == {"cuda": "no CUDA device: skipped"} and "cuda: no CUDA device" in out
    assert (tmp_path / "benchmark.png").exists()
    # main restores the precision it set for CUDA
    assert (torch.backends.cuda.matmul.fp32_precision,
            torch.backends.cudnn.conv.fp32_precision) == precision_flags_restored[:2]
    with pytest.raises(SystemExit, match="--device expects"):
        benchmark.main(["--device", "cpu,tpu"])
    assert benchmark.parse_devices("cpu, cuda,cpu") == ["cpu", "cuda"]
    if not torch.cuda.is_available():  # every device asked for skipped: a failure, not an empty report
        with pytest.raises(SystemExit, match="nothing measured"):
            benchmark.main(["--device", "cuda", "--quick", "--no-progress", "--min-run-time", "0.001"])


def test_a_table_of_two_devices_has_a_device_column_and_means_per_device():
    def row(device, seconds, peak):
        results = {k: {"seconds": seconds * f, "samples": [seconds * f] * 5, "peak_bytes": peak}
                   for k, f in (("myconv", 1.0), ("F.conv", 2.0), ("aten-im2col", 3.0), ("gemm", 0.5))}
        return {"device": device, "layer": {"name": "L"}, "pass": "forward", "flops": 1e9, "results": results}

    table = benchmark.format_markdown([row("cpu", 1e-3, None), row("cuda", 1e-4, 2**20)])
    lines = table.splitlines()
    assert lines[0].startswith("| device | layer |")
    assert any(line.startswith("| cpu | L | forward | 1.000 ") for line in lines)
    assert any(line.startswith("| cuda | L | forward | 0.100 ") for line in lines)
    assert any("peak MiB" in line and "1.0" in line for line in lines)  # CUDA rows only
    assert sum("peak MiB" in line for line in lines) == 1
    means = [line for line in lines if "geometric mean" in line]
    assert [m.split("|")[1].strip() for m in means] == ["cpu", "cuda"]
    assert all("**2.00** | **3.00** | n/a | **0.50**" in m for m in means)
    one = benchmark.format_markdown([row("cpu", 1e-3, None)])
    assert one.splitlines()[0].startswith("| layer |")
