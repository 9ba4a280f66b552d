"""Calibration under shift: ECE (Guo et al. 2017, 15 bins), NLL and Brier score per cell, and the
per-image confidences stored beside per-image correctness."""

from __future__ import annotations

import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from metabn_bench import fsio
from metabn_bench.data import calibration, per_image
from metabn_bench.evaluation.calibration import CellCalibration
from metabn_bench.evaluation.evaluate import evaluate
from metabn_bench.runs import EVAL_FILE

# Six images of three classes with known softmax outputs; bins are [m/15, (m+1)/15).
PROBS = np.array([[0.70, 0.20, 0.10],   # y 0: right, confidence .70 (bin 10)
                  [0.50, 0.30, 0.20],   # y 1: wrong, .50 (bin 7)
                  [0.20, 0.75, 0.05],   # y 1: right, .75 (bin 11)
                  [0.10, 0.10, 0.80],   # y 0: wrong, .80 (bin 12)
                  [0.45, 0.35, 0.20],   # y 0: right, .45 (bin 6)
                  [0.10, 0.68, 0.22]])  # y 2: wrong, .68 (bin 10, with the first)
LABELS = np.array([0, 1, 1, 0, 0, 2])
# By hand: bin 10 has mean confidence .69 and accuracy .5 (2 images); each other bin one image.
ECE = (2 * abs(0.5 - 0.69) + abs(0 - 0.50) + abs(1 - 0.75) + abs(0 - 0.80) + abs(1 - 0.45)) / 6
NLL = -(math.log(0.7) + math.log(0.3) + math.log(0.75) + math.log(0.1) + math.log(0.45)
        + math.log(0.22)) / 6
BRIER = ((0.09 + 0.04 + 0.01) + (0.25 + 0.49 + 0.04) + (0.04 + 0.0625 + 0.0025)
         + (0.81 + 0.01 + 0.64) + (0.3025 + 0.1225 + 0.04) + (0.01 + 0.4624 + 0.6084)) / 6


def test_cell_metrics_agree_with_a_hand_computation() -> None:
    """torchmetrics' ECE, our NLL and Brier sums, fed in two batches, match the hand values."""
    logits = torch.tensor(np.log(PROBS), dtype=torch.float32)
    labels = torch.tensor(LABELS)
    cal = CellCalibration()
    conf = torch.cat([cal.update(logits[:4], labels[:4]), cal.update(logits[4:], labels[4:])])
    out = cal.result()
    assert np.allclose(conf.numpy(), PROBS.max(1), atol=1e-6)
    assert out["ece"] == pytest.approx(100 * ECE, abs=1e-3)
    assert out["nll"] == pytest.approx(NLL, abs=1e-5)
    assert out["brier"] == pytest.approx(BRIER, abs=1e-5)
    assert out["calibration_bins"] == 15


def test_numpy_ece_and_reliability_match_the_hand_computation() -> None:
    """The formula reports use on stored confidences gives the same ECE and bins."""
    conf, correct = PROBS.max(1), PROBS.argmax(1) == LABELS
    assert calibration.expected_calibration_error(conf, correct) == pytest.approx(ECE, abs=1e-12)
    count, mean_conf, acc = calibration.reliability(conf, correct)
    assert count.tolist() == [0] * 6 + [1, 1, 0, 0, 2, 1, 1, 0, 0]
    assert mean_conf[10] == pytest.approx(0.69) and acc[10] == 0.5
    assert np.isnan(acc[0]) and calibration.bin_index(np.array([0.0, 1.0])).tolist() == [0, 14]
    # A perfectly calibrated toy: confidence .8, 4 of 5 right.
    assert calibration.expected_calibration_error(np.full(5, 0.8), np.array([1, 1, 1, 1, 0])) \
        == pytest.approx(0.0)


def test_evaluation_rows_carry_calibration_and_stored_confidences(
        trained_run: Path, corrupted_set: Path, tmp_path: Path) -> None:
    """Every row has ece/nll/brier; the stored confidences give back the row's ECE."""
    run = tmp_path / "run"
    shutil.copytree(trained_run, run, ignore=shutil.ignore_patterns(EVAL_FILE, per_image.RUN_FILE))
    rows = evaluate(run, corrupted_set, ("none",), device="cpu", progress=False)
    conf = per_image.load_run_confidences(run, rows)
    correct = per_image.load_run(run, rows)
    assert len(conf) == len(rows)
    for row in rows:
        assert {"ece", "nll", "brier"} <= set(row) and row["calibration_bins"] == 15
        assert 0 <= row["ece"] <= 100 and row["nll"] > 0 and 0 <= row["brier"] <= 2
        c = conf[per_image.row_key(row)]
        assert c.shape == (row["n"],) and np.all((c >= 1 / 10 - 1e-3) & (c <= 1))
        again = 100 * calibration.expected_calibration_error(c, correct[per_image.row_key(row)])
        assert again == pytest.approx(row["ece"], abs=0.5)  # float16 storage, 40 images


def test_old_per_image_files_without_confidences_still_read(tmp_path: Path) -> None:
    """A per_image.npz written before calibration (keys, offsets, bits only) loads; no confidences."""
    key = ("set", "none", 10, "clean", 0)
    bits = per_image.pack(np.array([True, False, True]))
    with fsio.atomic_open(tmp_path / per_image.RUN_FILE, "wb") as fh:
        np.savez_compressed(fh, keys=np.array(["set|none|10|clean|0"]),
                            offsets=np.array([0, bits.size]), bits=bits)
    row = {"run_id": "r", "set_id": "set", "protocol": "none", "test_batch_size": 10,
           "corruption": "clean", "severity": 0, "n": 3, "per_image": True}
    assert per_image.load_run(tmp_path, [row])[per_image.row_key(row)].tolist() == [True, False, True]
    assert per_image.load_run_confidences(tmp_path, [row]) == {}
    store = per_image.RunVectors(tmp_path)  # adding a cell keeps the old one, without confidences
    store.put(("set", "none", 10, "gauss", 1), np.array([True, True, False]), np.array([.9, .8, .4]))
    assert key in store and len(store.confidences) == 1
    out = per_image.load_run_confidences(tmp_path, [row, row | {"corruption": "gauss", "severity": 1}])
    assert list(out) == [("r", "set", "none", 10, "gauss", 1)]
    assert np.allclose(out[("r", "set", "none", 10, "gauss", 1)], [.9, .8, .4], atol=1e-3)
