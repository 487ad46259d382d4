"""A real Triton Inference Server for the deploy tests (not a test module).

The server is nvidia-pytriton's tritonserver binary in its own virtual environment, made by
.ci/triton-setup.sh (REPO/.venv-triton, or EDGEOOD_TRITON_VENV). No package ships Triton's
onnxruntime backend, so the server's backend folder gets a Python-based one:
backends/onnxruntime/model.py (tests/helpers/triton_ort_backend.py), which runs the model file
with ONNX Runtime on the CPU after checking the config's inputs, outputs and states against it.
Models are loaded and unloaded through the gRPC API (--model-control-mode=explicit)."""
from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

from tests.helpers import REPO

START_TIMEOUT_S = 60.0
HERE = Path(__file__).parent


def server_venv() -> Path:
    return Path(os.environ.get("EDGEOOD_TRITON_VENV") or REPO / ".venv-triton")


def find_server() -> tuple[Path, Path] | str:
    """(tritonserver root, the venv's bin folder) or why the server is not available."""
    venv = server_venv()
    found = sorted(venv.glob("lib/python3*/site-packages/pytriton/tritonserver"))
    if not found:
        return (f"no Triton server: {venv} has no nvidia-pytriton (run .ci/triton-setup.sh)")
    root = found[0]
    if not os.access(root / "bin" / "tritonserver", os.X_OK):
        return f"no Triton server: {root}/bin/tritonserver is missing"
    if not (root / "backends" / "python" / "triton_python_backend_stub").is_file():
        return (f"no Python-backend stub in {root}/backends/python (run .ci/triton-setup.sh, "
                "which copies it there)")
    probe = subprocess.run([str(venv / "bin" / "python"), "-c",
                            "import numpy, onnxruntime; assert numpy.__version__ < '2'"],
                           capture_output=True, timeout=60)
    if probe.returncode:
        return f"the server venv {venv} lacks numpy<2 / onnxruntime (run .ci/triton-setup.sh)"
    return root, venv / "bin"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class TritonServer:
    """One tritonserver process on 127.0.0.1 (HTTP, gRPC; metrics off), explicit model
    control, a model repository folder the tests write into."""

    def __init__(self, root: Path, bin_dir: Path, workdir: Path):
        self.root, self.bin_dir, self.workdir = root, bin_dir, workdir
        self.repository = workdir / "models"
        self.repository.mkdir(parents=True, exist_ok=True)
        self.backends = workdir / "backends"
        (self.backends / "onnxruntime").mkdir(parents=True, exist_ok=True)
        os.symlink(root / "backends" / "python", self.backends / "python")
        shutil.copyfile(HERE / "triton_ort_backend.py", self.backends / "onnxruntime" / "model.py")
        self.log_path = workdir / "tritonserver.log"
        self.proc: subprocess.Popen | None = None
        self.http_port = self.grpc_port = 0

    @property
    def http_url(self) -> str:
        return f"127.0.0.1:{self.http_port}"

    @property
    def grpc_url(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"

    def log(self, tail: int = 12000) -> str:
        text = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
        return text[-tail:]

    def start(self) -> None:
        import tritonclient.grpc as grpc
        self.http_port, self.grpc_port = free_port(), free_port()
        env = dict(os.environ, PATH=f"{self.bin_dir}:{os.environ.get('PATH', '')}",
                   VIRTUAL_ENV=str(self.bin_dir.parent))
        env.pop("PYTHONPATH", None)
        env.pop("PYTHONHOME", None)
        cmd = [str(self.root / "bin" / "tritonserver"),
               f"--model-repository={self.repository}", "--model-control-mode=explicit",
               f"--backend-directory={self.backends}",
               "--http-address=127.0.0.1", f"--http-port={self.http_port}",
               "--grpc-address=127.0.0.1", f"--grpc-port={self.grpc_port}",
               "--allow-metrics=false", "--allow-gpu-metrics=false", "--exit-timeout-secs=5",
               "--log-info=true"]
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env,
                                         cwd=self.workdir)
        client = grpc.InferenceServerClient(self.grpc_url)
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"tritonserver exited ({self.proc.returncode}):\n{self.log()}")
            try:
                if client.is_server_ready():
                    return
            except Exception:
                pass
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"tritonserver not ready after {START_TIMEOUT_S:.0f} s:\n{self.log()}")

    def grpc(self):
        import tritonclient.grpc as grpc
        return grpc.InferenceServerClient(self.grpc_url)

    def load(self, name: str) -> None:
        """Load REPO/<name> (gRPC API); a refusal raises with the server's text and log tail."""
        from tritonclient.utils import InferenceServerException
        try:
            self.grpc().load_model(name)
        except InferenceServerException as e:
            raise LoadError(str(e), self.log(4000)) from None

    def unload(self, name: str) -> None:
        self.grpc().unload_model(name)

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.terminate()  # its own process, by its PID
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=10)


