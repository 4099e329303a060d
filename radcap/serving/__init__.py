"""Serving: a trained run outside Python (`radcap export`, a SavedModel) and on
a local web page (`radcap app`: the page, its work and the server it runs in).
"""
