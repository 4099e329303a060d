"""Train-step shapes and padding of radcap's batches, on real ROCO caption lengths.

XLA (Keras' `jit_compile`, on by default on a GPU) compiles the train step
once per input shape. This counts the distinct `(batch, width)` shapes that
the `roco` preset's training meets, in one epoch and in a whole run, and the
share of padded positions among the target positions, for two ways of
cutting a batch:

- before: each batch cut to its longest caption, the last batch smaller
  (radcap 0.3.0);
- after: `Batches` today: widths rounded up to one of at most `WIDTHS`
  (`bucket_widths`; other counts for comparison), the train split's last
  batch filled up with empty rows.

Caption lengths are those of the real ROCO captions (the shared 2,000 or the
tests' 300), encoded as the preset does, drawn with replacement up to the
size of ROCO's train split. Prints one JSON object.

    .venv/bin/python bench/shapes.py [--captions 65000] [--epochs 20] [--widths 8 16]
"""

import argparse
import json

import numpy as np
from common import real_caption_tokens, real_captions

from radcap.core.config import preset
from radcap.training.batches import WIDTHS, Batches


def measure(tokens, batch_size: int, epochs: int, after: bool, widths: int) -> dict:
    """Distinct shapes (one epoch, all epochs) and padded share of one scheme."""
    rows = np.zeros(len(tokens))
    batches = Batches(tokens, rows, {}, batch_size, True, fill=after, widths=widths)
    lengths = batches.lengths
    per_epoch, all_shapes = [], set()
    real = padded = 0
    for epoch in range(epochs):
        shapes = set()
        for index in batches.plan(epoch):
            if after:
                inputs, _ = batches.batch(index)
                shape = inputs["tokens"].shape
            else:
                shape = (len(index), int(lengths[index].max()) - 1)
            shapes.add(shape)
            real += int((lengths[index] - 1).sum())  # targets: words and <end>
            padded += shape[0] * shape[1]
        per_epoch.append(len(shapes))
        all_shapes |= shapes
    return {
        "shapes_per_epoch": int(np.mean(per_epoch)),
        "shapes_per_run": len(all_shapes),
        "padded_share": round(1 - real / padded, 4),
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--captions", type=int, default=65_000)
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--widths", type=int, nargs="+", default=[4, WIDTHS, 12, 16])
    args = parser.parse_args()
    config = preset("roco")
    tokens = real_caption_tokens(args.captions, config.max_len)
    report = {
        "captions": args.captions,
        "batch_size": config.batch_size,
        "max_len": config.max_len,
        "sample": len(real_captions()),
        "epochs": args.epochs,
    }
    report["before"] = measure(tokens, config.batch_size, args.epochs, False, 0)
    for widths in args.widths:
        report[f"after, {widths} widths"] = measure(
            tokens, config.batch_size, args.epochs, True, widths
        )
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
