"""Never squash silently (issue 20): a text-line orientation check on 48×192 strips, read at the
aspect-keeping default (16×64) and squashed to the old default (32×32), same student, same teacher.

    .venv/bin/python benchmarks/bench_aspect.py                       # ~10 min on 2 shared cores
    .venv/bin/python benchmarks/bench_aspect.py --per-class 400 --seeds 3 --epochs 15

The data is generated here, deterministically: random 4-10 letter words in PIL's default bitmap
font, drawn at 2× on a 48×192 strip (random offset, ink and paper grey levels, noise); class
`upright` or `flipped` (the same strip turned 180°), as an OCR pipeline's orientation check.
Writes benchmarks/results/aspect.json.
"""

from __future__ import annotations

import argparse
import json
import string
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "benchmarks" / "results" / "aspect.json"


def write_strips(root: Path, *, per_class: int, seed: int = 0) -> Path:
    from PIL import Image, ImageDraw, ImageFont

    rng, font = np.random.default_rng(seed), ImageFont.load_default()
    for cls in ("upright", "flipped"):
        (root / cls).mkdir(parents=True, exist_ok=True)
    for i in range(2 * per_class):
        word = "".join(rng.choice(list(string.ascii_letters), rng.integers(4, 11)))
        paper, ink = int(rng.integers(170, 256)), int(rng.integers(0, 90))
        im = Image.new("L", (96, 24), paper)
        ImageDraw.Draw(im).text((int(rng.integers(0, 30)), int(rng.integers(2, 9))), word, fill=ink, font=font)
        a = np.asarray(im.resize((192, 48), Image.BILINEAR), dtype=np.float32)
        a = np.clip(a + rng.normal(0, 12, a.shape), 0, 255).astype(np.uint8)
        cls = "upright" if i % 2 == 0 else "flipped"
        out = Image.fromarray(a) if cls == "upright" else Image.fromarray(a).rotate(180)
        out.save(root / cls / f"{i:05d}.png")
    return root


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--per-class", type=int, default=400)
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--epochs", type=int, default=15)
    ap.add_argument("--teacher-epochs", type=int, default=10)
    ap.add_argument("--sizes", default="default,32,32x128",
                    help="comma-separated --input-size values; 'default' = left out (the images' aspect, 1,024 px)")
    ap.add_argument("--work", type=Path, default=Path("/tmp/edgekd-bench-aspect"))
    args = ap.parse_args()

    import torch

    from edgekd import api

    torch.set_num_threads(1)
    data = write_strips(args.work / "strips", per_class=args.per_class)
    rows = []
    labels = {"default": "aspect kept, 1,024 px (default)", "32": "squashed 32x32 (old default)"}
    for text in args.sizes.split(","):
        label, size = labels.get(text, f"--input-size {text}"), None if text == "default" else text
        t0 = time.perf_counter()
        r = api.distill(data=f"imagefolder:{data}", input_size=size, teacher="cnn-small", student="small-cnn",
                        teacher_epochs=args.teacher_epochs, epochs=args.epochs, seeds=args.seeds,
                        run=args.work / f"run-{size or 'default'}", progress=False)
        s = r.data
        rows.append({"input": label, "input_shape": s["data"]["input_shape"], "teacher": s["accuracy"]["teacher"],
                     "student_alone": s["accuracy"]["student_alone"], "student": s["accuracy"]["student"],
                     "student_params": s["student"]["params"], "seconds": time.perf_counter() - t0})
        print(json.dumps(rows[-1]), flush=True)
    OUT.parent.mkdir(parents=True, exist_ok=True)
    old = json.loads(OUT.read_text())["rows"] if OUT.exists() else []
    rows = [r for r in old if r["input"] not in {x["input"] for x in rows}] + rows
    OUT.write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items()}, "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
