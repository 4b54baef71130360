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
]


@pytest.mark.parametrize("channels_last", [False, True])
def test_benchmark_writes_table_samples_and_plot(tmp_path, channels_last):
    printed = []
    rows = benchmark.run(TINY, min_run_time=0.001, channels_last=channels_last, out_dir=str(tmp_path),
                         progress=False, print_fn=printed.append)
    assert len(rows) == 6  # three layers, forward and forward+backward
    table = (tmp_path / "benchmark.md").read_text()
    assert "geometric mean" in table and "tiny 3x3" in table and table.strip() in printed[0]
    data = json.loads((tmp_path / "benchmark.json").read_text())
    assert data["machine"]["channels_last"] is channels_last
    for row in data["rows"]:
        names = set(row["results"])
        assert {"myconv", "F.conv2d", "aten-im2col", "gemm"} <= names
        assert ("unfold+mm" in names) == (row["layer"]["groups"] == 1)
        for res in row["results"].values():
            assert len(res["samples"]) >= 5 and all(s > 0 for s in res["samples"])
    assert (tmp_path / "benchmark.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_cli_lists_the_suite_and_rejects_unknown_layers(capsys):
    benchmark.main(["--list"])
    out = capsys.readouterr().out
    assert all(layer.key in out for layer in benchmark.SUITE + benchmark.DECODER)
    with pytest.raises(SystemExit, match="unknown layer"):
        benchmark.main(["--layers", "nope", "--no-progress"])


def test_transposed_layer_sizes_match_f_conv_transpose2d():
    for layer in benchmark.DECODER:
        x = torch.zeros(1, layer.c_in, layer.size, layer.size)
        w = torch.zeros(layer.weight_shape())
        y = torch.nn.functional.conv_transpose2d(x, w, **layer.args())
        assert y.shape[-1] == layer.out_size and y.shape[1] == layer.c_out


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
