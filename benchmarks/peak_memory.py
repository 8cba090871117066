"""Peak RSS of a fresh process that loads the embedded model and generates (target <= 1.5 GB).

Run: .venv/bin/python benchmarks/peak_memory.py
The measurement runs in a subprocess so nothing this script imported counts.
"""

from __future__ import annotations

import subprocess
import sys

CHILD = """
import resource
from counterfact.agents import load_embedded
from counterfact.agents import ChatMessage, GenerationSettings, ModelRequest
model = load_embedded()
assert load_embedded() is model
model.complete(ModelRequest(messages=[ChatMessage(role="user", content="Explain why the sky is blue.")],
                            settings=GenerationSettings(max_tokens=32)))
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)  # KiB on Linux
"""

TARGET_MB = 1536.0


def main() -> None:
    done = subprocess.run(
        [sys.executable, "-c", CHILD], capture_output=True, text=True, check=True
    )
    peak_mb = int(done.stdout.split()[-1]) / 1024
    verdict = "within" if peak_mb <= TARGET_MB else "over"
    print(f"peak RSS: {peak_mb:.0f} MB ({verdict} the {TARGET_MB:.0f} MB target)")


if __name__ == "__main__":
    main()
