"""A stand-in trainer for the browser e2e's maximize phase: fast, contract-true (env vars,
metrics file, summary block), val_acc = f(LR) + per-seed noise; higher is better."""
import json
import os
import random
import time

LR = 0.1            # val_acc grows by 0.2 per unit of LR


def main():
    budget = float(os.environ.get("SIGMALOOP_TIME_BUDGET", "1"))
    seed = int(os.environ.get("SIGMALOOP_SEED", "0"))
    metrics = os.environ.get("SIGMALOOP_METRICS")
    noise = random.Random(seed).gauss(0.0, 0.001)
    t0 = time.time()
    steps = 10
    for step in range(steps):
        time.sleep(budget / steps)
        if metrics:
            with open(metrics, "a") as f:
                loss = 2.0 * (0.9 ** step) - LR + noise
                rec = {"step": step, "t": time.time() - t0, "frac": (step + 1) / steps, "loss": loss}
                f.write(json.dumps(rec) + "\n")
    print("---")
    print(f"val_acc:          {0.5 + 0.2 * LR + noise:.6f}")
    print(f"training_seconds: {time.time() - t0:.1f}")
    print(f"num_steps:        {steps}")


main()
