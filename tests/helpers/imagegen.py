"""Tiny generated ImageFolders and a torchvision teacher fine-tuned on them, for the teacher tests.

Three classes a small CNN can tell apart in a few steps: horizontal stripes, vertical stripes and a
blob, with noise and (RGB) a random tint per image. Deterministic for a given seed.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

CLASSES = ("blob", "stripes_h", "stripes_v")


def make_imagefolder(root: Path, *, n: int = 12, size: int | tuple[int, int] = 32, gray: bool = False,
                     seed: int = 0) -> Path:
    """`size`: N (square) or (H, W)."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    h, w = (size, size) if isinstance(size, int) else size
    yy, xx = np.mgrid[0:h, 0:w] / np.array([h, w]).reshape(2, 1, 1)
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


def tiny_teacher(root: Path, *, size: int = 16, epochs: int = 30, seed: int = 0):
    """A small CNN trained on the ImageFolder at `size` px with mean = std = 0.5 (its own view,
    unlike the data's statistics): a teacher from outside that is right on nearly every image."""
    import torch
    from torchvision import datasets
    from torchvision import transforms as T

    torch.manual_seed(seed)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, 2, 1), torch.nn.ReLU(), torch.nn.Conv2d(8, 16, 3, 2, 1),
                              torch.nn.ReLU(), torch.nn.Flatten(), torch.nn.Linear(16 * (size // 4) ** 2, len(CLASSES)))
    ds = datasets.ImageFolder(str(root), transform=T.Compose([T.Resize((size, size)), T.ToTensor(),
                                                                T.Normalize((0.5,) * 3, (0.5,) * 3)]))
    opt = torch.optim.Adam(net.parameters(), lr=3e-3)
    for _ in range(epochs):
        for x, y in torch.utils.data.DataLoader(ds, batch_size=20, shuffle=True):
            loss = torch.nn.functional.cross_entropy(net(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
    return net.eval()


HEADS = ("logits", "probabilities", "log-probabilities")


def with_head(net, head: str):
    """`net` returning logits, probabilities (a Softmax at the end) or log-probabilities (LogSoftmax)."""
    import torch

    extra = {"logits": [], "probabilities": [torch.nn.Softmax(1)], "log-probabilities": [torch.nn.LogSoftmax(1)]}
    return torch.nn.Sequential(net, *extra[head]).eval()


def export_onnx_teacher(net, path: Path, *, head: str, size: int = 16) -> Path:
    """`net` with `head` exported by torch.onnx.export, input N×3×size×size with a dynamic batch."""
    import warnings

    import torch

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(with_head(net, head), torch.zeros(1, 3, size, size), str(path), input_names=["input"],
                          output_names=["out"], dynamic_axes={"input": {0: "batch"}, "out": {0: "batch"}},
                          opset_version=17, dynamo=False)
    return path
