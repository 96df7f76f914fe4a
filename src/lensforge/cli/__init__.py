"""`lensforge TASK VERB [options]`: one entry point over the Python API.

Every user mistake ends as one line on stderr and a non-zero exit code (2 for wrong options or
missing paths); a traceback means a lensforge bug.
"""
from __future__ import annotations

import argparse
import importlib
import sys

from ..errors import LensforgeError

def _with_default_verb(argv: list[str], specs) -> list[str]:
    """`lensforge stylize CONTENT STYLE` means `lensforge stylize run CONTENT STYLE`: argparse
    alone cannot tell a file name from a sub-command, so the verb is inserted before parsing."""
    if len(argv) >= 2:
        for cli in specs:
            if argv[0] == cli.name and cli.default_verb and argv[1] not in {v.name for v in cli.verbs} \
                    and argv[1] not in ("-h", "--help"):
                return [argv[0], cli.default_verb, *argv[1:]]
    return argv


class Parser(argparse.ArgumentParser):
    """argparse, but an error is one line (plus a pointer to --help), exit code 2."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


#: CLI modules not yet generated from specs (being converted).
LEGACY = ["lensforge.cli.data"]


def task_specs() -> list:
    """Every task's TaskCLI, from the torch-free lensforge.specs modules."""
    from ..specs import SPECS

    return [importlib.import_module(f"lensforge.specs.{name}").CLI for name in SPECS]


def build_parser(specs=None) -> Parser:
    """The whole `lensforge TASK VERB` tree, generated from the options dataclasses (no torch import)."""
    from .. import __version__
    from ..options import add_options

    parser = Parser(prog="lensforge", description="Train, evaluate and use computer-vision models.")
    parser.add_argument("--version", action="version", version=f"lensforge {__version__}")
    sub = parser.add_subparsers(dest="task", metavar="TASK", parser_class=Parser)
    sub.required = True
    for cli in specs or task_specs():
        p = sub.add_parser(cli.name, help=cli.help, description=cli.help)
        verbs = p.add_subparsers(dest="verb", metavar="VERB", parser_class=Parser)
        verbs.required = True
        for verb in cli.verbs:
            v = verbs.add_parser(verb.name, help=verb.help, description=verb.description or verb.help)
            for cls in verb.options:
                add_options(v, cls, verb.defaults)
            v.set_defaults(_verb=verb)
    for mod in LEGACY:
        legacy = importlib.import_module(mod)
        if hasattr(legacy, "register"):
            legacy.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    from ..engine.trainer import Interrupted

    from ..options import given, handler

    specs = task_specs()
    parser = build_parser(specs)
    args = parser.parse_args(_with_default_verb(list(sys.argv[1:] if argv is None else argv), specs))
    verb = getattr(args, "_verb", None)
    try:
        if verb is None:
            return int(args.func(args) or 0)
        return int(handler(verb.handler)(given(args, *verb.options)) or 0)
    except Interrupted as e:
        print(f"lensforge: {e}", file=sys.stderr)
        return 130
    except LensforgeError as e:
        print(f"lensforge: error: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print("lensforge: interrupted", file=sys.stderr)
        return 130
    except FloatingPointError as e:
        print(f"lensforge: error: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
