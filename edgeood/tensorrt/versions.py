"""Which TensorRT a build is for: the installed one, or (to print a trtexec line for another
machine) a named version."""
from __future__ import annotations

from edgeood.errors import EdgeoodError


def features_for(trt_version: str | None = None, print_trtexec: bool = False):
    """The TrtFeatures to build for; trt_version only goes with print_trtexec (a build always
    uses the installed TensorRT). None: TensorRT is not installed (validate_build says so)."""
    from edgeood.tensorrt.builder import TrtFeatures, installed_features
    features = installed_features()
    if trt_version is not None:
        if features is not None and not print_trtexec:
            raise EdgeoodError("--trt-version names the TensorRT of another machine and goes "
                               "with --print-trtexec; this build uses the installed TensorRT "
                               f"{features.version}")
        features = TrtFeatures.assumed(trt_version)
    if features is None and print_trtexec:
        raise EdgeoodError("TensorRT is not installed here: pass --trt-version (e.g. 10.3 for "
                           "JetPack 6) to print the trtexec command for that version")
    return features
