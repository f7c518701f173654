"""Accuracy gates (docs/architecture.md#accuracy-gates): polygraphy comparisons per graph, PSNR/SSIM per video, golden sets.

    from t2vtrt.build.compare import run_compare
    run = run_compare(Path("artifacts/tiny/engines/cpu"))   # writes artifacts/tiny/reports/accuracy.{json,md}
    run.passed, run.failures

Thresholds live in tolerances.toml, the prompts and seeds in eval.toml: data, not code.
"""

from t2vtrt.build.compare.golden import Golden, load_golden, save_golden
from t2vtrt.build.compare.run import CompareRun
from t2vtrt.build.compare.stage import run_compare
from t2vtrt.build.compare.tolerances import load_tolerances

__all__ = ["CompareRun", "Golden", "load_golden", "load_tolerances", "run_compare", "save_golden"]
