"""``python -m vidlab COMMAND ...``.

- ``run``: execute the curriculum's notebooks (:mod:`vidlab.run`)
- ``check``: compare a run's metrics with each notebook's lesson thresholds (:mod:`vidlab.check`)
- ``train``: train a registered model on a manifest dataset, alone or under torchrun (:mod:`vidlab.dist.cli`)
- ``predict``: top-k classes of video files with a saved or exported model (:mod:`vidlab.infer.cli`)
"""
import importlib
import sys

COMMANDS = {"run": "vidlab.run", "check": "vidlab.run", "train": "vidlab.dist.cli", "predict": "vidlab.infer.cli"}


def main(argv: list[str]) -> int:
    if not argv or argv[0] in ("-h", "--help") or argv[0] not in COMMANDS:
        print(__doc__.strip(), file=sys.stderr if argv and argv[0] not in ("-h", "--help") else sys.stdout)
        if argv and argv[0] not in ("-h", "--help"):
            print(f"\nunknown command {argv[0]!r}; choose one of {', '.join(COMMANDS)}", file=sys.stderr)
            return 2
        return 0 if argv else 2
    module = importlib.import_module(COMMANDS[argv[0]])
    return module.main(argv if argv[0] in ("run", "check") else argv[1:])


sys.exit(main(sys.argv[1:]))
