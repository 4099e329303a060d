"""radcap: captions for radiology images, from a frozen VGG16 to a trained decoder.

A package per stage, each importing only the stages below it (see the
import-layers contract in pyproject.toml). Importing radcap loads no
TensorFlow and touches no network.
"""

from radcap import _moved  # noqa: F401  (the 0.3 module paths, until 0.5)

__version__ = "0.4.1"


def check_setup() -> dict:
    """Print the versions radcap runs with; warn (never fail) without a GPU.

    The first cell of every notebook calls this, so a run in Colab or Kaggle
    says at once what it runs on.

    Returns:
        `{"python", "radcap", "keras", "tensorflow", "gpus"}`.
    """
    import platform
    import warnings

    import keras
    import tensorflow as tf

    gpus = [gpu.name for gpu in tf.config.list_physical_devices("GPU")]
    facts = {
        "python": platform.python_version(),
        "radcap": __version__,
        "keras": keras.__version__,
        "tensorflow": tf.__version__,
        "gpus": gpus,
    }
    print(
        f"Python {facts['python']} | radcap {__version__} | Keras "
        f"{facts['keras']} | TensorFlow {facts['tensorflow']}"
    )
    if int(keras.__version__.split(".")[0]) < 3:
        warnings.warn(f"radcap needs Keras 3, not {keras.__version__}", stacklevel=2)
    if gpus:
        print("GPU:", ", ".join(gpus))
    else:
        warnings.warn(
            "No GPU found. The demo runs fine on a CPU; ROCO would take hours. "
            "Colab: Runtime > Change runtime type > GPU. Kaggle: Settings > "
            "Accelerator.",
            stacklevel=2,
        )
    return facts


def __getattr__(name: str):
    """`radcap.Retriever` (`radcap.retrieval.retriever`), imported on first use:
    it loads Keras, which `import radcap` does not. (By name: every stage
    imports `radcap.__version__`, and no stage may import retrieval.)"""
    if name == "Retriever":
        import importlib

        return importlib.import_module("radcap.retrieval.retriever").Retriever
    raise AttributeError(f"module 'radcap' has no attribute {name!r}")
