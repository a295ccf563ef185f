"""The PyTorch side of bench/peer.py: the same work as ace's, in PyTorch + timm.

    python bench/torch_peer.py --mode infer|step --precision fp32|bf16 [--threads 2]

Prints one JSON line: images/s and peak resident memory. Runs in whatever interpreter has
torch and timm (they are never dependencies of ace); bench/peer.py starts it.

The step mirrors ace's ACE step at the default geometry: per image a 448 px coarse view and
a 224 px fine view cut from a 512 px image and resized to 224, student (drop path 0.1)
forward + backward and EMA-teacher forward on all 2B views, composer (2x2 blocks of fine
tokens, 4C -> 4C -> C) and decomposer (C -> 4C -> 4C) MLPs, the two cosine-similarity
matching losses with Gaussian targets, the DINO head (C -> 2048 -> 2048 -> 256 -> K) on
overlap-pooled tokens with centering, AdamW, and the EMA update. bf16 means
torch.autocast("cpu", dtype=torch.bfloat16), as a PyTorch user would turn it on.
"""
import argparse
import json
import os
import resource
import sys

import timm
import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import timed  # noqa: E402


def mlp(i, h, o):
    return nn.Sequential(nn.Linear(i, h), nn.GELU(), nn.Linear(h, o))


class DINOHead(nn.Module):
    def __init__(self, c, hidden=2048, bottleneck=256, k=8192):
        super().__init__()
        self.mlp = nn.Sequential(nn.Linear(c, hidden), nn.GELU(), nn.Linear(hidden, hidden), nn.GELU(),
                                 nn.Linear(hidden, bottleneck))
        self.last = nn.utils.parametrizations.weight_norm(nn.Linear(bottleneck, k, bias=False))

    def forward(self, x):
        return self.last(F.normalize(self.mlp(x), dim=-1))


def match_loss(teacher, z, target, alpha, scale=1 / 0.07):
    m = torch.sigmoid(scale * F.normalize(teacher, dim=-1) @ F.normalize(z, dim=-1).transpose(1, 2))
    w = alpha * target + (1 - alpha) * (1 - target)
    return (w * F.binary_cross_entropy(m.float(), target, reduction="none")).mean()


def ace_step_fn(batch, precision):
    c = 192
    student = timm.create_model("vit_tiny_patch16_224", in_chans=1, num_classes=0, drop_path_rate=0.1)
    teacher = timm.create_model("vit_tiny_patch16_224", in_chans=1, num_classes=0)
    teacher.load_state_dict(student.state_dict())
    composer, decomposer = mlp(4 * c, 4 * c, c), mlp(c, 4 * c, 4 * c)
    head, teacher_head = DINOHead(c), DINOHead(c)
    teacher_head.load_state_dict(head.state_dict())
    for p in list(teacher.parameters()) + list(teacher_head.parameters()):
        p.requires_grad_(False)
    params = [p for m in (student, composer, decomposer, head) for p in m.parameters()]
    opt = torch.optim.AdamW(params, lr=5e-4 * batch / 256)
    center = torch.zeros(8192)
    images = torch.rand(batch, 1, 512, 512)
    comp_target = torch.rand(batch, 196, 49).round()
    decomp_target = torch.rand(batch, 196, 784).round()
    autocast = torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16")

    def step():
        with torch.no_grad():  # views: a 448 and a 224 px crop, both resized to 224
            coarse = F.interpolate(images[:, :, 32:480, 32:480], size=224, mode="bilinear", antialias=True)
            fine = images[:, :, 144:368, 144:368]
            views = torch.cat([fine, coarse])
        with autocast:
            s = student.forward_features(views)[:, 1:]
            with torch.no_grad():
                t = teacher.forward_features(views)[:, 1:]
            s1, s2, t1, t2 = s[:batch], s[batch:], t[:batch], t[batch:]
            blocks = s1.reshape(batch, 7, 2, 7, 2, c).permute(0, 1, 3, 2, 4, 5).reshape(batch, 49, 4 * c)
            comp = match_loss(t2, composer(blocks), comp_target, 0.9)
            parts = decomposer(s2).reshape(batch, 14, 14, 2, 2, c).permute(0, 1, 3, 2, 4, 5).reshape(batch, 784, c)
            decomp = match_loss(t1, parts, decomp_target, 0.99)
            ls = head(s.mean(1)).float()
            with torch.no_grad():
                lt = teacher_head(t.mean(1)).float()
            pt = F.softmax((lt - center) / 0.04, dim=-1)
            pt = torch.cat([pt[batch:], pt[:batch]])
            glob = -(pt * F.log_softmax(ls / 0.1, dim=-1)).sum(-1).mean()
            loss = 0.1 * glob + comp + decomp
        opt.zero_grad(set_to_none=True)
        loss.backward()
        for p in params:
            torch.nn.utils.clip_grad_norm_(p, 0.8)
        opt.step()
        with torch.no_grad():
            for ps, pt_ in zip(list(student.parameters()) + list(head.parameters()),
                               list(teacher.parameters()) + list(teacher_head.parameters())):
                pt_.mul_(0.996).add_(ps.detach(), alpha=0.004)
            center.mul_(0.9).add_(lt.mean(0), alpha=0.1)

    return step


def infer_fn(batch, precision):
    model = timm.create_model("vit_tiny_patch16_224", in_chans=1, num_classes=0).eval()
    x = torch.randn(batch, 1, 224, 224)
    autocast = torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16")

    def infer():
        with torch.inference_mode(), autocast:
            model.forward_features(x)

    return infer


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--mode", choices=["infer", "step"], required=True)
    ap.add_argument("--precision", choices=["fp32", "bf16"], required=True)
    ap.add_argument("--batch", type=int)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    batch = args.batch or (32 if args.mode == "infer" else 16)
    fn = (infer_fn if args.mode == "infer" else ace_step_fn)(batch, args.precision)
    seconds = timed(fn, warmup_s=3, min_s=8)
    print(json.dumps({"images_per_s": batch / seconds,
                      "peak_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                      "torch": torch.__version__}))


if __name__ == "__main__":
    main()
