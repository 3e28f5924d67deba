"""What every benchmark result file records: the full effective settings, the commit, the machine, the load.

Use `write_result(path, config, results)`: `config` is every setting in effect (argparse's full namespace,
defaults included, plus any library defaults the run relied on), never only the overrides.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any


def _git(*args: str) -> str:
    try:
        return subprocess.run(["git", *args], capture_output=True, text=True, timeout=10,
                              cwd=Path(__file__).resolve().parent).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""


def machine() -> dict[str, Any]:
    """The machine this ran on: CPU model and count, memory, Python, torch threads and versions."""
    cpu = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    info: dict[str, Any] = {"host": platform.node(), "cpu": cpu, "cores": os.cpu_count(),
                            "python": sys.version.split()[0], "platform": platform.platform()}
    try:
        info["memory_gib"] = round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1)
    except (ValueError, OSError):
        pass
    for name in ("torch", "transformers", "peft", "numpy", "snorkel", "sklearn"):
        module = sys.modules.get(name)
        if module is not None:
            info[f"{name}_version"] = getattr(module, "__version__", "?")
    if "torch" in sys.modules:
        info["torch_threads"] = sys.modules["torch"].get_num_threads()
    return info


def provenance(config: dict[str, Any]) -> dict[str, Any]:
    """The header of a result file: settings in effect, commit (and whether the tree was dirty), machine, load."""
    dirty = bool(_git("status", "--porcelain", "--untracked-files=no"))
    return {"config": {k: (str(v) if isinstance(v, Path) else v) for k, v in config.items()},
            "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]),
            "commit": _git("rev-parse", "HEAD") + ("-dirty" if dirty else ""),
            "machine": machine(), "load_average_at_start": list(os.getloadavg()),
            "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}


def write_result(path: Path, config: dict[str, Any], results: Any, header: dict[str, Any] | None = None) -> Path:
    """Write `{provenance..., load_average_at_end, results}` as JSON to `path` (the header from `provenance`)."""
    document = dict(header or provenance(config))
    document["load_average_at_end"] = list(os.getloadavg())
    document["results"] = results
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(document, indent=2, default=str) + "\n")
    return path