class LoadError(Exception):
    def __init__(self, message: str, log: str):
        super().__init__(message)
        self.message, self.server_log = message, log

    def __str__(self) -> str:
        return f"{self.message}\n--- tritonserver log (tail) ---\n{self.server_log}"


MONITOR_SCRIPT = """
import json, sys
import numpy as np
from edgeood.stats.monitor import StreamMonitor
meta = json.loads(open(sys.argv[1]).read())
data = np.load(sys.argv[2])
out = {}
for k in range(int(sys.argv[4])):
    mon = StreamMonitor.from_detector(meta)
    steps = mon.update_batch({m: data[f"{k}_{m}"] for m in mon.methods})
    out[f"{k}_statistic"], out[f"{k}_alarm"] = steps.statistic, steps.alarm
np.savez(sys.argv[3], **out)
"""


def monitor_in_server_python(bin_dir: Path, meta: dict, pvalues: list[dict], workdir: Path):
    """edgeood's StreamMonitor (this checkout's source) run by the server's own Python and NumPy
    over each stream's p-values: [(statistic, alarm)] per stream. NumPy 1.x and 2.x round log
    and expm1 differently in the last bit, so bit-for-bit comparisons with the served statistic
    use the server's NumPy."""
    import json

    import numpy as np
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "meta.json").write_text(json.dumps(meta))
    np.savez(workdir / "p.npz", **{f"{k}_{m}": v for k, ps in enumerate(pvalues)
                                   for m, v in ps.items()})
    env = dict(os.environ, PYTHONPATH=str(REPO))
    proc = subprocess.run([str(bin_dir / "python"), "-c", MONITOR_SCRIPT,
                           str(workdir / "meta.json"), str(workdir / "p.npz"),
                           str(workdir / "out.npz"), str(len(pvalues))],
                          capture_output=True, text=True, timeout=120, env=env)
    if proc.returncode:
        raise RuntimeError(f"StreamMonitor in the server's Python failed: {proc.stderr[-2000:]}")
    out = np.load(workdir / "out.npz")
    return [(out[f"{k}_statistic"], out[f"{k}_alarm"]) for k in range(len(pvalues))]


def camera_streams(data, n: int, length: int = 40):
    """(streams, change frames): n camera streams of `length` uint8 frames from the digits
    set (edgeood.zoo.digits.load_data): ID test digits, then far-OOD (photo patches, noise)
    from frame 12 + k % 16 on (k: the stream), every stream its own frames."""
    import numpy as np
    id_frames, ood = data.test[0], data.far
    streams, changes = [], []
    for k in range(n):
        change = 12 + k % 16
        idx = (np.arange(change) * 7 + 13 * k) % len(id_frames)
        odx = (np.arange(length - change) * 5 + 11 * k) % len(ood)
        streams.append(np.concatenate([id_frames[idx], ood[odx]]))
        changes.append(change)
    return streams, changes
