#!/usr/bin/python3
"""Writes tests/fixtures/optim_reference.json: PyTorch 1.13 optimiser trajectories for test_optim.

Run with Debian's python3-torch:  /usr/bin/python3 tools/gen_optim_fixture.py
CI never runs this; the JSON it writes is committed.

Four raw parameters stand in for a model (fc1.weight [8,5], fc1.bias [8], norm.weight [8],
fc2.weight [3,8]); they are split into decay / no_decay groups by the get_params_groups rule
(1-D or ".bias" -> no weight decay). Gradients are fixed random tensors per step, with a
per-step scale that rises and falls so that AMSGrad's running max matters. The learning rate
follows create_lr_scheduler (warmup + cosine LambdaLR, num_step=5, epochs=2, warmup_epochs=1).
Every run records the parameters after each step, the lr each group used, and the final state.
"""
import json
import math
import os

import numpy as np
import torch

torch.manual_seed(1234)
STEPS = 10
NUM_STEP, EPOCHS, WARMUP_EPOCHS = 5, 2, 1
WEIGHT_DECAY = 0.05
SHAPES = [("fc1.weight", [8, 5]), ("fc1.bias", [8]), ("norm.weight", [8]), ("fc2.weight", [3, 8])]
GRAD_SCALES = [1.0, 0.3, 2.0, 0.05, 1.5, 0.01, 0.8, 3.0, 0.02, 0.5]

init = {n: torch.randn(s, dtype=torch.float64) * 0.5 for n, s in SHAPES}
grads = [{n: torch.randn(s, dtype=torch.float64) * GRAD_SCALES[t] for n, s in SHAPES} for t in range(STEPS)]


def create_lr_scheduler(optimizer, num_step, epochs, warmup=True, warmup_epochs=1, warmup_factor=1e-3,
                        end_factor=1e-6):
    assert num_step > 0 and epochs > 0
    if warmup is False:
        warmup_epochs = 0

    def f(x):
        if warmup is True and x <= (warmup_epochs * num_step):
            alpha = float(x) / (warmup_epochs * num_step)
            return warmup_factor * (1 - alpha) + alpha
        else:
            current_step = (x - warmup_epochs * num_step)
            cosine_steps = (epochs - warmup_epochs) * num_step
            return ((1 + math.cos(current_step * math.pi / cosine_steps)) / 2) * (1 - end_factor) + end_factor

    return torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda=f), f


def cosine_scheduler(base_value, final_value, epochs, niter_per_ep, warmup_epochs=0, start_warmup_value=0,
                     warmup_steps=-1):
    warmup_schedule = np.array([])
    warmup_iters = warmup_epochs * niter_per_ep
    if warmup_steps > 0:
        warmup_iters = warmup_steps
    if warmup_epochs > 0:
        warmup_schedule = np.linspace(start_warmup_value, base_value, warmup_iters)
    iters = np.arange(epochs * niter_per_ep - warmup_iters)
    schedule = np.array(
        [final_value + 0.5 * (base_value - final_value) * (1 + math.cos(math.pi * i / (len(iters)))) for i in iters])
    schedule = np.concatenate((warmup_schedule, schedule))
    assert len(schedule) == epochs * niter_per_ep
    return schedule


def flat(t):
    return [float(v) for v in t.detach().reshape(-1).tolist()]


def param_groups(params):
    decay, no_decay = [], []
    for name, p in params.items():
        (no_decay if p.dim() == 1 or name.endswith(".bias") else decay).append(p)
    return [{"params": decay, "weight_decay": WEIGHT_DECAY}, {"params": no_decay, "weight_decay": 0.0}]


def run(kind, dtype, **opts):
    params = {n: init[n].clone().to(dtype).requires_grad_(True) for n, _ in SHAPES}
    groups = param_groups(params)
    if kind == "adamw":
        opt = torch.optim.AdamW(groups, **opts)
    else:
        opt = torch.optim.SGD(groups, **opts)
    sched, _ = create_lr_scheduler(opt, NUM_STEP, EPOCHS, warmup=True, warmup_epochs=WARMUP_EPOCHS)
    traj, lrs = [], []
    for t in range(STEPS):
        for n, p in params.items():
            p.grad = grads[t][n].to(dtype).clone()
        lrs.append([g["lr"] for g in opt.param_groups])
        opt.step()
        sched.step()
        traj.append({n: flat(p) for n, p in params.items()})
    state = {}
    for n, p in params.items():
        st = opt.state[p]
        state[n] = {k: (flat(v) if v.numel() > 1 or k != "step" else float(v)) for k, v in st.items()
                    if torch.is_tensor(v)}
    out = {"kind": kind, "dtype": str(dtype).replace("torch.", ""), "options": opts, "lrs": lrs,
           "params": traj, "state": state}
    return out


