"""radcap: radiology image captioning, frozen VGG16 and a merge-style LSTM decoder.

Stages, each importing only from those before it (checked by import-linter
in the tests): the base (`files`, `config`, `text`), `data`, `dicom`, `images`,
`backbone`, `features`, `splits`, `layers`, `model`, `generate`, `runs`,
then `train` (with `batches`, `callbacks`) beside `captioner`, then
`evaluation`, `plots`, `app` (the web page) and `cli`. Importing radcap
loads no TensorFlow and touches no network.
"""

__version__ = "0.3.0"


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
