"""Each task's command-line surface and options, torch-free: `lensforge --help` and every
`TASK VERB --help` are built from these modules alone (lensforge.cli), and the task modules
(lensforge.tasks.*) take their options from the same dataclasses.

A spec module defines its options dataclasses and `CLI = TaskCLI(...)`; list it in SPECS.
"""
SPECS = ["classify", "data", "runs", "autoencode", "vae", "gan", "colorize", "stylize", "serve", "export", "faceswap", "detect", "segment"]
