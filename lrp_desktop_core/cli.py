"""``lrp-explain``: explain images from the command line, batched, on any device.

For every image it writes the heatmap overlay (PNG), the raw relevance (``.npy``) and a JSON
record of all settings, the same files the desktop app exports, plus one ``summary.csv``.
Where the heatmaps of LRP may be wrong (parts of the model no rule explains, operations on the
relevance path outside any rule), it says so once per run on stderr, and in every record.
With ``--evaluate`` it adds faithfulness scores (region perturbation AOPC) and, where an object
mask ``<stem>_mask.png`` lies beside an image, localisation scores.

The arguments are parsed and checked (:mod:`.cli_args`) before torch and the engine
(:mod:`.cli_run`) are imported, so ``--help`` and argument errors answer at once. The engine (and
torchvision, unless the model is a bundled demo) is imported with the garbage collector paused,
then frozen (:mod:`.import_freeze`).
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from .cli_args import UsageError, parse_arguments
from .import_freeze import import_and_freeze
from .torchvision_types import may_need_torchvision


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``lrp-explain``; return the exit code (0 ok, 1 some images failed, 2 bad usage).

    Parameters
    ----------
    argv : sequence of str, optional
        The arguments; ``sys.argv[1:]`` when None.

    Returns
    -------
    int
        0 when every image was explained, 1 when some failed, 2 for bad usage.
    """
    try:
        args = parse_arguments(argv)
    except UsageError as error:
        print(f"lrp-explain: error: {error}", file=sys.stderr)
        return 2
    # torch and the engine, only once the arguments are fine
    torchvision = ["torchvision"] if may_need_torchvision(args.model) else []
    import_and_freeze([f"{__package__}.cli_run"], optional=torchvision)
    from .cli_run import run

    return run(args)


__all__ = ["main"]

if __name__ == "__main__":
    raise SystemExit(main())
