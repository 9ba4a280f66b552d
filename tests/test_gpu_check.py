"""benchmarks/gpu_check.py on the CPU at a tiny size: every check runs and fills its table row."""

from __future__ import annotations

import pytest
import torch

from benchmarks import gpu_check


def test_gpu_check_runs_on_the_cpu_and_reports_every_row(capsys: pytest.CaptureFixture) -> None:
    rows = gpu_check.run(["--device", "cpu", "--n", "2", "--n-bytes", "2", "--arch", "wrn10_1",
                          "--batch-size", "4", "--methods", "vanilla,gn",
                          "--corruptions", "gaussian_noise,ripple,perlin_noise,jpeg_compression",
                          "--speed-corruptions", "contrast"])
    results = dict(rows)
    # the CPU against itself: equal bytes, or the check would be wrong
    for name in ("gaussian_noise", "ripple", "perlin_noise", "jpeg_compression"):
        assert results[f"bytes {name}"] == "equal"
    assert results["corrupt speed (1 x 5 x 2 images)"].endswith(" s)")
    vanilla = next(v for k, v in results.items() if k.startswith("method vanilla"))
    gn = next(v for k, v in results.items() if k.startswith("method gn"))
    assert vanilla.startswith("ok") and gn.startswith("ok") and "not applicable" in gn
    assert "| check" in capsys.readouterr().out


def test_the_byte_check_reports_the_share_of_differing_values(monkeypatch: pytest.MonkeyPatch) -> None:
    real = gpu_check.corrupt_images
    calls = {"n": 0}

    def device_off_by_one(images, name, severity, params, seed, device, *args):
        calls["n"] += 1
        out = real(images, name, severity, params, seed, device, *args)
        return out ^ 1 if calls["n"] % 2 == 0 else out  # every second call plays the device

    monkeypatch.setattr(gpu_check, "corrupt_images", device_off_by_one)
    row = gpu_check.compare_bytes(gpu_check.load_images(2)[0], "contrast", torch.device("cpu"))
    assert row == ["bytes contrast", "100.0000% differ (max 1)"]
