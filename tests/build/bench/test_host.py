"""The bench's host record: which CPU and instruction sets a ratio was measured on."""

from __future__ import annotations

from pathlib import Path

from t2vtrt.build.bench.host import cpu_fields, host_info

CPUINFO = """processor\t: 0
vendor_id\t: AuthenticAMD
cpu family\t: 25
model\t\t: 1
model name\t: AMD EPYC
flags\t\t: fpu sse2 avx fma avx2 bmi2

processor\t: 1
model name\t: other
flags\t\t: avx512f avx512_vnni
"""


def test_cpu_fields_read_the_first_processor() -> None:
    """Name, family/model and only the ISA flags of interest, from the first processor's block."""
    assert cpu_fields(CPUINFO) == {"cpu": "AMD EPYC", "cpu_family_model": "25/1", "isa": ["avx2", "fma"]}


def test_host_info_without_cpuinfo(tmp_path: Path) -> None:
    """A machine without /proc/cpuinfo still gets a record; package versions come from the installed metadata."""
    info = host_info(tmp_path / "missing")
    assert info["cores"] >= 1 and "cpu" in info
    assert info["versions"]["numpy"] and info["versions"]["onnxruntime-gpu"] is None
