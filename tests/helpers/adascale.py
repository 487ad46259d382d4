"""AdaSCALE's score with torch.autograd for the gradient: the reference of
tests/methods/test_adascale.py and of the fixed-batch-1 test in tests/graph/test_autodiff.py."""
from __future__ import annotations

import numpy as np
import pytest

from edgeood.methods.adascale import least_mask_reference

torch = pytest.importorskip("torch", reason="torch is not installed (AdaSCALE's reference uses "
                            "torch.autograd)")


def torch_adascale(net, features, x, method, head_weight, head_bias):
    """The full AdaSCALE score with torch.autograd for the gradient, in float64."""
    net = net.double()
    xt = torch.from_numpy(x.astype(np.float64)).requires_grad_()
    logits = net(xt)
    logits.gather(1, logits.argmax(1, keepdim=True)).sum().backward()
    g = xt.grad.numpy()
    n = int(np.prod(x.shape[1:]) * method.params["o"])
    mask = least_mask_reference(np.abs(g).reshape(len(x), -1), n).reshape(x.shape)
    xp = x.astype(np.float64) + method.params["eps"] * np.sign(g) * mask
    with torch.no_grad():
        z = features(torch.from_numpy(x.astype(np.float64))).numpy()
        zp = features(torch.from_numpy(xp)).numpy()
        lg = logits.detach().numpy()
    return method.reference({"z": z, f"{method.name}/z_perturbed": zp, "logits": lg})
