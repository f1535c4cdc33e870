"""Tiny generated ImageFolders and a torchvision teacher fine-tuned on them, for the teacher tests.

Three classes a small CNN can tell apart in a few steps: horizontal stripes, vertical stripes and a
blob, with noise and (RGB) a random tint per image. Deterministic for a given seed.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

CLASSES = ("blob", "stripes_h", "stripes_v")


def make_imagefolder(root: Path, *, n: int = 12, size: int = 32, gray: bool = False, seed: int = 0) -> Path:
    from PIL import Image

    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size] / size
    for c, name in enumerate(CLASSES):
        folder = root / name
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(n):
            f, phase = 3 + rng.integers(0, 3), rng.uniform(0, 6)
            if name == "stripes_h":
                img = np.sin(2 * np.pi * f * yy + phase)
            elif name == "stripes_v":
                img = np.sin(2 * np.pi * f * xx + phase)
            else:
                cy, cx = rng.uniform(0.3, 0.7, 2)
                img = np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / 0.03) * 2 - 1
            img = (img + rng.normal(0, 0.3, img.shape)) * 0.5 + 0.5
            a = np.clip(img * 255, 0, 255).astype(np.uint8)
            if not gray:
                a = (a[..., None] * rng.uniform(0.6, 1.0, 3)).astype(np.uint8)
            Image.fromarray(a).save(folder / f"{i:03d}.png")
    return root


def finetune_resnet18(root: Path, *, size: int, steps: int = 6, seed: int = 0):
    """torchvision resnet18 (standard stem, random init) fine-tuned for a few steps at `size` px
    with ImageNet normalisation, as a user would before bringing it to edgekd."""
    import torch
    import torchvision
    from torchvision import datasets
    from torchvision import transforms as T

    torch.manual_seed(seed)
    ds = datasets.ImageFolder(str(root), transform=T.Compose([
        T.Resize((size, size)), T.ToTensor(), T.Normalize((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))]))
    model = torchvision.models.resnet18(num_classes=len(ds.classes))
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    batches = torch.utils.data.DataLoader(ds, batch_size=12, shuffle=True)
    done = 0
    while done < steps:
        for x, y in batches:
            loss = torch.nn.functional.cross_entropy(model(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
            done += 1
            if done == steps:
                break
    return model.eval()
