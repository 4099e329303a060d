"""Decoding: the greedy and beam searches over a captioner's steps, the same
search compiled, and `Captioner`, which captions images with a run folder.
"""
