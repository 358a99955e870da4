"""The dependency lock: write it, check an environment against it, compare it with pyproject.toml.

``requirements.lock`` pins every package that ``make demo`` and ``make test`` install (torch, its
dependencies, the ``dev`` extra and everything below it); ``requirements-bench.lock`` adds what
``make bench`` needs on top (the peers whose wheels are too large for every test run). Both are plain
pip requirement files of ``name==version`` lines, so pip and ``uv pip`` read them alike.

    python scripts/lockfile.py validate LOCK [LOCK ...]         every line is a name==version pin
    python scripts/lockfile.py freeze [--exclude LOCK] > FILE   pins of the running environment
    python scripts/lockfile.py check LOCK [--optional LOCK]     the environment equals the lock(s)
    python scripts/lockfile.py diff LOCK                        what the environment has that differs
    python scripts/lockfile.py missing                          pyproject requirements absent from the locks

Only the standard library and ``packaging`` (present wherever pip is) are used, so it runs in a venv
that is still being built.
"""

from __future__ import annotations

import re
import sys
from importlib import metadata
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
LOCK = REPO / "requirements.lock"
BENCH_LOCK = REPO / "requirements-bench.lock"
BENCH_EXTRAS = {"bench"}  # the extras that live in the bench lock instead of the main one
# Packages a CPU environment must never contain: a CUDA build of torch pulled them in.
CUDA_ONLY = re.compile(r"^(nvidia-.*|cuda-.*|triton)$")
# What pip installs into every venv by itself, and the project itself: never pinned.
UNPINNED = {"pip", "lorakit"}


def normalize(name: str) -> str:
    """PEP 503 name: lower case, runs of -_. as one -."""
    return re.sub(r"[-_.]+", "-", name).lower()


def release(version: str) -> str:
    """A version without its local label: torch's build variant (+cpu, +cu126) picks an index, not a release."""
    return version.split("+", 1)[0]


def read_lock(path: Path) -> dict[str, str]:
    """{normalized name: version} of a lock file. Raises ValueError naming the line of anything else."""
    pins: dict[str, str] = {}
    for number, raw in enumerate(path.read_text().splitlines(), 1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        match = re.fullmatch(r"([A-Za-z0-9][A-Za-z0-9._-]*)==([A-Za-z0-9.+!_-]+)", line)
        if match is None:
            raise ValueError(f"{path.name}:{number}: {raw.strip()!r} is not a 'name==version' pin; "
                             f"regenerate the lock with `make lock`")
        name = normalize(match.group(1))
        if name in pins:
            raise ValueError(f"{path.name}:{number}: {match.group(1)} is pinned twice; regenerate with `make lock`")
        pins[name] = match.group(2)
    return pins


def installed() -> dict[str, str]:
    """{normalized name: version} of the running environment's distributions."""
    found: dict[str, str] = {}
    for dist in metadata.distributions():
        name = dist.metadata["Name"]
        if name:
            found[normalize(name)] = dist.version
    return found


def pyproject_requirements() -> dict[str, set[str]]:
    """{extra ('' for the core dependencies): normalized requirement names} from pyproject.toml."""
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        import tomli as tomllib
    from packaging.requirements import Requirement

    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    groups = {"": project.get("dependencies", [])} | project.get("optional-dependencies", {})
    return {extra: {normalize(Requirement(r).name) for r in reqs} for extra, reqs in groups.items()}


def missing_from_locks() -> list[str]:
    """The pyproject requirements (extras included) that no lock pins, as 'name (extra)' strings."""
    main, bench = read_lock(LOCK), read_lock(BENCH_LOCK)
    gaps = []
    for extra, names in pyproject_requirements().items():
        pins = main | bench if extra in BENCH_EXTRAS else main
        gaps += [f"{name} ({extra or 'dependencies'})" for name in sorted(names - set(pins) - UNPINNED)]
    return gaps


def freeze(exclude: dict[str, str]) -> str:
    """The running environment as lock lines, minus the pins ``exclude`` already holds at equal versions."""
    have = installed()
    cuda = sorted(n for n in have if CUDA_ONLY.match(n) and n not in exclude)
    if cuda and "--allow-cuda" not in sys.argv:
        raise SystemExit(f"refusing to lock CUDA packages into a CPU lock: {', '.join(cuda)} "
                         f"(a CUDA build of torch or a GPU-only package was installed)")
    lines = []
    for name in sorted(have):
        if name in UNPINNED or exclude.get(name) == have[name]:
            continue
        if name in exclude:
            raise SystemExit(f"{name}: {have[name]} here but {exclude[name]} in the main lock; the bench extra "
                             f"must not move a pin of the main lock")
        lines.append(f"{name}=={have[name]}")
    return "\n".join(lines) + "\n"


def same_version(name: str, have: str, pinned: str) -> bool:
    """Equal versions; for torch equal releases, whose build variant (+cpu, +cu126) comes from TORCH_INDEX."""
    return release(have) == release(pinned) if name == "torch" else have == pinned


def check(required: list[Path], optional: list[Path] = ()) -> list[str]:
    """Every difference of the running environment from the locks: a ``required`` pin missing or at another
    version, a package that no lock pins. ``optional`` pins (the bench lock) may be absent, not different."""
    pins: dict[str, str] = {}
    for path in required:
        pins |= read_lock(path)
    allowed: dict[str, str] = {}
    for path in optional:
        allowed |= read_lock(path)
    have = installed()
    problems = []
    for name, version in sorted((allowed | pins).items()):
        if name not in have:
            if name in pins:
                problems.append(f"{name}=={version} is locked but not installed")
        elif not same_version(name, have[name], version):
            problems.append(f"{name} is {have[name]}, the lock says {version}")
    for name in sorted(set(have) - set(pins) - set(allowed) - UNPINNED):
        problems.append(f"{name}=={have[name]} is installed but not locked")
    return problems


def main(argv: list[str]) -> int:
    if not argv:
        print(__doc__)
        return 2
    command, args = argv[0], [a for a in argv[1:] if not a.startswith("--allow")]
    if command == "freeze":
        exclude = read_lock(Path(args[args.index("--exclude") + 1])) if "--exclude" in args else {}
        sys.stdout.write(freeze(exclude))
        return 0
    if command == "validate":
        try:
            for path in args:
                read_lock(Path(path))
        except (OSError, ValueError) as error:
            print(f"lock check: {error}", file=sys.stderr)
            return 1
        return 0
    if command == "check":
        optional = [Path(args.pop(args.index("--optional") + 1))] if "--optional" in args else []
        problems = check([Path(a) for a in args if a != "--optional"] or [LOCK], optional)
        for line in problems:
            print(f"lock check: {line}", file=sys.stderr)
        if problems:
            print("lock check: the environment differs from the lock: `make clean` and install again, or "
                  "`make lock` if pyproject.toml changed", file=sys.stderr)
        return 1 if problems else 0
    if command == "diff":
        pins, have = read_lock(Path(args[0])), installed()
        for name in sorted(set(pins) | set(have) - UNPINNED):
            if pins.get(name) != have.get(name):
                print(f"{name}: lock {pins.get(name, '-')}  here {have.get(name, '-')}")
        return 0
    if command == "missing":
        gaps = missing_from_locks()
        print("\n".join(gaps) if gaps else "every pyproject requirement is locked")
        return 1 if gaps else 0
    print(f"unknown command {command!r}\n{__doc__}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
