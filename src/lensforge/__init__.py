"""lensforge: train, evaluate and use classic computer-vision models from one CLI and one API.

    import lensforge.classify as classify
    run = classify.train(data="digits", model="cnn", epochs=10)
    model = classify.load(run.dir / "weights" / "best.pt")
    model.predict(["my_digit.jpg"])
"""
__version__ = "0.1.0"
