"""The front door: ``python -m mhpo_verl <command> [args]`` (also installed as ``mhpo-verl``).

Each command is a module with a ``main(argv: list[str] | None) -> int``; it is imported only when chosen, so
``--help`` stays fast and a broken optional dependency of one command never breaks the others.
"""

from __future__ import annotations

import importlib
import sys

COMMANDS: dict[str, tuple[str, str]] = {
    "doctor": ("mhpo_verl.doctor", "check that verl sees the mhpo loss/estimator in this process and in Ray workers"),
    "data": ("mhpo_verl.data.__main__", "convert math datasets into verl's parquet schema"),
    "train": ("mhpo_verl.launch", "build (or --dry-run print) a verl main_ppo command from a recipe"),
    "demo": ("mhpo_verl.demo.__main__", "train a small LM with MHPO on CPU through verl's actor update"),
    "cpu-main-ppo": ("mhpo_verl.demo.main_ppo", "the same run through verl's full main_ppo trainer, on CPU"),
    "eval": ("mhpo_verl.eval.__main__", "avg@k / pass@k on MATH500, AIME, AMC, HMMT"),
}


def _usage() -> str:
    width = max(map(len, COMMANDS))
    lines = ["usage: python -m mhpo_verl <command> [args]", "", "commands:"]
    lines += [f"  {name:<{width}}  {help_text}" for name, (_, help_text) in COMMANDS.items()]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in {"-h", "--help", "help"}:
        print(_usage())
        return 0
    command, rest = argv[0], argv[1:]
    if command not in COMMANDS:
        print(f"unknown command {command!r}; expected one of {sorted(COMMANDS)}\n\n{_usage()}", file=sys.stderr)
        return 2
    module = importlib.import_module(COMMANDS[command][0])
    return int(module.main(rest) or 0)


if __name__ == "__main__":
    sys.exit(main())
