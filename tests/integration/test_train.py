"""edgeood.train.LayerEnergyRegularizer: the loss equals a NumPy hand computation from the hooked
activations, gradients reach the backbone and the heads, hooks go away on close()."""
from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
from torch import nn  # noqa: E402

from edgeood.train import LayerEnergyRegularizer, jigsaw  # noqa: E402


def tiny_model():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(),
                         nn.Conv2d(4, 5, 3, stride=2, padding=1), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(5, 3))


def np_lse(v):
    m = v.max(axis=1, keepdims=True)
    return (m + np.log(np.exp(v - m).sum(axis=1, keepdims=True)))[:, 0]


def capture(model, names):
    """Our own hooks: every output of the named modules, in call order."""
    seen = {n: [] for n in names}
    mods = dict(model.named_modules())
    handles = [mods[n].register_forward_hook(
        lambda m, i, o, n=n: seen[n].append(o.detach().double().numpy())) for n in names]
    return seen, handles


def hand_loss(reg, acts, n_in, m_in, m_out, weight):
    """weight * sum_l [mean relu(F_in - m_in)^2 + mean relu(m_out - F_out)^2], F = -logsumexp
    of Linear(GAP(activation)), in NumPy float64."""
    total = 0.0
    for i, name in enumerate(reg.layers):
        a = acts[name]
        pooled = a.mean(axis=(2, 3)) if a.ndim == 4 else a.reshape(len(a), -1)
        w = reg.heads[i].weight.detach().double().numpy()
        b = reg.heads[i].bias.detach().double().numpy()
        f = -np_lse(pooled @ w.T + b)
        total += (np.maximum(f[:n_in] - m_in, 0) ** 2).mean() + \
            (np.maximum(m_out - f[n_in:], 0) ** 2).mean()
    return weight * total


@pytest.mark.parametrize("outliers", ["user", "jigsaw"])
def test_loss_equals_hand_computation(outliers):
    model = tiny_model()
    layers = ["1", "2"]  # a ReLU (width from the dry run) and a conv
    x = torch.randn(6, 1, 9, 9, generator=torch.Generator().manual_seed(1))
    x_out = torch.randn(4, 1, 9, 9, generator=torch.Generator().manual_seed(2)) * 3
    m_in, m_out, weight = -3.0, 2.0, 0.5  # both hinges active at initialisation
    reg = LayerEnergyRegularizer(model, layers, m_in=m_in, m_out=m_out, weight=weight,
                                 example=x[:2], fill=-0.5)
    assert [h.in_features for h in reg.heads] == [4, 5]
    assert [h.out_features for h in reg.heads] == [3, 3]
    seen, handles = capture(model, layers)
    out = reg(x, x_out if outliers == "user" else None)
    for h in handles:
        h.remove()
    acts = {n: v[-1] for n, v in seen.items()}
    n_out = len(x_out) if outliers == "user" else len(x)
    assert acts["1"].shape[0] == len(x) + n_out
    want = hand_loss(reg, acts, len(x), m_in, m_out, weight)
    assert want > 0.1
    assert float(out.loss) == pytest.approx(want, rel=1e-5)
    with torch.no_grad():
        np.testing.assert_allclose(out.logits.numpy(), model(x).numpy(), rtol=1e-5, atol=1e-6)
    for i, name in enumerate(layers):  # the reported energy scores S = -F
        a = acts[name]
        w, b = (p.detach().double().numpy() for p in (reg.heads[i].weight, reg.heads[i].bias))
        s = np_lse(a.mean(axis=(2, 3)) @ w.T + b)
        np.testing.assert_allclose(out.energy_in[name].detach().numpy(), s[:len(x)], rtol=1e-5)
        np.testing.assert_allclose(out.energy_out[name].detach().numpy(), s[len(x):], rtol=1e-5)
    reg.close()


