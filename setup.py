"""Package list for the folder-per-stage layout (pyproject.toml holds the rest).

setuptools cannot discover packages whose import path differs from their folder
(t2vtrt.build lives in build/), so the list is computed here from the folders.
"""
from setuptools import find_packages, setup

ROOTS = {"t2vtrt": "t2vtrt", "t2vtrt.build": "build", "t2vtrt.runtime": "runtime", "t2vtrt.calibration": "calibration"}


def _packages() -> list[str]:
    """Every package under each mapped root, with its import name."""
    names = ["t2vtrt"]
    for name, folder in ROOTS.items():
        if name == "t2vtrt":
            continue
        names.append(name)
        names += [f"{name}.{sub}" for sub in find_packages(folder)]
    return names


setup(packages=_packages())
