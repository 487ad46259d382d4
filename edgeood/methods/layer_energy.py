"""Intermediate-layer energy aggregation (after Guglielmo & Masana, arXiv 2502.12849).

Per-layer energy: E_l(x) = logsumexp over all C*H*W raw activations of layer l (T = 1,
max-shifted), the quantity the authors' published analysis code computes on the flattened raw
output of a layer. The paper does not publish how the per-layer energies are combined into one
score; the rule below is edgeood's own, not the paper's:

1. On the ID calibration images fit mu_l and sigma_l (population std, floored at 1e-12) of E_l.
2. Orient every candidate layer with s_l in {+1, -1} so that ID scores above the reference set:
   the `--ood-val` images when given (preferred), else the jigsaw pseudo-OOD images of the ID
   set. s_l = +1 when AUROC(E_l[ID], E_l[ref]) >= 0.5, else -1; the layer's AUROC after
   orientation is max(a, 1 - a).
3. Keep the m layers (param `m`, default 3) with the best oriented AUROC; ties go to the earlier
   layer.
4. score = mean over the kept layers of s_l (E_l - mu_l) / sigma_l (higher = more ID).

Everything is in the graph in float32 (a float16 layer is cast to float32 before the
reduction). Candidate layers: param `layers` (tensor names; "z" and "logits" are accepted too),
a recipe's [methods.layer_energy] layers, else the model's block candidates. The metadata keeps
every candidate's AUROC, sign, mu and sigma (`layer_stats`), the kept layers, which set the
orientation used and the combined score's AUROC on that same set (in-sample, so optimistic).
"""
from __future__ import annotations

import numpy as np

from edgeood.errors import EdgeoodError, did_you_mean
from edgeood.graph.ops import constant
from edgeood.methods import presentation
from edgeood.methods.base import Method, register
from edgeood.methods.numeric import logsumexp
from edgeood.stats.metrics import auroc

SIGMA_FLOOR = 1e-12
HEAD_KEYS = ("z", "logits")  # tap keys accepted as layers besides tensor names


def layer_energy(values: np.ndarray) -> np.ndarray:
    """E(x) = logsumexp of every activation of one layer (float64, max-shifted)."""
    v = np.asarray(values, np.float64)
    return logsumexp(v.reshape(len(v), -1), axis=1)


def _f32(v: float) -> float:
    """A float stored in the metadata exactly as the graph constant holds it."""
    return float(np.float32(v))


