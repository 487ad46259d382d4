"""Evaluate a detector on ID vs OOD sets: metrics per method and OOD set, and the measured ID
false-alarm rate at the stored thresholds."""
from __future__ import annotations

from edgeood.data import open_source
from edgeood.metrics import false_alarm_rate, summary
from edgeood.runtime import Detector, load


def evaluate(detector, id_data, ood: dict, batch: int = 32, progress: bool = False,
             id_name: str | None = None) -> dict:
    """detector: a path or a Detector; id_data / ood values: anything open_source accepts."""
    det = detector if isinstance(detector, Detector) else load(detector)
    id_src = open_source(id_data, id_name)
    res_id = det.run_source(id_src, batch, progress)
    report = {"detector": str(det.path), "id": id_src.name, "id_count": len(id_src),
              "tpr": det.metadata.get("tpr", 0.95), "results": [], "false_alarm": {}}
    for name, data in ood.items():
        src = open_source(data, name)
        res = det.run_source(src, batch, progress)
        for m in det.methods:
            report["results"].append({"method": m, "ood": name, "ood_count": len(src),
                                      **summary(res_id.scores[m], res.scores[m], report["tpr"])})
    for m, thr in det.thresholds.items():
        report["false_alarm"][m] = false_alarm_rate(res_id.scores[m], thr)
    if res_id.labels is not None and id_src.labels is not None:
        report["id_accuracy"] = float((res_id.labels == id_src.labels).mean())
    return report
