#!/usr/bin/env python3
"""Train the small digits CNN (scikit-learn's 8x8 digits, CPU only, about a minute) and export it to ONNX.

Writes tests/data/digits_cnn.onnx and tests/data/digits.npz (all 1797 digits as 8x8 uint8 images,
their labels, and the train / calibration / held-out split indices), so that the tests and
the docs need neither torch nor scikit-learn. Deterministic: same seed, same model.

Needs: pip install torch==2.13.0 scikit-learn   (CPU wheel; never plain `torch`)
Usage: .venv/bin/python scripts/train_digits.py [--out-dir tests/data] [--epochs 30]

The model takes a 1x3x32x32 float32 RGB image: the digit upsampled 4x (nearest), grey in all
three channels, preprocessed as declared in digits_preprocess.yaml (x/255, mean 0.5, std 0.5).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

SEED = 0
HELD_OUT = 500
CALIB = 200
SIZE = 32
MEAN, STD = 0.5, 0.5


def to_images(x8: np.ndarray) -> np.ndarray:
    """8x8 digits (uint8 0..255) -> N x 32 x 32 x 3 uint8 images (HWC, grey in every channel)."""
    big = np.kron(x8, np.ones((1, SIZE // 8, SIZE // 8), dtype=np.uint8))
    return np.repeat(big[..., None], 3, axis=-1)


def preprocess(images: np.ndarray) -> np.ndarray:
    """The declared preprocessing of digits_preprocess.yaml, as a batch (N x 3 x 32 x 32 float32)."""
    x = images.astype(np.float32) / 255.0
    x = (x - MEAN) / STD
    return np.ascontiguousarray(x.transpose(0, 3, 1, 2))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out-dir", type=Path, default=Path(__file__).resolve().parent.parent / "tests" / "data")
    ap.add_argument("--epochs", type=int, default=30)
    args = ap.parse_args()

    import torch
    from sklearn.datasets import load_digits
    from torch import nn

    torch.manual_seed(SEED)
    torch.use_deterministic_algorithms(True)
    torch.set_num_threads(1)
    digits = load_digits()
    x8 = np.clip(np.round(digits.images * (255.0 / 16.0)), 0, 255).astype(np.uint8)
    y = digits.target.astype(np.int64)

    rng = np.random.default_rng(SEED)
    order = rng.permutation(len(y))
    test_idx, calib_idx, train_idx = (np.sort(order[:HELD_OUT]), np.sort(order[HELD_OUT:HELD_OUT + CALIB]),
                                      np.sort(order[HELD_OUT:]))

    xt = torch.from_numpy(preprocess(to_images(x8[train_idx])))
    yt = torch.from_numpy(y[train_idx])
    model = nn.Sequential(
        nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(16, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(32, 64, 3, padding=1), nn.BatchNorm2d(64), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(64, 10),
    )
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, args.epochs)
    loss_fn = nn.CrossEntropyLoss()
    g = torch.Generator().manual_seed(SEED)
    for epoch in range(args.epochs):
        model.train()
        perm = torch.randperm(len(yt), generator=g)
        total = 0.0
        for i in range(0, len(perm), 64):
            b = perm[i:i + 64]
            opt.zero_grad()
            loss = loss_fn(model(xt[b]), yt[b])
            loss.backward()
            opt.step()
            total += float(loss.detach()) * len(b)
        sched.step()
        if epoch % 5 == 4 or epoch == args.epochs - 1:
            print(f"epoch {epoch + 1}: loss {total / len(yt):.4f}")

    model.eval()
    xv = torch.from_numpy(preprocess(to_images(x8[test_idx])))
    with torch.no_grad():
        acc = float((model(xv).argmax(1).numpy() == y[test_idx]).mean())
    print(f"held-out accuracy (torch, {HELD_OUT} samples): {acc:.4f}")

    out = args.out_dir
    out.mkdir(parents=True, exist_ok=True)
    onnx_path = out / "digits_cnn.onnx"
    torch.onnx.export(model, (torch.zeros(1, 3, SIZE, SIZE),), str(onnx_path), input_names=["image"],
                      output_names=["logits"], opset_version=13, dynamo=False, do_constant_folding=True)
    np.savez_compressed(out / "digits.npz", images8=x8, labels=y.astype(np.uint8), train=train_idx,
                        calib=calib_idx, heldout=test_idx)
    meta = {"seed": SEED, "epochs": args.epochs, "torch_heldout_accuracy": acc, "heldout": HELD_OUT,
            "calib": CALIB, "input": [1, 3, SIZE, SIZE], "mean": MEAN, "std": STD}
    (out / "digits_cnn.json").write_text(json.dumps(meta, indent=2) + "\n")
    print(f"wrote {onnx_path} ({onnx_path.stat().st_size} bytes), {out / 'digits.npz'}")


if __name__ == "__main__":
    main()
