"""WeiPer: folded scores against NumPy, the frozen seeded perturbation, float16 storage,
histogram / smoothing semantics, and external-data saving for large detectors."""
from __future__ import annotations

import numpy as np
import onnx
import pytest

import edgeood
from edgeood.artifact import metadata
from edgeood.methods.weiper import (
    bin_estimator,
    graph_bin_counts,
    histogram_edges,
    histogram_form,
    histograms,
    smooth,
    sym_kl,
)
from edgeood.stats.metrics import auroc
from edgeood.runtime.onnxruntime.backend import OrtBackend
from tests.helpers.methods import fitted_methods

METHODS = ["weiper_msp", "weiper_kld"]


def _weights(path):
    from edgeood.graph.head import find_head
    from edgeood.graph.model import prepare
    head = find_head(prepare(onnx.load(str(path))))
    return head.weight.astype(np.float64), head.bias.astype(np.float64)


def _perturbation(path):
    (p,) = [onnx.numpy_helper.to_array(i) for i in onnx.load(str(path)).graph.initializer
            if i.name.startswith("weiper/perturbation")]
    return p


@pytest.fixture(scope="module")
def digits_weiper(digits_model, digits_data, tmp_path_factory):
    out = tmp_path_factory.mktemp("wp") / "wp.onnx"
    return edgeood.export(digits_model, data=digits_data.val[0], methods=METHODS,
                          recipe="digits_cnn", out=out, keep_taps=True)


def test_perturbed_logits_match_numpy(digits_weiper, digits_model, digits_data):
    """L~ = (tile(W) + P) z + tile(b), P = delta ||W_c|| n / ||n|| with n from the seeded
    generator, written out here."""
    from edgeood.zoo import digits
    x = digits.PREPROCESS.normalize(digits_data.test[0][:20])
    out = OrtBackend(digits_weiper.path).run(x)
    w, b = _weights(digits_model)
    r, delta, seed = 100, 1.8, 0   # CIFAR-10-like preset for 6 classes
    rng = np.random.default_rng(seed)
    rows = []
    for _ in range(r):
        n = rng.standard_normal(w.shape)
        rows.append(w + delta * np.linalg.norm(w, axis=1, keepdims=True) * n /
                    np.linalg.norm(n, axis=1, keepdims=True))
    w_tilde = np.concatenate(rows)
    z = out["tap_z"].astype(np.float64)
    want = z @ w_tilde.T + np.tile(b, r)
    got = out["tap_weiper_msp_perturbed_logits"]
    assert np.abs(got - want).max() / np.abs(want).max() < 1e-5
    msp = np.exp(want.reshape(20, r, 6) - want.reshape(20, r, 6).max(2, keepdims=True))
    msp = (1 / msp.sum(2)).mean(1)
    np.testing.assert_allclose(out["score_weiper_msp"], msp, rtol=1e-5)


def test_digits_scores_match_reference(digits_weiper, digits_model, digits_data):
    from edgeood.zoo import digits
    x = digits.PREPROCESS.normalize(np.concatenate([digits_data.test[0], digits_data.far[:100]]))
    out = OrtBackend(digits_weiper.path).run(x)
    methods = fitted_methods(digits_model, digits_weiper.metadata)
    kld = methods["weiper_kld"]
    model = onnx.load(str(digits_weiper.path))
    init = {i.name: onnx.numpy_helper.to_array(i) for i in model.graph.initializer}
    kld.fitted.update(edges_z=init["weiper_kld/edges_z"].ravel(),
                      edges_L=init["weiper_kld/edges_L"].ravel())
    # p_z / p_L: refit on the calibration set with the reference histograms
    cal = OrtBackend(digits_weiper.path).run(digits.PREPROCESS.normalize(digits_data.val[0]))
    kld.fitted["p_z"] = histograms(cal["tap_z"], kld.fitted["edges_z"]).mean(0)
    kld.fitted["p_L"] = histograms(cal["tap_weiper_kld_perturbed_logits"],
                                   kld.fitted["edges_L"]).mean(0)
    # the fitted edges cover the calibration set exactly (min and max inside, max in last bin)
    assert kld.fitted["edges_z"][0] == cal["tap_z"].min()
    assert histograms(cal["tap_z"], kld.fitted["edges_z"]).sum(1) == pytest.approx(1.0)
    for name, m in methods.items():
        taps = {"z": out["tap_z"], "logits": out["logits"],
                f"{name}/perturbed_logits": out[f"tap_{name}_perturbed_logits"]}
        want = m.reference(taps)
        got = out[f"score_{name}"]
        scale = max(1.0, np.abs(want).max())
        assert np.abs(got - want).max() / scale <= 1e-4, name


