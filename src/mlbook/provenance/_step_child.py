"""Inside ``mlbook data process``'s child: the boundary guard, then the script as ``__main__``.

``python -m mlbook.provenance._step_child SPEC`` where SPEC is JSON:
``{"script": path, "argv": [...], "denied": [directories]}``. An audit hook
(:func:`sys.addaudithook`) refuses every file operation on a path inside a
denied directory (the other areas: ``Models/``, ``Deployment/``) with a
:class:`PermissionError` naming the path, so a data-processing script can touch
only ``Datasets/``, ``Data_processing/`` and files outside the areas. This guards
Python's own file calls; programs the script starts are not watched (the static
check of ``mlbook check`` covers their paths when they are literals).
"""

from __future__ import annotations

import json
import os
import runpy
import sys
from typing import Any

_PATH_EVENTS = {
    "open": 1,
    "os.listdir": 1,
    "os.scandir": 1,
    "os.remove": 1,
    "os.rmdir": 1,
    "os.mkdir": 1,
    "os.rename": 2,
    "os.link": 2,
    "os.symlink": 2,
    "os.truncate": 1,
    "os.chmod": 1,
    "os.utime": 1,
    "shutil.copyfile": 2,
    "shutil.copytree": 2,
    "shutil.rmtree": 1,
    "shutil.move": 2,
}


def install_guard(denied: list[str], areas: str) -> None:
    """Refuse file operations inside ``denied`` directories (resolved, symlinks followed)."""
    roots = tuple(os.path.realpath(d) + os.sep for d in denied)

    def hook(event: str, args: tuple[Any, ...]) -> None:
        count = _PATH_EVENTS.get(event)
        if count is None:
            return
        for value in args[:count]:
            if isinstance(value, int) or value is None:
                continue
            try:
                path = os.fsdecode(os.fspath(value))
            except TypeError:
                continue
            real = os.path.realpath(path) + os.sep
            if real.startswith(roots):
                raise PermissionError(
                    f"mlbook data process: {path} is outside {areas} "
                    "(data processing may use only those areas)"
                )

    sys.addaudithook(hook)


def main(argv: list[str]) -> None:
    """Run the script of SPEC (``argv[1]``) under the guard."""
    spec = json.loads(argv[1])
    script = spec["script"]
    install_guard(spec["denied"], spec["areas"])
    sys.argv = [script, *spec["argv"]]
    sys.path[0] = os.path.dirname(script)
    runpy.run_path(script, run_name="__main__")


if __name__ == "__main__":
    main(sys.argv)
