"""A set of real photographs and real non-demo images, made offline.

For the familiarity checks (tests/test_e2e.py, bench/bench_trust.py):
scikit-image's sample images (photos, microscopy, a retina, astronomy, a
scanned page, the Shepp-Logan phantom...), matplotlib's (a portrait, a real
MRI slice, elevation maps, logos), a typed document and a chart: 33 images.
"""

from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

SKIMAGE = (
    "astronaut binary_blobs brick camera cat cell checkerboard chelsea clock "
    "coffee coins colorwheel grass gravel horse hubble_deep_field "
    "immunohistochemistry logo microaneurysms moon page retina rocket "
    "shepp_logan_phantom text"
).split()
MATPLOTLIB_FILES = ("grace_hopper.jpg", "Minduka_Present_Blue_Pack.png", "logo2.png")


def write_real_images(folder: Path) -> list[Path]:
    """Write the set into `folder` (matplotlib's own files are used in place)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import skimage.data
    from matplotlib import cbook

    folder = Path(folder)
    arrays = {name: getattr(skimage.data, name)() for name in SKIMAGE}
    with cbook.get_sample_data("s1045.ima.gz") as f:  # a real MRI slice
        arrays["mri_s1045"] = np.frombuffer(f.read(), np.uint16).reshape(256, 256)
    with cbook.get_sample_data("jacksboro_fault_dem.npz") as f:
        arrays["elevation"] = f["elevation"]
    with cbook.get_sample_data("topobathy.npz") as f:
        arrays["topobathy"] = f["topo"]
    paths = []
    for name, array in arrays.items():
        array = np.asarray(array, np.float64)
        array = (255 * (array - array.min()) / (np.ptp(array) or 1)).astype(np.uint8)
        paths.append(folder / f"{name}.png")
        Image.fromarray(array).save(paths[-1])
    paths += [Path(cbook.get_sample_data(n, asfileobj=False)) for n in MATPLOTLIB_FILES]
    page = Image.new("L", (600, 800), 245)  # a typed document
    draw = ImageDraw.Draw(page)
    for row in range(30):
        draw.text((40, 30 + 25 * row), "Patient report: findings and impression " * 2)
    paths.append(folder / "document.png")
    page.save(paths[-1])
    fig, ax = plt.subplots()
    ax.plot(np.sin(np.linspace(0, 9, 200)))
    paths.append(folder / "chart.png")
    fig.savefig(paths[-1])
    plt.close(fig)
    return paths
