"""ONNX graph surgery: small passes on the onnx-graphsurgeon IR, one registry, one runner.

    from t2vtrt.build.surgery import PASSES, DEFAULT_PIPELINE, run_surgery
    report = run_surgery("denoiser.onnx", "denoiser.opt.onnx")            # default pipeline
    run_surgery(src, dst, ["fold_constants", "split_geglu"])              # any registered passes, in order

Each pass is `fn(gs.Graph) -> int`: it edits the graph in place and returns how many things it changed.
"""

from .registry import DEFAULT_PIPELINE, PASSES, PIPELINES, Pass, get_pass
from .run import run_surgery

__all__ = ["DEFAULT_PIPELINE", "PASSES", "PIPELINES", "Pass", "get_pass", "run_surgery"]
