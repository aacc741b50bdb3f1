"""`resattn-app`: start the resattn Streamlit app (app.py, pages/, ui/) from an installed package.

The app's files stay at the repository root, where `streamlit run app.py` (`make run`) expects
them. `pip install .` copies them to <prefix>/share/resattn/app (pyproject.toml,
[tool.setuptools.data-files]: `ui` is too generic a name to claim in site-packages), and this
launcher finds that copy through the installed distribution's file list; run from a checkout
(or an editable install) it uses the checkout's own files. It imports neither streamlit nor
resattn (so `--help` is instant and this package stays outside the library's import rules):
Streamlit runs in a child process, in the app's folder so that the app's .streamlit/config.toml
applies.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
from importlib import metadata
from pathlib import Path

DISTRIBUTION = "resattn"
INSTALLED_APP = ("share", "resattn", "app")  # under the environment's prefix, as pyproject.toml puts it
APP_PARTS = ("app.py", "pages", "ui")  # what a complete app folder holds
# Folders the app reads from the environment; relative values are made absolute because the app
# runs in its own folder, not in the one the command was typed in.
PATH_VARIABLES = ("RESATTN_CHECKPOINTS", "RESATTN_DATA", "RESATTN_REPORTS", "RESATTN_CACHE", "RESATTN_SEEDS")


class AppNotFound(RuntimeError):
    """Neither a checkout nor an installed distribution holds the app's files."""


def _complete(folder: Path) -> bool:
    return all((folder / part).exists() for part in APP_PARTS)


def app_folder() -> Path:
    """The folder holding app.py, pages/ and ui/: the checkout this package sits in, else the
    copy installed with the distribution."""
    checkout = Path(__file__).resolve().parents[1]
    if _complete(checkout):
        return checkout
    try:
        files = metadata.distribution(DISTRIBUTION).files or []
    except metadata.PackageNotFoundError:
        files = []
    for file in files:
        if file.name == "app.py" and Path(str(file)).parent.parts[-len(INSTALLED_APP):] == INSTALLED_APP:
            folder = Path(file.locate()).resolve().parent
            if _complete(folder):
                return folder
    raise AppNotFound(f"The app's files (app.py, pages/, ui/) are neither beside {Path(__file__).parent} nor "
                      f"installed with the '{DISTRIBUTION}' distribution; reinstall it with `pip install .` "
                      f"from the resattn repository.")


def parse_args(argv: list[str] | None) -> tuple[argparse.Namespace, list[str]]:
    parser = argparse.ArgumentParser(
        prog="resattn-app", allow_abbrev=False,
        description="Start the resattn app (Streamlit) in the browser: look inside Residual Attention Networks.",
        epilog="Other options go to `streamlit run` unchanged, e.g. `resattn-app --server.address 0.0.0.0`. "
               "Environment: RESATTN_CHECKPOINTS, RESATTN_DATA, RESATTN_REPORTS, RESATTN_CACHE (see README).")
    parser.add_argument("--port", type=int, default=8501, help="port to serve on (default 8501)")
    parser.add_argument("--checkpoints", type=Path,
                        help="folder of .safetensors + .json checkpoints (default: $RESATTN_CHECKPOINTS, else "
                             "./checkpoints when the current folder has one, else checkpoints/ beside app.py)")
    parser.add_argument("--data", type=Path, help="the Imagenette pack (.npz); default $RESATTN_DATA")
    parser.add_argument("--dry-run", action="store_true",
                        help="print the app's folder and the command it would run, and start nothing")
    return parser.parse_known_args(argv)


def launch_plan(args: argparse.Namespace, streamlit_args: list[str]) -> tuple[list[str], Path, dict[str, str]]:
    """(command, working folder, environment) of the Streamlit process."""
    folder = app_folder()
    env = dict(os.environ)
    if args.checkpoints is not None:
        env["RESATTN_CHECKPOINTS"] = str(args.checkpoints)
    elif "RESATTN_CHECKPOINTS" not in env and Path("checkpoints").is_dir():
        env["RESATTN_CHECKPOINTS"] = "checkpoints"
    if args.data is not None:
        env["RESATTN_DATA"] = str(args.data)
    for name in PATH_VARIABLES:
        if env.get(name):
            env[name] = str(Path(env[name]).expanduser().resolve())
    command = [sys.executable, "-m", "streamlit", "run", str(folder / "app.py"),
               "--server.port", str(args.port), *streamlit_args]
    return command, folder, env


def main(argv: list[str] | None = None) -> int:
    args, streamlit_args = parse_args(argv)
    try:
        command, folder, env = launch_plan(args, streamlit_args)
    except AppNotFound as exc:
        print(f"resattn-app: {exc}", file=sys.stderr)
        return 2
    if args.dry_run:
        print(f"app folder: {folder}")
        print(f"checkpoints: {env.get('RESATTN_CHECKPOINTS') or folder / 'checkpoints'}")
        print("command: " + " ".join(command))
        return 0
    try:
        return subprocess.run(command, cwd=folder, env=env).returncode
    except KeyboardInterrupt:  # Ctrl-C reaches Streamlit too, which shuts down by itself
        return 130
