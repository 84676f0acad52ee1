#!/usr/bin/env python3
"""Golden values for test/golden.test.ts from the PyTorch twin (bench/torch_twin.py), an independent
implementation of the same model: same seeded init, same batch, plain Adam.

Run: /usr/bin/python3 test/golden/make_golden.py > test/golden/nano.json
"""
import json, os, sys
import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.join(os.path.dirname(__file__), '..', '..', 'bench'))
import torch_twin as twin  # noqa: E402

CFG = dict(vocab=256, dModel=32, nHeads=2, nLayers=2, maxSeq=32, batch=2)
SEED, BATCH_SEED, STEPS, LR = 1234, 5, 10, 1e-2

torch.manual_seed(0)
P, mask = twin.create_model(CFG, 'cpu', seed=SEED)
inputs, targets = twin.make_batch(CFG, CFG['batch'], CFG['maxSeq'], BATCH_SEED, 'cpu')
logits, _ = twin.forward(P, mask, CFG, inputs)
loss = F.cross_entropy(logits.reshape(-1, CFG['vocab']), targets.reshape(-1))
loss.backward()
grads = {name: p.grad.detach().flatten() for name, p in P.items()}
out = dict(
    config=CFG, seed=SEED, batchSeed=BATCH_SEED, lr=LR,
    loss=loss.item(),
    logitsHead=logits[0, :3, :8].detach().flatten().tolist(),
    grads={name: dict(sum=g.sum().item(), absSum=g.abs().sum().item(), head=g[:6].tolist()) for name, g in grads.items()},
)
for p in P.values():
    p.grad = None
opt = torch.optim.Adam(list(P.values()), lr=LR, betas=(0.9, 0.999), eps=1e-8)
losses = []
for _ in range(STEPS):
    opt.zero_grad(set_to_none=True)
    logits, _ = twin.forward(P, mask, CFG, inputs)
    l = F.cross_entropy(logits.reshape(-1, CFG['vocab']), targets.reshape(-1))
    l.backward()
    opt.step()
    losses.append(l.item())
out['adamLosses'] = losses
out['torch'] = torch.__version__
print(json.dumps(out, indent=1))