runs = {
    "adamw": run("adamw", torch.float32, lr=0.05, weight_decay=WEIGHT_DECAY),
    "adamw_amsgrad": run("adamw", torch.float32, lr=0.05, weight_decay=WEIGHT_DECAY, amsgrad=True,
                         betas=(0.8, 0.99), eps=1e-6),
    "adamw_f64": run("adamw", torch.float64, lr=0.05, weight_decay=WEIGHT_DECAY),
    "sgd_nesterov": run("sgd", torch.float32, lr=0.1, momentum=0.9, nesterov=True, weight_decay=WEIGHT_DECAY),
    "sgd_dampening": run("sgd", torch.float32, lr=0.1, momentum=0.9, dampening=0.1, weight_decay=WEIGHT_DECAY),
}

# Schedules: the LambdaLR factors PyTorch applied (lr / base lr) for a longer run, and StepLR.
dummy = [torch.zeros(1, requires_grad=True)]
opt = torch.optim.SGD(dummy, lr=1.0)
sched, f = create_lr_scheduler(opt, NUM_STEP, EPOCHS, warmup=True, warmup_epochs=WARMUP_EPOCHS)
lambda_factors = []
for _ in range(NUM_STEP * EPOCHS + 1):
    lambda_factors.append(opt.param_groups[0]["lr"])
    opt.step()
    sched.step()
opt = torch.optim.SGD(dummy, lr=1.0)
sched_nw, _ = create_lr_scheduler(opt, 7, 3, warmup=False)
nowarmup_factors = []
for _ in range(21):
    nowarmup_factors.append(opt.param_groups[0]["lr"])
    opt.step()
    sched_nw.step()
opt = torch.optim.SGD(dummy, lr=0.1)
steplr = torch.optim.lr_scheduler.StepLR(opt, step_size=3, gamma=0.5)
steplr_values = []
for _ in range(10):
    steplr_values.append(opt.param_groups[0]["lr"])
    opt.step()
    steplr.step()

cosine = {
    "warmup": {"args": [4e-3, 1e-6, 3, 4, 1, 0.0, -1], "values": cosine_scheduler(4e-3, 1e-6, 3, 4, 1).tolist()},
    "warmup_steps": {"args": [1e-3, 1e-5, 2, 5, 1, 1e-6, 3],
                     "values": cosine_scheduler(1e-3, 1e-5, 2, 5, 1, 1e-6, 3).tolist()},
    "plain": {"args": [0.04, 0.4, 2, 3, 0, 0.0, -1], "values": cosine_scheduler(0.04, 0.4, 2, 3).tolist()},
}

# clip_grad_norm_ on the first step's gradients (float32), max_norm 1.0, for norms 2 and inf.
clip = {}
for norm_type, key in [(2.0, "l2"), (float("inf"), "inf"), (1.0, "l1")]:
    ps = [init[n].clone().float().requires_grad_(True) for n, _ in SHAPES]
    for p, (n, _) in zip(ps, SHAPES):
        p.grad = grads[0][n].float().clone()
    total = torch.nn.utils.clip_grad_norm_(ps, max_norm=1.0, norm_type=norm_type)
    clip[key] = {"norm_type": "inf" if math.isinf(norm_type) else norm_type, "total": float(total),
                 "grads": {n: flat(p.grad) for p, (n, _) in zip(ps, SHAPES)}}

fixture = {
    "generator": "tools/gen_optim_fixture.py, torch " + torch.__version__,
    "steps": STEPS,
    "schedule": {"num_step": NUM_STEP, "epochs": EPOCHS, "warmup_epochs": WARMUP_EPOCHS},
    "weight_decay": WEIGHT_DECAY,
    "shapes": {n: s for n, s in SHAPES},
    "order": [n for n, _ in SHAPES],
    "init": {n: flat(init[n]) for n, _ in SHAPES},
    "grads": [{n: flat(g[n]) for n, _ in SHAPES} for g in grads],
    "runs": runs,
    "lambda_factors": lambda_factors,
    "nowarmup_factors": nowarmup_factors,
    "steplr": steplr_values,
    "cosine_scheduler": cosine,
    "clip": clip,
}

path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "fixtures", "optim_reference.json")
with open(path, "w") as fh:
    json.dump(fixture, fh, separators=(",", ":"))
print("wrote", os.path.normpath(path), os.path.getsize(path), "bytes")
