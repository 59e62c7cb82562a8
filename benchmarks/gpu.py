"""The flow on a GPU (docs/performance.md, GPU): seconds of one epoch on 256 k synthetic latents at batch 256 and
4,096 (the second of three), and 10,000 conditional latents. Run on a machine with CUDA, alone:

    python -m benchmarks.gpu [results.json]
"""
import json
import sys
import time

import torch

from benchmarks.run import SCHEMA, fit_epochs, flow_params, new_model, synthetic
from plugen_core.io import write_json


def main() -> None:
    if not torch.cuda.is_available():
        sys.exit("benchmarks.gpu: no CUDA device here")
    out = {"device": torch.cuda.get_device_name(0), "torch": torch.__version__}
    p = flow_params()
    w, context = synthetic(256_000, 32)
    for batch in (256, 4096):
        q = {**p, "batch_size": batch}
        model = new_model(context, 32, q).cuda()
        history = fit_epochs(model, w, context, q, 3, torch.Generator().manual_seed(0))
        out[f"epoch_s.batch{batch}"] = history[-1]["elapsed_s"] - history[-2]["elapsed_s"]
    model.eval()
    targets = SCHEMA.decode(synthetic(20_000, 32, seed=1)[1][10_000:].numpy())
    for _ in range(2):  # the second: CUDA and the kernels warmed up
        torch.cuda.synchronize()
        start = time.perf_counter()
        model.sample_latents(targets, generator=torch.Generator().manual_seed(0))
        torch.cuda.synchronize()
        out["generate_10k_ms"] = (time.perf_counter() - start) * 1000
    print(json.dumps(out))
    if len(sys.argv) > 1:
        write_json(out, sys.argv[1])


if __name__ == "__main__":
    main()
