"""consistency.csv: writing it, reading it back typed, and where the app finds it."""
from __future__ import annotations

import csv
import os
from pathlib import Path

from ..errors import ResattnError

COLUMNS = ("stage", "config_a", "config_b", "same_config", "reduction", "metric", "value", "low", "high", "n_images")
DEFAULT_CSV = Path("docs") / "consistency" / "consistency.csv"
CSV_ENV = "RESATTN_CONSISTENCY"


def write_rows(rows: list[dict], path: str | os.PathLike) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=COLUMNS)
        writer.writeheader()
        for row in rows:
            writer.writerow({**row, **{k: f"{row[k]:.4f}" for k in ("value", "low", "high")}})
    return path


def read_rows(path: str | os.PathLike) -> list[dict]:
    """The rows of a consistency.csv, typed. A clear ResattnError when it is missing or is not one."""
    path = Path(path)
    if not path.is_file():
        raise ResattnError(f"No consistency table at {path}: make it with `python -m resattn.consistency "
                           f"--images pack --limit 200 --out {path.parent}`.")
    try:
        with open(path, newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f)
            if tuple(reader.fieldnames or ()) != COLUMNS:
                raise ResattnError(f"{path} is not a consistency table (its columns are {reader.fieldnames}); "
                                   "make it again with python -m resattn.consistency.")
            return [{"stage": int(r["stage"]), "config_a": r["config_a"], "config_b": r["config_b"],
                     "same_config": r["same_config"].strip().lower() in ("true", "1"), "reduction": r["reduction"],
                     "metric": r["metric"], "value": float(r["value"]), "low": float(r["low"]),
                     "high": float(r["high"]), "n_images": int(r["n_images"])} for r in reader]
    except (OSError, ValueError, KeyError) as exc:
        raise ResattnError(f"{path} could not be read as a consistency table ({exc}); make it again with "
                           "python -m resattn.consistency.") from None


def default_csv() -> Path:
    """$RESATTN_CONSISTENCY, else docs/consistency/consistency.csv of the project."""
    env = os.environ.get(CSV_ENV)
    return Path(env).expanduser() if env else Path(__file__).resolve().parents[2] / DEFAULT_CSV
