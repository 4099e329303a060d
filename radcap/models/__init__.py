"""Models: the Keras layers and the two captioners (merge and transformer) built
from a config, and the run folder that holds a trained one.
"""
