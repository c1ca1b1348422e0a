import sys
from pathlib import Path

# make `tests/helpers.py` importable as `helpers` under --import-mode=importlib
sys.path.insert(0, str(Path(__file__).parent))

# hypothesis profiles: "ci" (default, bounded and reproducible) and "long" (by hand:
# python -m pytest tests/test_fuzz_graphs.py --hypothesis-profile=long)
from hypothesis import HealthCheck, settings  # noqa: E402

settings.register_profile("ci", max_examples=30, deadline=None, derandomize=True,
                          suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("long", max_examples=2000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("ci")
