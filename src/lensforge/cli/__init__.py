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
    sub = parser.add_subparsers(dest="_task", metavar="TASK", parser_class=Parser)
    sub.required = True
    for cli in specs or task_specs():
        p = sub.add_parser(cli.name, help=cli.help, description=cli.help)
        verbs = p.add_subparsers(dest="_verb_name", metavar="VERB", parser_class=Parser)
        verbs.required = True
        for verb in cli.verbs:
            v = verbs.add_parser(verb.name, help=verb.help, description=verb.description or verb.help)
            for cls in verb.options:
                add_options(v, cls, verb.defaults)
            v.set_defaults(_verb=verb)
    return parser


def main(argv: list[str] | None = None) -> int:
    from ..engine import interrupts  # torch-free
    from ..options import given, handler

    raw = list(sys.argv[1:] if argv is None else argv)
    if "--nproc" in raw:   # `lensforge TASK train --nproc N`: the same command under torchrun
        from ..engine.distributed import relaunch_with_torchrun
        try:
            code = relaunch_with_torchrun(raw)
        except LensforgeError as e:
            print(f"lensforge: error: {e}", file=sys.stderr)
            return e.exit_code
        if code is not None:
            return code
    specs = task_specs()
    parser = build_parser(specs)
    args = parser.parse_args(_with_default_verb(raw, specs))
    verb = args._verb
    # From here on a Ctrl-C or SIGTERM, wherever it lands, ends as one line and exit 130: the
    # first one raises KeyboardInterrupt (fit turns it into Interrupted after saving last.pt), any
    # later one is held so that the clean-up and the last line cannot become a traceback. As a
    # program (argv None: the `lensforge` script, `python -m lensforge`) the signals stay ignored
    # after main returns: one landing in the interpreter's shutdown printed "Exception ignored in
    # atexit callback ... KeyboardInterrupt" from torch's finalizers.
    code, message = 130, "lensforge: interrupted"
    with interrupts.catch(ignore_after=argv is None):
        try:
            try:
                code, message = int(handler(verb.handler)(given(args, *verb.options)) or 0), None
            except interrupts.Interrupted as e:
                code, message = 130, f"lensforge: {e}"
            except LensforgeError as e:
                code, message = e.exit_code, f"lensforge: error: {e}"
            except FloatingPointError as e:
                code, message = 1, f"lensforge: error: {e}"
            interrupts.stop_raising()  # a signal landing on this call is still caught just below
        except KeyboardInterrupt:      # outside fit, or while an error above was being handled
            interrupts.stop_raising()
            code, message = 130, "lensforge: interrupted"
        interrupts.point("cli:done")
        if message:
            print(message, file=sys.stderr)
    return code


if __name__ == "__main__":
    sys.exit(main())