def test_gradients_reach_backbone_and_heads_and_parameters_are_the_heads():
    model = tiny_model()
    reg = LayerEnergyRegularizer(model, ["0", "2"], m_in=-3.0, m_out=2.0)  # widths from convs
    head_params = {id(p) for p in reg.parameters()}
    assert head_params == {id(p) for h in reg.heads for p in h.parameters()}
    assert not head_params & {id(p) for p in model.parameters()}
    out = reg(torch.randn(5, 1, 9, 9))
    out.loss.backward()
    for p in [*model[0].parameters(), *model[2].parameters(), *reg.parameters()]:
        assert p.grad is not None and p.grad.abs().sum() > 0
    reg.close()


def test_loss_pushes_id_energy_up_and_outlier_energy_down():
    """The free-energy convention: minimising the loss raises S = logsumexp on ID images and
    lowers it on the outliers (the exported score's direction, higher = ID)."""
    model = tiny_model()
    gen = torch.Generator().manual_seed(3)
    x, x_out = torch.rand(16, 1, 9, 9, generator=gen), -torch.rand(16, 1, 9, 9, generator=gen)
    with LayerEnergyRegularizer(model, ["1", "3"], m_in=-6.0, m_out=-1.0, weight=1.0,
                                example=x[:1]) as reg:
        opt = torch.optim.Adam([*model.parameters(), *reg.parameters()], lr=0.05)
        first = reg(x, x_out)
        for _ in range(40):
            out = reg(x, x_out)
            opt.zero_grad()
            out.loss.backward()
            opt.step()
        last = reg(x, x_out)
    assert float(last.loss) < 0.2 * float(first.loss)
    for name in ["1", "3"]:
        assert last.energy_in[name].mean() > first.energy_in[name].mean()
        assert last.energy_in[name].mean() > last.energy_out[name].mean()


def test_close_and_context_manager_remove_the_hooks():
    model = tiny_model()
    before = [len(m._forward_hooks) for m in model.modules()]
    with LayerEnergyRegularizer(model, ["0", "2"]) as reg:
        assert len(model[0]._forward_hooks) == 1 and len(model[2]._forward_hooks) == 1
    assert [len(m._forward_hooks) for m in model.modules()] == before
    with pytest.raises(RuntimeError, match="closed"):
        reg(torch.randn(2, 1, 9, 9))
    reg.close()  # idempotent
    reg2 = LayerEnergyRegularizer(model, ["0"])
    reg2.close()
    assert [len(m._forward_hooks) for m in model.modules()] == before
    model(torch.randn(2, 1, 9, 9))  # the model runs as before


def test_bad_arguments():
    model = tiny_model()
    with pytest.raises(ValueError, match=r"'3x' is not a submodule .*did you mean 3"):
        LayerEnergyRegularizer(model, ["3x"])
    with pytest.raises(ValueError, match="m_in = -1.0 must be below m_out = -2.0"):
        LayerEnergyRegularizer(model, ["0"], m_in=-1.0, m_out=-2.0)
    with pytest.raises(ValueError, match="output width of layer '1'"):
        LayerEnergyRegularizer(model, ["1"])  # a ReLU, no example batch


def test_jigsaw_shuffles_the_nine_tiles_and_fills_the_border():
    x = torch.arange(2 * 2 * 8 * 8, dtype=torch.float32).reshape(2, 2, 8, 8)
    out = jigsaw(x, torch.Generator().manual_seed(0), fill=torch.tensor([-1.0, -2.0]))
    assert (out[:, 0, 6:, :] == -1).all() and (out[:, 1, :, 6:] == -2).all()
    for i in range(2):
        tiles_in = [x[i, :, r:r + 2, c:c + 2] for r in (0, 2, 4) for c in (0, 2, 4)]
        tiles_out = [out[i, :, r:r + 2, c:c + 2] for r in (0, 2, 4) for c in (0, 2, 4)]
        match = [next(j for j, t in enumerate(tiles_in) if torch.equal(t, o)) for o in tiles_out]
        assert sorted(match) == list(range(9))
    assert not torch.equal(out[:, :, :6, :6], x[:, :, :6, :6])