@register
class LayerEnergy(Method):
    """score = mean_{l in kept} s_l (E_l - mu_l) / sigma_l, E_l = logsumexp of layer l's raw
    activations; s_l, the kept layers, mu_l and sigma_l are fitted (edgeood's rule, see the
    module docstring: the paper does not publish its aggregation)."""

    name = "layer_energy"
    defaults = {"layers": [], "m": 3}
    fitted_keys = ("layer_stats", "selected_layers", "oriented_against", "orientation_count",
                   "combined_auroc")
    needs_fit = True
    needs_jigsaw = True
    order = 100

    def validate(self):
        if self.params["m"] < 1:
            raise EdgeoodError(f"layer_energy.m={self.params['m']} must be >= 1 (the number of "
                               "layers averaged); e.g. layer_energy.m=3")
        layers = list(self.params["layers"])
        dup = [x for i, x in enumerate(layers) if x in layers[:i]]
        if dup:
            raise EdgeoodError(f"layer_energy.layers lists '{dup[0]}' twice")

    # --- model -----------------------------------------------------------------------------
    def check_model(self, model):
        known = list(model.tensors) + list(HEAD_KEYS)
        for name in self.params["layers"]:
            if model.tensors and name not in known:
                raise EdgeoodError(f"layer_energy layer '{name}' is not a tensor of the graph"
                                   f"{did_you_mean(name, known)}")
        if not model.tensors:  # rebuilt from metadata: nothing to choose any more
            return
        if not self.params["layers"] and not model.candidates:
            raise EdgeoodError("layer_energy found no candidate layers (no 4-D residual or stage "
                               "outputs); list them with --param layer_energy.layers=T1,T2 or in "
                               "the recipe's [taps] blocks")
        n = len(self._candidates())
        if self.params["m"] > n:
            self.warnings.append(f"layer_energy: m = {self.params['m']} but there are only {n} "
                                 f"candidate layers; all {n} are averaged")

    def _candidates(self) -> list[str]:
        names = list(self.params["layers"]) or list(self.model.candidates)
        depth = self.model.depth
        if depth and all(n in depth for n in names):  # layer order = graph order
            names.sort(key=lambda n: depth[n])
        return names

    # --- calibration -----------------------------------------------------------------------
    def fit_taps(self):
        return self._candidates()

    def fit_update(self, taps, source):
        energies = np.stack([layer_energy(taps[n]) for n in self._candidates()], axis=1)
        self.scratch.setdefault(source, []).append(energies)

    def fit_end(self):
        names = self._candidates()
        against = "ood" if self.scratch.get("ood") else "jigsaw"
        if not self.scratch.get(against):
            raise EdgeoodError("layer_energy orients its layers against jigsaw or --ood-val "
                               "images and received neither")
        e_id = np.concatenate(self.scratch["id"])
        e_ref = np.concatenate(self.scratch[against])
        stats, oriented = {}, []
        for j, name in enumerate(names):
            a = auroc(e_id[:, j], e_ref[:, j])
            sign = 1 if a >= 0.5 else -1
            oriented.append(a if sign > 0 else 1.0 - a)
            stats[name] = {"auroc": float(oriented[-1]), "sign": sign,
                           "mu": _f32(e_id[:, j].mean()),
                           "sigma": _f32(max(float(e_id[:, j].std()), SIGMA_FLOOR))}
        best = sorted(range(len(names)), key=lambda j: (-oriented[j], j))
        keep = sorted(best[:min(self.params["m"], len(names))])
        self.fitted["layer_stats"] = stats
        self.fitted["selected_layers"] = [names[j] for j in keep]
        self.fitted["oriented_against"] = against
        self.fitted["orientation_count"] = {"id": len(e_id), against: len(e_ref)}
        combine = lambda e: self._combine(e[:, keep])  # noqa: E731
        self.fitted["combined_auroc"] = float(auroc(combine(e_id), combine(e_ref)))

    # --- scoring ---------------------------------------------------------------------------
    @property
    def selected(self) -> list[str]:
        return list(self.fitted.get("selected_layers") or [])

    def _arrays(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(mu, sigma, sign) of the kept layers, in their order, float64."""
        st = self.fitted["layer_stats"]
        get = lambda k: np.array([st[n][k] for n in self.selected], np.float64)  # noqa: E731
        return get("mu"), get("sigma"), get("sign")

    def _combine(self, energies: np.ndarray) -> np.ndarray:
        mu, sigma, sign = self._arrays()
        return (sign * (energies - mu) / sigma).mean(axis=1)

    def taps(self):
        return self.selected

    def build(self, graph, t):
        columns = []
        for name in self.selected:
            x = t[name]
            if x.dtype is not None and np.dtype(x.dtype) != np.float32:
                x = graph.cast(x)  # the reduction runs in float32 whatever the backbone
            flat = graph.reshape(x, [0, -1])
            columns.append(graph.unsqueeze(graph.logsumexp(flat, 1), [1]))
        energies = columns[0] if len(columns) == 1 else graph.concat(columns, 1)
        t[f"{self.name}/energies"] = energies  # N x m, kept with --keep-taps
        mu, sigma, sign = self._arrays()
        mu_c = constant(graph, mu.reshape(1, -1), "mu")
        coef = constant(graph, (sign / sigma).reshape(1, -1), "sign_over_sigma")
        return graph.reduce("ReduceMean", graph.mul(graph.sub(energies, mu_c), coef), [1])

    def reference(self, taps):
        energies = np.stack([layer_energy(taps[n]) for n in self.selected], axis=1)
        return self._combine(energies)

    # --- shown -----------------------------------------------------------------------------
    class Presentation(presentation.Presentation):
        head_nodes = "3*m+4"
        cost_note = "m: kept layers (3, at most the candidates; +m Casts on a --half backbone)"
        score = ("mean over the m kept layers of s_l (E_l − μ_l) / σ_l, E_l = "
                 "logsumexp of all C·H·W raw activations of layer l")
        fits = ("μ_l, σ_l on ID; sign s_l and the m (3) layers with the best AUROC vs "
                "jigsaw (or `--ood-val`)")
        notes = ("aggregation is edgeood's own (the paper's is unpublished); every layer's AUROC "
                 "/ sign / μ / σ in the metadata")

        def summary(self, entry):
            sel, stats = entry.get("selected_layers"), entry.get("layer_stats") or {}
            if not sel:
                return ""
            signs = "".join("+" if stats[n]["sign"] > 0 else "-" for n in sel)
            return (f"mean of {len(sel)}/{len(stats)} layers (signs {signs}), "
                    f"{entry['oriented_against']} AUROC {entry['combined_auroc']:.3f}")

        def detail_table(self, entry):
            stats = entry.get("layer_stats")
            if not stats:
                return None
            sel = set(entry.get("selected_layers") or [])
            title = (f"Layer energy per candidate layer (AUROC vs "
                     f"{entry.get('oriented_against')} after orientation; the score averages "
                     f"the best {len(sel)})")
            return (title,
                    ["layer", "AUROC", "sign", "mu", "sigma", "selected"],
                    [[k, v["auroc"], "+1" if v["sign"] > 0 else "-1", v["mu"], v["sigma"],
                      "yes" if k in sel else ""] for k, v in stats.items()])

        def demo_variants(self, entry):
            """The same method on the shipped CNN fine-tuned with the layer-energy margin."""
            return [presentation.DemoVariant(f"{self.method.name} (regularised CNN)", {},
                                             model="regularised")]
