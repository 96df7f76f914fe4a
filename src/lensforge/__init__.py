"""lensforge: train, evaluate and use classic computer-vision models from one CLI and one API.

    import lensforge
    run = lensforge.classify.train("digits", model="cnn", epochs=10)
    clf = lensforge.classify.load(run.best_weights)
    clf.predict(["my_digit.jpg"])

Each task (`lensforge.classify`, ...) is imported on first use, so `import lensforge` stays cheap.
"""
import importlib

__version__ = "0.1.0"

_TASKS = ("classify", "autoencode", "vae", "gan", "colorize", "stylize", "segment", "detect", "faceswap")


def __getattr__(name: str):
    if name in _TASKS:
        return importlib.import_module(f"lensforge.tasks.{name}")
    raise AttributeError(f"module 'lensforge' has no attribute {name!r}")
