"""Retrieval: a dual encoder over the feature cache and the vocabulary, its
index, and search both ways (text to images, image to captions)."""