def test_histogram_smoothing_and_kl_by_hand():
    edges = np.array([0.0, 1.0, 2.0, 3.0], np.float32)
    v = np.array([[0.0, 0.5, 1.0, 2.999, 3.0, -1.0]], np.float32)  # 3.0 and -1 fall outside
    np.testing.assert_allclose(histograms(v, edges), [[2 / 6, 1 / 6, 1 / 6]])
    h = np.array([[1.0, 2.0, 4.0, 8.0]])
    # s = 4: left pad 1, right pad 2 -> [1, 1, 2, 4, 8, 8, 8]
    np.testing.assert_allclose(smooth(h, 4), [[2.0, 3.75, 5.5, 7.0]])
    np.testing.assert_allclose(smooth(h, 1), h)
    p, q = np.array([0.5, 0.5]), np.array([[1.0, 0.0]])
    pp, qq = (p + 0.01) / 1.02, (q + 0.01) / 1.02
    assert sym_kl(p, q, 0.01)[0] == pytest.approx(((pp - qq) * (np.log(pp) - np.log(qq))).sum())
    e = histogram_edges(0.0, 1000.0, 4)
    assert e[-1] > np.float32(1000.0) and len(e) == 5


def _adversarial_rows(edges, length, extra=(), seed=0):
    """Rows of `length` values holding every edge, the float32 on each side of it, the values
    in `extra`, infinities, NaN, huge and signed zeros; padded with uniform values around the
    range; plus one row of uniform values."""
    f32 = np.float32
    e = np.asarray(edges, f32)
    adv = np.concatenate([e, np.nextafter(e, f32(-np.inf)), np.nextafter(e, f32(np.inf)),
                          np.asarray(extra, f32), [np.inf, -np.inf, np.nan, 3.4e38, -3.4e38,
                                                   0.0, -0.0]]).astype(f32)
    rng = np.random.default_rng(seed)
    width = float(e[-1] - e[0]) or 1.0
    pad = lambda k: rng.uniform(e[0] - 0.1 * width, e[-1] + 0.1 * width, k).astype(f32)
    rows = [np.concatenate([chunk, pad(length - len(chunk))])
            for chunk in np.array_split(adv, -(-len(adv) // length))]
    rows.append(pad(length))
    return np.stack(rows)


def _graph_counts(v, edges, form):
    import onnx_graphsurgeon as gs

    from edgeood.graph.model import to_model
    x = gs.Variable("v", np.float32, ["n", v.shape[1]])
    graph = gs.Graph(inputs=[x], opset=17)
    counts = graph_bin_counts(graph, x, edges, v.shape[1], form)
    counts.name, counts.dtype = "counts", np.float32
    graph.outputs = [counts]
    model = to_model(graph)
    ops = {n.op_type for n in model.graph.node}
    assert ("ScatterElements" in ops) == (form == "scatter") and "Gather" not in ops
    return OrtBackend(model.SerializeToString()).run(v)["counts"]


@pytest.mark.parametrize("length", [128, 600, 100000])
def test_in_graph_histogram_is_exact_on_adversarial_values(digits_weiper, length):
    """Both forms against histograms() exactly (integer counts), on values at, and one float32
    either side of, every edge, outside the range (incl. +-inf and NaN), the fitted min and max
    and the nudged last edge: the digits detector's fitted edges and synthetic ones (the
    (0, 1000) edges have their last edge nudged; a constant row's edges are too far from
    uniform for the bin estimate and keep compare-and-count)."""
    init = {i.name: onnx.numpy_helper.to_array(i)
            for i in onnx.load(str(digits_weiper.path)).graph.initializer}
    cases = {"digits_z": (init["weiper_kld/edges_z"].ravel(), ()),
             "digits_L": (init["weiper_kld/edges_L"].ravel(), ())}
    for lo, hi in [(0.0, 1000.0), (-3.2, 7.9), (-1e4, -9e3), (5.0, 5.0)]:
        cases[f"{lo}_{hi}"] = (histogram_edges(lo, hi, 100), (lo, hi))
    assert cases["0.0_1000.0"][0][-1] == np.nextafter(np.float32(1000), np.float32(np.inf))
    for name, (edges, extra) in cases.items():
        v = _adversarial_rows(edges, length, extra)
        want = histograms(v, edges)
        forms = ["compare"] + (["scatter"] if bin_estimator(edges) is not None else [])
        assert ("scatter" in forms) == (name != "5.0_5.0"), name
        for form in forms:
            got = _graph_counts(v, edges, form)
            np.testing.assert_array_equal(got.astype(np.float64) / length, want,
                                          err_msg=f"{name} {form}")
    # the plain floor estimate misses by one next to edges: the correction is needed
    e = cases["-3.2_7.9"][0]
    v = np.concatenate([e, np.nextafter(e, np.float32(-np.inf))])
    naive = np.floor((v - e[0]) * np.float32(100 / (float(e[-1]) - float(e[0])))) + 1
    assert np.any(naive != np.searchsorted(e, v, side="right"))


@pytest.mark.parametrize("base", [0, 1])
def test_rows_counted_together_are_each_exact(base):
    """Three rows of different lengths and edges, two in the scatter form (one ScatterElements,
    each row's bins offset into its own columns, the scatter started from ones with base=1)
    and one compare-and-count: every row's raw columns times raw_to_bins are its exact
    histogram (integer counts), on the adversarial values of each row's own edges."""
    import onnx_graphsurgeon as gs

    from edgeood.graph.model import to_model
    from edgeood.methods.blocks.histogram import Row, graph_raw_counts, raw_to_bins
    specs = [(histogram_edges(-3.2, 7.9, 100), 1500, "scatter"),
             (histogram_edges(0.0, 1000.0, 50), 700, "compare"),
             (histogram_edges(-1e4, -9e3, 100), 2048, "scatter")]
    values = [_adversarial_rows(e, length, seed=i)[:2] for i, (e, length, _) in enumerate(specs)]
    inputs = [gs.Variable(f"v{i}", np.float32, ["n", length])
              for i, (_, length, _) in enumerate(specs)]
    graph = gs.Graph(inputs=inputs, opset=17)
    rows = [Row(x, e, length, form) for x, (e, length, form) in zip(inputs, specs)]
    raw, starts, bases = graph_raw_counts(graph, rows, scatter_base=base)
    raw.name, raw.dtype = "raw", np.float32
    graph.outputs = [raw]
    model = to_model(graph)
    assert sum(n.op_type == "ScatterElements" for n in model.graph.node) == 1
    assert bases == [base, 0, base]
    import onnxruntime as ort
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    (got,) = sess.run(None, {f"v{i}": v for i, v in enumerate(values)})
    got = got.astype(np.int64)
    assert got.shape[1] == 102 + 51 + 102
    for row, start, b, v in zip(rows, starts, bases, values):
        counts = (got[:, start:start + row.raw_width] - b) @ raw_to_bins(row)
        np.testing.assert_array_equal(counts / row.length, histograms(v, row.edges))


@pytest.mark.parametrize("s", [1, 2, 4, 15, 40])
def test_smoothing_matrix_is_the_uniform_kernel(s):
    """h @ S = s * smooth(h, s) (replicate padding, the cumsum reference above) for rows of
    100 bins, and for a row shorter than the kernel."""
    from edgeood.methods.weiper import smoothing_matrix
    rng = np.random.default_rng(s)
    for n in (100, 7):
        h = rng.integers(0, 1000, (3, n)).astype(np.float64)
        np.testing.assert_allclose(h @ smoothing_matrix(n, s), s * smooth(h, s) if s > 1 else h,
                                   rtol=1e-12)


def test_histogram_form_choice():
    edges = histogram_edges(-3.2, 7.9, 100)
    assert histogram_form(edges, 100000, 17) == "scatter"
    assert histogram_form(edges, 100000, 15) == "compare"     # ScatterElements reduction: 16
    assert histogram_form(edges, 600, 17) == "compare"        # auto: small rows
    assert histogram_form(edges, 600, 17, "scatter") == "scatter"
    assert histogram_form(edges, 100000, 17, "compare") == "compare"
    assert histogram_form(histogram_edges(5.0, 5.0, 100), 100000, 17) == "compare"


def test_scatter_histograms_on_digits(digits_weiper, digits_model, digits_data, tmp_path):
    """histogram=scatter (z: 128 values, L~: 600, below auto's threshold; both counted by ONE
    ScatterElements) gives the compare-and-count detector's scores exactly; edgeood check:
    trt10 builds the reducing scatter (plugin note), trt8.6 reports it."""
    from edgeood.errors import EdgeoodError
    from edgeood.tensorrt.check import check_target
    from edgeood.zoo import digits
    x = digits.PREPROCESS.normalize(np.concatenate([digits_data.test[0][:200],
                                                    digits_data.far[:50]]))
    base = OrtBackend(digits_weiper.path).run(x)
    assert not any(n.op_type == "ScatterElements"
                   for n in onnx.load(str(digits_weiper.path)).graph.node)
    res = edgeood.export(digits_model, data=digits_data.val[0], methods=METHODS,
                         recipe="digits_cnn", out=tmp_path / "scatter.onnx",
                         params={m: {"histogram": "scatter"} for m in METHODS})
    model = onnx.load(str(res.path))
    scatters = [n for n in model.graph.node if n.op_type == "ScatterElements"]
    assert len(scatters) == 1 and all(a.s == b"add" for n in scatters for a in n.attribute
                                      if a.name == "reduction")
    out = OrtBackend(res.path).run(x)
    for m in METHODS:
        np.testing.assert_array_equal(out[f"score_{m}"], base[f"score_{m}"])
    problems, notes = check_target(model, "trt10")
    assert problems == [] and any("ScatterElements plugin" in n for n in notes)
    problems, _ = check_target(model, "trt8.6")
    assert sum("reduction=add is ignored" in p for p in problems) == 1
    with pytest.raises(EdgeoodError, match="histogram must be one of"):
        edgeood.export(digits_model, data=digits_data.val[0], methods=["weiper_kld"],
                       recipe="digits_cnn", out=tmp_path / "bad.onnx",
                       params={"weiper_kld": {"histogram": "sort"}})


def test_seed_fixes_the_perturbation(digits_model, digits_data, tmp_path):
    kw = dict(data=digits_data.val[0], methods=["weiper_kld"], recipe="digits_cnn")
    a = edgeood.export(digits_model, out=tmp_path / "a.onnx", **kw).path
    b = edgeood.export(digits_model, out=tmp_path / "b.onnx", **kw).path
    assert a.read_bytes() == b.read_bytes()
    c = edgeood.export(digits_model, out=tmp_path / "c.onnx",
                       params={"weiper_kld": {"seed": 1}}, **kw).path
    pa, pc = _perturbation(a), _perturbation(c)
    assert pa.shape == pc.shape == (600, 128) and not np.array_equal(pa, pc)
    assert edgeood.load(c).metadata["methods"]["weiper_kld"]["seed"] == 1


def test_float16_storage_keeps_auroc(digits_model, digits_data, tmp_path):
    aurocs = {}
    for storage in ("float32", "float16"):
        res = edgeood.export(digits_model, data=digits_data.val[0], methods=METHODS,
                             recipe="digits_cnn", out=tmp_path / f"{storage}.onnx",
                             params={m: {"storage": storage} for m in METHODS})
        det = edgeood.load(res.path)
        rid, rn = det(digits_data.test[0]), det(digits_data.near)
        aurocs[storage] = {m: auroc(rid.scores[m], rn.scores[m]) for m in METHODS}
        inits = [i for i in onnx.load(str(res.path)).graph.initializer
                 if i.name.startswith("weiper/perturbation")]
        assert len(inits) == 1  # weiper_msp and weiper_kld share one perturbation
        assert inits[0].data_type == (onnx.TensorProto.FLOAT16 if storage == "float16"
                                      else onnx.TensorProto.FLOAT)
        assert res.metadata["methods"]["weiper_kld"]["perturbation_bytes"] == \
            600 * 128 * (2 if storage == "float16" else 4)
    for m in METHODS:
        assert abs(aurocs["float16"][m] - aurocs["float32"][m]) < 0.002, (m, aurocs)


def test_external_data_for_large_detectors(digits_model, digits_data, tmp_path, monkeypatch):
    """Above the protobuf limit (lowered here to 100 kB) weights go to '<file>.data', the
    calibration sessions load from files, and the detector runs and re-calibrates."""
    small = edgeood.export(digits_model, data=digits_data.val[0], methods=["weiper_kld"],
                           recipe="digits_cnn", out=tmp_path / "small.onnx")
    monkeypatch.setattr(metadata, "MAX_PROTO_BYTES", 100_000)
    big = edgeood.export(digits_model, data=digits_data.val[0], methods=["weiper_kld"],
                         recipe="digits_cnn", out=tmp_path / "big.onnx")
    assert (tmp_path / "big.onnx.data").stat().st_size > 100_000
    assert big.path.stat().st_size < 100_000
    a = edgeood.load(small.path)(digits_data.test[0]).scores["weiper_kld"]
    b = edgeood.load(big.path)(digits_data.test[0]).scores["weiper_kld"]
    np.testing.assert_array_equal(a, b)
    edgeood.calibrate(big.path, digits_data.test[0])
    assert edgeood.load(big.path)(digits_data.test[0][:3]).is_ood is not None
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "big.onnx", "big.onnx.data", "big.onnx.json", "small.onnx", "small.onnx.json"]


def test_lite0_imagenet_sized_head(lite0_model, lite0_photos, tmp_path):
    """r C = 100000 x 1280 (float16 storage): exports, calibrates, runs, matches the reference."""
    res = edgeood.export(lite0_model, data=lite0_photos[:24], methods=METHODS,
                         recipe="efficientnet_lite0", out=tmp_path / "wp.onnx", batch=8,
                         keep_taps=True, params={m: {"storage": "float16"} for m in METHODS})
    meta = res.metadata["methods"]["weiper_kld"]
    assert meta["preset"] == "imagenet" and meta["perturbation_shape"] == [100000, 1280]
    assert meta["perturbation_bytes"] == 100000 * 1280 * 2
    det = edgeood.load(res.path)
    pre = det.preprocess
    backend = OrtBackend(res.path)
    cal = backend.run(pre.normalize(lite0_photos[:24]))
    out = backend.run(pre.normalize(lite0_photos[24:32]))
    methods = fitted_methods(lite0_model, res.metadata)
    kld = methods["weiper_kld"]
    init = {i.name: i for i in onnx.load(str(res.path), load_external_data=False).graph.initializer}
    for key in ("edges_z", "edges_L"):
        kld.fitted[key] = onnx.numpy_helper.to_array(init[f"weiper_kld/{key}"]).ravel()
    kld.fitted["p_z"] = histograms(cal["tap_z"], kld.fitted["edges_z"]).mean(0)
    kld.fitted["p_L"] = histograms(cal["tap_weiper_kld_perturbed_logits"], kld.fitted["edges_L"]).mean(0)
    for name, m in methods.items():
        taps = {"z": out["tap_z"], "logits": out["logits"],
                f"{name}/perturbed_logits": out[f"tap_{name}_perturbed_logits"]}
        want = m.reference(taps)
        assert np.abs(out[f"score_{name}"] - want).max() / max(1.0, np.abs(want).max()) <= 1e-4
    # the projection itself against float64 NumPy (W~ from the float16-stored perturbation)
    w, b = _weights(lite0_model)
    p = _perturbation(res.path).astype(np.float64)
    z = out["tap_z"][:2].astype(np.float64)
    want = np.tile(z @ w.T + b, 100) + z @ p.T
    got = out["tap_weiper_kld_perturbed_logits"][:2]
    assert np.abs(got - want).max() / np.abs(want).max() < 1e-5
