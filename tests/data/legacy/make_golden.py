"""How the schema-1 golden files here were made: run at commit 9313606 (before the redesign), from
the repository root. Kept for the record; rerunning it with later code would defeat its purpose."""
import numpy as np, edgeood, json
from pathlib import Path
from edgeood.zoo import digits
out = Path("tests/data/legacy")
data = digits.load_data(seed=0)
model = digits.model_path(seed=0, data=data)
idv = data.val[0][:200]
methods = ["energy", "msp", "maxlogit", "react", "scale", "featurenorm", "adascale_a",
           "adascale_l", "weiper_msp", "weiper_kld", "grood", "layer_energy"]
params = {"weiper_msp": {"r": 10}, "weiper_kld": {"r": 10}}
r1 = edgeood.export(model, data=idv, methods=methods, recipe="digits_cnn", out=out / "digits_all.onnx", params=params)
r2 = edgeood.export(model, data=idv, methods=["energy", "react"], recipe="digits_cnn",
                    out=out / "digits_uint8_monitor.onnx", input="uint8", stream_monitor=True)
test = data.test[0][:64]
res = {}
for name in ("digits_all", "digits_uint8_monitor"):
    det = edgeood.load(out / f"{name}.onnx")
    d = det(test)
    res[f"{name}/logits"] = d.logits
    for m in d.scores: res[f"{name}/score_{m}"] = d.scores[m]
    for m in d.pvalues: res[f"{name}/pvalue_{m}"] = d.pvalues[m]
    res[f"{name}/is_ood"] = d.is_ood

np.savez_compressed(out / "outputs.npz", images=test, **res)

# --- then: recalibrated on other ID images, the thresholds and outputs after calibrate
from pathlib import Path
from edgeood.zoo import digits
out = Path("tests/data/legacy")
data = digits.load_data(seed=0)
test = data.test[0][:64]
cal = data.test[0][64:]
tmp = Path("/tmp/legacy_cal"); tmp.mkdir(exist_ok=True)
for f in ("digits_all.onnx", "digits_all.onnx.json"):
    shutil.copy(out / f, tmp / f)
r = edgeood.calibrate(tmp / "digits_all.onnx", data=cal)
det = edgeood.load(tmp / "digits_all.onnx")
d = det(test)
res = dict(np.load(out / "outputs.npz"))
res["calibrated/images"] = cal
for m in d.scores:
    res[f"calibrated/score_{m}"] = d.scores[m]; res[f"calibrated/pvalue_{m}"] = d.pvalues[m]
    res[f"calibrated/threshold_{m}"] = np.float64(r.metadata["methods"][m]["threshold"])
res["calibrated/is_ood"] = d.is_ood
np.savez_compressed(out / "outputs.npz", **res)
