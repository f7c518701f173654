"""Nightly rebuilds with a regression gate (`t2vtrt nightly`, `make nightly`).

from t2vtrt.build.nightly import run_nightly
night = run_nightly("tiny", "cpu", Path("artifacts"))      # fresh build, compare, history line, promote
night.passed, night.latest, night.failures
"""

from t2vtrt.build.nightly.run import NightlyResult, promote, run_nightly

__all__ = ["NightlyResult", "promote", "run_nightly"]
