"""Where the transformer looks on the hard demo: shares per block and head, and maps.

Run after `radcap demo --hard --decoder transformer` (and, for its maps,
`radcap demo --hard --attention`), from the folder those ran in:

    .venv/bin/python bench/attention_maps.py --root . --out bench/figures

The evaluation reports one side share per run: the cross-attention averaged
over heads and blocks. This script splits it: for every side word of the
greedy test captions, the share of each block's and each head's attention
on the half of the image that holds the lesion the word is about (0.5:
blind to the side). It also draws the maps of the first test image whose
two lesions are on different sides, for each run given. Prints one JSON
object.
"""

import argparse
import json
from pathlib import Path

import numpy as np

from radcap.data import load as load_dataset
from radcap.data.demo import SIDES, finding_sides, read_cases
from radcap.decoding.captioner import Captioner
from radcap.evaluation.attention import lesion_half_share
from radcap.features.splits import load_split
from radcap.models import runs
from radcap.plots import plot_attention


def cross_weights(model, features, grid, tokens):
    """Cross-attention `(blocks, B, heads, T, R)` over the grid, teacher-forced.

    Row t is the attention while predicting token t + 1 from tokens[:, : t + 1],
    the same numbers that step-by-step decoding gives.
    """
    _, memory = model.encode(features, grid)
    _, _, weights = model.call_with_cache(tokens, memory)
    return np.stack([np.asarray(w)[..., : model.regions] for w in weights])


def shares_by_head(captioner, part, cases) -> dict:
    """Mean side share per block and head, and averaged (the evaluation's figure)."""
    features, grid = part.image_features()
    result = captioner.search(features, grid, beam=1)
    vocab = captioner.vocab
    rows = {}
    for i, (image_id, tokens) in enumerate(zip(part.image_ids, result.tokens)):
        words = vocab.decode(tokens).split()
        written = [p for p, w in enumerate(words) if w in SIDES]
        sides = finding_sides(cases.loc[image_id])
        if not written or not sides:
            continue
        inputs = np.array([[vocab.start_id, *tokens[: max(written) + 1]]], np.int32)
        w = cross_weights(captioner.model, features[i : i + 1], grid[i : i + 1], inputs)
        for position, side in zip(written, sides):
            rows.setdefault("average", []).append(
                lesion_half_share(w[:, 0, :, position].mean((0, 1)), side)
            )
            for b in range(w.shape[0]):
                for h in range(w.shape[2]):
                    share = lesion_half_share(w[b, 0, h, position], side)
                    rows.setdefault(f"block {b} head {h}", []).append(share)
    return {k: round(float(np.mean(v)), 3) for k, v in rows.items()} | {
        "words": len(rows.get("average", []))
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", default=".")
    parser.add_argument("--run", default="hard-transformer")
    parser.add_argument(
        "--maps", nargs="*", default=["hard-transformer", "hard-attention"]
    )
    parser.add_argument("--out", default="bench/figures")
    args = parser.parse_args()

    root, out = Path(args.root), Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    captioner = Captioner.load(runs.check(root / "checkpoints" / args.run))
    config = captioner.config
    cases = read_cases(config.dataset_dir(root))
    part = load_split(config, load_dataset(config, root), "test", root)
    report = {"run": args.run, "side_share": shares_by_head(captioner, part, cases)}

    # The first test image with its two lesions on different sides.
    test = cases.loc[part.image_ids]
    pick = test[(test["side"] != test["side_2"])].index[0]
    images = load_dataset(config, root).images("test").set_index("image_id")
    path = images.loc[pick, "path"]
    report["map_image"] = {"image_id": pick, "reference": test.loc[pick, "caption"]}
    for name in args.maps:
        run_dir = root / "checkpoints" / name
        if not runs.is_trained(run_dir):
            continue
        result = Captioner.load(run_dir).describe([path])[0]
        title = f"{name}: {result.caption}"
        figure = plot_attention(path, result.words, result.attention, title)
        figure.savefig(out / f"{name}_attention.png", dpi=40)
        report["map_image"][name] = result.caption
    print(json.dumps(report))


if __name__ == "__main__":
    main()
