"""Training side of intermediate-layer energy (after Guglielmo & Masana, arXiv 2502.12849):
an energy-margin regulariser on named intermediate layers of a PyTorch classifier.

Pure PyTorch; torch is imported by this module only (install the torch extra). Usage::

    reg = LayerEnergyRegularizer(model, layers=["features.1", "features.4"], fill=-0.75)
    opt = torch.optim.Adam([*model.parameters(), *reg.parameters()])   # heads included
    with reg:                                  # hooks are removed on exit (or reg.close())
        out = reg(x)                           # ID batch; outliers = its jigsaw images
        loss = F.cross_entropy(out.logits, y) + out.loss
        ...

How this reads the paper (an interpretation; the paper gives the loss, not every detail):

- Every chosen layer l gets a small head: global average pooling over H x W (a 2-D output is
  used as it is) and a Linear to K logits (K = the classifier's class count). Its energy score
  is S_l(x) = logsumexp_k head_l(x)_k, its free energy F_l(x) = -S_l(x).
- The margin loss is written on the free energy F, as in the energy-OOD literature (Liu et al.,
  NeurIPS 2020, eq. 8): per layer
      L_l = mean_in relu(F_l(x_in) - m_in)^2 + mean_out relu(m_out - F_l(x_out))^2,  m_in < m_out,
  the total is weight * sum_l L_l. Reading the paper's "E" as F is what makes the loss push ID
  energy scores S up and outlier scores down, which is the direction the exported score uses
  (higher = more ID). Written on S instead, the same formula would push the wrong way, so
  m_in and m_out here are free-energy margins (negative numbers; Liu et al.'s CIFAR values
  m_in = -25, m_out = -7, weight 0.1 are the defaults).
- Outliers: the jigsaw images of the ID batch (3 x 3 tiles of side floor(S/3) shuffled per image,
  the border set to `fill`, the normalised black pixel; the same construction as
  edgeood.data.jigsaw), or a user batch x_out.
- ID and outlier images go through the network in one forward (Liu et al.'s code does the
  same); with batch-norm layers in training mode the outliers then enter the batch statistics,
  so fine-tune with batch norm in eval mode where that matters.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn


def jigsaw(x: torch.Tensor, generator: torch.Generator | None = None,
           fill: float | torch.Tensor = 0.0) -> torch.Tensor:
    """Jigsaw pseudo-OOD images of an N x C x H x W batch: tile dst of the 3 x 3 grid (tiles of
    floor(H/3) x floor(W/3)) takes tile perm[dst] of the same image, one uniformly random
    permutation per image; the remaining border is `fill` (a float or a per-channel tensor)."""
    n, c, h, w = x.shape
    th, tw = h // 3, w // 3
    tiles = (x[:, :, :3 * th, :3 * tw].reshape(n, c, 3, th, 3, tw)
             .permute(0, 1, 2, 4, 3, 5).reshape(n, c, 9, th, tw))
    perm = torch.stack([torch.randperm(9, generator=generator) for _ in range(n)]).to(x.device)
    index = perm.view(n, 1, 9, 1, 1).expand(n, c, 9, th, tw)
    shuffled = torch.gather(tiles, 2, index)
    grid = shuffled.reshape(n, c, 3, 3, th, tw).permute(0, 1, 2, 4, 3, 5).reshape(n, c, 3 * th,
                                                                                   3 * tw)
    out = torch.empty_like(x)
    out[:] = torch.as_tensor(fill, dtype=x.dtype, device=x.device).reshape(1, -1, 1, 1)
    out[:, :, :3 * th, :3 * tw] = grid
    return out


@dataclass
class RegularizerOutput:
    """What one call returns: the classifier's logits on the ID batch, the weighted loss, and
    per layer the energy scores S = logsumexp(head logits) of the ID and outlier images."""

    logits: torch.Tensor
    loss: torch.Tensor
    energy_in: dict[str, torch.Tensor] = field(default_factory=dict)
    energy_out: dict[str, torch.Tensor] = field(default_factory=dict)


class LayerEnergyRegularizer(nn.Module):
    """Energy-margin loss on pooled heads attached to named submodules of `model`.

    model: the classifier (an nn.Module; it is NOT registered as a submodule, so
    `reg.parameters()` are the heads only). layers: names from model.named_modules(). The heads'
    input widths come from a dry run on `example` (an input batch) when given, else from the
    last module with out_channels / num_features / out_features inside each layer. num_classes:
    the heads' output size K (default: out_features of the model's last nn.Linear).
    m_in, m_out: free-energy margins (m_in < m_out); weight: the loss factor; fill: the
    normalised black pixel for jigsaw outliers; seed: the jigsaw generator's seed.
    """

    def __init__(self, model: nn.Module, layers: list[str], num_classes: int | None = None,
                 m_in: float = -25.0, m_out: float = -7.0, weight: float = 0.1,
                 fill: float | list[float] = 0.0, example: torch.Tensor | None = None,
                 seed: int = 0):
        super().__init__()
        if not layers:
            raise ValueError("LayerEnergyRegularizer needs at least one layer name")
        if m_in >= m_out:
            raise ValueError(f"m_in = {m_in} must be below m_out = {m_out} (free-energy margins: "
                             "ID free energy is pushed below m_in, outliers above m_out)")
        modules = dict(model.named_modules())
        missing = [n for n in layers if n not in modules]
        if missing:
            import difflib
            close = difflib.get_close_matches(missing[0], [n for n in modules if n], 3, 0.5)
            hint = f" (did you mean {', '.join(close)}?)" if close else ""
            raise ValueError(f"'{missing[0]}' is not a submodule of the model{hint}")
        object.__setattr__(self, "model", model)  # not a child: its parameters are not ours
        self.layers = list(layers)
        self.m_in, self.m_out, self.weight = float(m_in), float(m_out), float(weight)
        self.fill = fill
        self.generator = torch.Generator().manual_seed(seed)
        k = num_classes or _last_linear(model)
        widths = _widths_by_dry_run(model, modules, layers, example) if example is not None \
            else [_width_of(modules[n], n) for n in layers]
        self.heads = nn.ModuleList(nn.Linear(c, k) for c in widths)
        self._acts: dict[str, torch.Tensor] = {}
        self._recording = False
        self._handles = [modules[n].register_forward_hook(self._hook(n)) for n in layers]

    def _hook(self, name: str):
        def hook(module, inputs, output):
            if self._recording:
                self._acts[name] = output[0] if isinstance(output, (tuple, list)) else output
        return hook

    def energies(self, activation: torch.Tensor, index: int) -> torch.Tensor:
        """S = logsumexp(Linear(GAP(activation))) for head `index` (N values)."""
        pooled = activation.mean(dim=(2, 3)) if activation.dim() == 4 else \
            activation.flatten(1)
        return torch.logsumexp(self.heads[index](pooled), dim=1)

    def margin_loss(self, s_in: torch.Tensor, s_out: torch.Tensor) -> torch.Tensor:
        """mean relu(F_in - m_in)^2 + mean relu(m_out - F_out)^2 with F = -S (one layer)."""
        f_in, f_out = -s_in, -s_out
        return (torch.relu(f_in - self.m_in) ** 2).mean() + \
            (torch.relu(self.m_out - f_out) ** 2).mean()

    def forward(self, x_in: torch.Tensor, x_out: torch.Tensor | None = None) -> RegularizerOutput:
        """One forward of the ID batch and its outliers (x_out, or the jigsaw of x_in)."""
        if not self._handles:
            raise RuntimeError("this LayerEnergyRegularizer is closed (its hooks are removed)")
        if x_out is None:
            x_out = jigsaw(x_in.detach(), self.generator, self.fill)
        n = len(x_in)
        self._acts, self._recording = {}, True
        try:
            logits = self.model(torch.cat([x_in, x_out]))
        finally:
            self._recording = False
        out = RegularizerOutput(logits[:n], logits.new_zeros(()))
        for i, name in enumerate(self.layers):
            if name not in self._acts:
                raise RuntimeError(f"layer '{name}' did not run in the model's forward")
            s = self.energies(self._acts[name], i)
            out.energy_in[name], out.energy_out[name] = s[:n], s[n:]
            out.loss = out.loss + self.margin_loss(s[:n], s[n:])
        out.loss = self.weight * out.loss
        self._acts = {}
        return out

    def close(self) -> None:
        """Remove the forward hooks from the model (idempotent)."""
        for h in self._handles:
            h.remove()
        self._handles = []

    def __enter__(self) -> LayerEnergyRegularizer:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _last_linear(model: nn.Module) -> int:
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    if not linears:
        raise ValueError("the model has no nn.Linear to take the class count from; pass "
                         "num_classes")
    return linears[-1].out_features


def _width_of(module: nn.Module, name: str) -> int:
    for m in reversed(list(module.modules())):
        for attr in ("out_channels", "num_features", "out_features"):
            if isinstance(getattr(m, attr, None), int):
                return getattr(m, attr)
    raise ValueError(f"cannot tell the output width of layer '{name}'; pass example=<an input "
                     "batch> for a dry run")


def _widths_by_dry_run(model, modules, layers, example) -> list[int]:
    seen: dict[str, int] = {}
    hooks = [modules[n].register_forward_hook(
        lambda m, i, o, n=n: seen.__setitem__(n, (o[0] if isinstance(o, (tuple, list)) else o)
                                              .shape[1])) for n in layers]
    was = model.training
    try:
        model.eval()
        with torch.no_grad():
            model(example)
    finally:
        model.train(was)
        for h in hooks:
            h.remove()
    return [seen[n] for n in layers]
