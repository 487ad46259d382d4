"""What run, eval and watch print: run says when its table was cut and --all prints every row;
eval compares AUROC drift only between detectors of one source model and hints when a score
ranks OOD above ID; watch's status line names the monitored methods' state."""
from __future__ import annotations

import json

import numpy as np
from sklearn.metrics import roc_auc_score

import edgeood
from edgeood.tools import watch as w
from tests.helpers.cli import cli


def test_run_says_rows_were_cut_and_all_prints_them(digits_detector, digits_data, tmp_path):
    far = tmp_path / "far.npy"
    np.save(far, digits_data.far)
    n = len(digits_data.far)
    assert n > 200
    proc = cli("run", digits_detector.path, far)
    assert f"{far}[199]" in proc.stdout and f"{far}[200]" not in proc.stdout
    assert f"rows 200-{n - 1} not shown" in proc.stdout and "--all" in proc.stdout
    proc = cli("run", digits_detector.path, far, "--all")
    assert all(f"{far}[{i}]" in proc.stdout for i in range(n))
    assert "not shown" not in proc.stdout
    few = tmp_path / "few.npy"
    np.save(few, digits_data.far[:20])
    assert "not shown" not in cli("run", digits_detector.path, few).stdout


def test_eval_of_unrelated_detectors_has_no_drift_column(digits_data, digits_model, tmp_path):
    from edgeood.zoo import digits
    a = edgeood.export(digits_model, data=digits_data.val[0], methods=["energy"],
                       recipe="digits_cnn", out=tmp_path / "a.onnx")
    b = edgeood.export(digits.shipped_model(regularised=True), data=digits_data.val[0],
                       methods=["energy"], recipe="digits_cnn", out=tmp_path / "b.onnx")
    test, near = tmp_path / "test.npy", tmp_path / "near.npy"
    np.save(test, digits_data.test[0])
    np.save(near, digits_data.near)
    proc = cli("eval", a.path, b.path, "--id", test, "--ood", near)
    note = [ln for ln in proc.stdout.splitlines() if "different source models" in ln]
    assert len(note) == 1
    assert "drift" not in proc.stdout.replace(note[0], "")  # no drift column
    assert "AUROC float32" in proc.stdout  # still side by side
    proc = cli("eval", a.path, a.path, "--id", test, "--ood", near)
    assert "drift" in proc.stdout  # the drift column (its header may wrap)
    assert "different source models" not in proc.stdout


def test_eval_hints_when_auroc_is_below_50(digits_detector, digits_data, tmp_path):
    """--id and --ood swapped: the methods that separate the sets rank OOD above ID."""
    ood, id_ = tmp_path / "test.npy", tmp_path / "far.npy"
    np.save(ood, digits_data.test[0])
    np.save(id_, digits_data.far)
    det = edgeood.load(digits_detector.path)
    s_id, s_ood = det(digits_data.far).scores, det(digits_data.test[0]).scores
    # independent AUROC: scikit-learn, ID = positive class, higher score = more ID
    ref = {m: roc_auc_score(np.r_[np.ones(len(s_id[m])), np.zeros(len(s_ood[m]))],
                            np.r_[s_id[m], s_ood[m]]) for m in det.methods}
    below = sorted(m for m, v in ref.items() if v < 0.5)
    assert below, ref  # swapped sets: some method must be below chance
    report = json.loads(cli("eval", digits_detector.path, "--id", id_, "--ood", ood,
                            "--json").stdout)
    assert sorted(p["method"] for p in report["below_chance"]) == below
    for p in report["below_chance"]:
        assert abs(p["auroc"] - ref[p["method"]]) < 1e-9
    out = cli("eval", digits_detector.path, "--id", id_, "--ood", ood).stdout
    hints = [ln for ln in out.splitlines() if ln.startswith("hint: AUROC below 50")]
    assert len(hints) == 1 and all(f"{m} on {ood}" in hints[0] for m in below)
    # the right way round: each AUROC is 1 - the swapped one (no ties among float scores)
    report = json.loads(cli("eval", digits_detector.path, "--id", ood, "--ood", id_,
                            "--json").stdout)
    assert sorted(p["method"] for p in report["below_chance"]) == sorted(
        m for m, v in ref.items() if 1 - v < 0.5)
    if not report["below_chance"]:
        assert "hint:" not in cli("eval", digits_detector.path, "--id", ood, "--ood",
                                  id_).stdout


def test_watch_status_names_the_monitored_methods(digits_detector, digits_data):
    det = edgeood.load(digits_detector.path)
    monitored = ["msp", "maxlogit"]
    assert det.primary not in monitored
    monitor = w.open_monitor(det, methods=",".join(monitored))
    alpha = 1 - det.metadata["tpr"]
    frames = list(w.watch(det, monitor, digits_data.far[:64], batch=16))
    assert frames and any(f.alarm for f in frames)
    pv = det(digits_data.far[:64]).pvalues
    for i, f in enumerate(frames):
        line = w.status_line(f, monitor.arl)
        for m in monitored:
            state = "OOD" if pv[m][i] <= alpha else "ok"
            assert f"{m} p {pv[m][i]:.3g} {state}" in line, line
        assert f"frame ({det.primary}) {'OOD' if f.is_ood else 'ok'}" in line
    rang = next(f for f in frames if f.rang)
    assert "msp, maxlogit" in w.alarm_line(rang, monitor.arl)
