"""PyTorch's side of the GPU training benchmark (scripts/bench-gpu.sh): EfficientNet-Lite0 from
timm, eager fp32, the same two phases kestrel-train times.

  frozen phase:  the backbone's forward pass over a batch, no gradients (what fills our feature
                 cache), in images/s
  fine-tuning:   forward + backward + optimizer step with every layer trainable, in images/s

Inputs are random tensors already on the device, so this is PyTorch's best case: no decoding, no
augmentation, no host-to-device copy. Prints one JSON object.

  python3 scripts/torch_train_bench.py --image-size 224 --batch-size 64 --steps 30
"""

import argparse
import json
import time

import timm
import torch


def images_per_second(step, batch, steps, warmup, sync):
    for _ in range(warmup):
        step()
    sync()
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    sync()
    return batch * steps / (time.perf_counter() - t0)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--image-size", type=int, default=224)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--classes", type=int, default=10)
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--warmup", type=int, default=5)
    # channels_last is what PyTorch's own performance guide asks of a CNN, on GPU and CPU alike.
    ap.add_argument("--memory-format", choices=["channels_last", "contiguous"], default="channels_last")
    args = ap.parse_args()

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    # No weights: the machine that runs this reaches no model hub, and timing does not need them.
    memory_format = {"channels_last": torch.channels_last, "contiguous": torch.contiguous_format}[args.memory_format]
    model = timm.create_model("efficientnet_lite0", pretrained=False, num_classes=args.classes)
    model = model.to(device, memory_format=memory_format)
    x = torch.randn(args.batch_size, 3, args.image_size, args.image_size, device=device)
    x = x.contiguous(memory_format=memory_format)
    y = torch.randint(0, args.classes, (args.batch_size,), device=device)

    model.eval()

    def frozen():
        with torch.no_grad():
            model.forward_head(model.forward_features(x), pre_logits=True)

    frozen_ips = images_per_second(frozen, args.batch_size, args.steps, args.warmup, sync)

    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    loss_fn = torch.nn.CrossEntropyLoss(label_smoothing=0.1)

    def finetune():
        optimizer.zero_grad(set_to_none=True)
        loss_fn(model(x), y).backward()
        optimizer.step()

    finetune_ips = images_per_second(finetune, args.batch_size, args.steps, args.warmup, sync)

    print(json.dumps({
        "engine": f"PyTorch {torch.__version__} eager fp32 {args.memory_format}, timm {timm.__version__}",
        "device": torch.cuda.get_device_name(0) if device.type == "cuda" else "cpu",
        "threads": torch.get_num_threads(),
        "image_size": args.image_size, "batch": args.batch_size, "steps": args.steps,
        "cache_images_per_second": frozen_ips, "finetune_images_per_second": finetune_ips,
    }))


if __name__ == "__main__":
    main()
