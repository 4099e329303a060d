"""Training: whole captions over the cached features, batched by length, with
callbacks that write every epoch whole, and resuming a run copied from elsewhere.
"""
