"""Features: the frozen VGG16 backbone, the per-split feature caches it fills,
the splits read back from them and the familiarity of an image to training.
"""

from radcap._moved import forward_to

# Until 0.5: `from radcap.features import extract` (the module this package was).
__getattr__ = forward_to(__name__, "radcap.features.cache")
