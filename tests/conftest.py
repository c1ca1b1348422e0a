import os
import platform
import sys
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import pytest

# make `tests/helpers.py` importable as `helpers` under --import-mode=importlib
sys.path.insert(0, str(Path(__file__).parent))

# hypothesis profiles: "ci" (default, bounded and reproducible) and "long" (by hand:
# python -m pytest tests/test_fuzz_graphs.py --hypothesis-profile=long)
from hypothesis import HealthCheck, settings  # noqa: E402

settings.register_profile("ci", max_examples=30, deadline=None, derandomize=True,
                          suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("long", max_examples=2000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("ci")


VERSIONS = ("apache-tvm", "apache-tvm-ffi", "onnx", "onnxruntime", "numpy", "ml_dtypes", "xgboost-cpu")


def _version(name: str) -> str:
    try:
        return version(name)
    except PackageNotFoundError:
        return "not installed"


def _cpu() -> str:
    from ember.targets import cpu_model

    return cpu_model() or platform.processor() or platform.machine()


def pytest_report_header(config):
    """What the run ran with: the versions Ember's behaviour depends on, and the CPU."""
    return [", ".join(f"{n} {_version(n)}" for n in VERSIONS), f"cpu: {_cpu()}, {os.cpu_count()} logical cores"]


# EMBER_REQUIRE=arm,...: tests with those markers may not skip (CI sets it, so a failed install
# step cannot hide behind a skip)
REQUIRED = {m for m in os.environ.get("EMBER_REQUIRE", "").split(",") if m}


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    required = REQUIRED & {m.name for m in item.iter_markers()}
    if report.skipped and required:
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        report.outcome = "failed"
        report.longrepr = f"skipped, but EMBER_REQUIRE={','.join(sorted(required))} requires it to run: {reason}"
