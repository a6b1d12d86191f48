#!/usr/bin/env bash
# GPU check of napari-tiltgen in ONE call (< 8 minutes on a machine with a CUDA GPU).
#
#   bash benchmarks/gpu_check.sh              # on a GPU machine, from the repository root
#   bash benchmarks/gpu_check.sh --dry-run    # anywhere: CPU, tiny sizes (checks the script runs)
#   GPU_CHECK_DEVICE=cpu bash benchmarks/gpu_check.sh   # the same as --dry-run
#
# Parts, each limited by `timeout` so that one failing or hanging part does not lose the others:
#   0 setup     nvidia-smi; pip install -e . pytest when missing (torch kept; no napari needed)
#   1 tests     pytest -m gpu (the gpu-marked tests)
#   2 sirt      SIRT 512^3 (61 tilts, 20 iterations) on CUDA: ours vs ASTRA CUDA (SIRT_CUDA)
#   3 wbp       WBP 1024^3 (61 tilts) on CUDA, in memory and out of core
#   4 train     interpolation and inpainting networks: training steps/s (random batches)
#   5 inr       INR fit steps/s with bf16 autocast vs fp32
# Results: $OUT/performance_gpu.md (or ./performance_gpu.md without $OUT), also printed, with the
# device's name. Sizes shrink to tiny ones in the dry run. Exit status 0 even when a part fails
# (each part's status is in the table); 2 when the results file cannot be written.
set -u
cd "$(dirname "$0")/.."
. benchmarks/gpu_common.sh
gpu_init GPU_CHECK_DEVICE . performance_gpu.md gpu_check_logs "GPU check" "$@"
export GPU_CHECK_DEVICE="$DEVICE"
if [ "$DEVICE" = cpu ]; then
  export SIRT_N=32 WBP_N=32 TRAIN_PX=32 INR_N=16 STEPS=3
  LIMIT_SETUP=240 LIMIT_TESTS=300 LIMIT_PART=300
else
  export SIRT_N="${SIRT_N:-512}" WBP_N="${WBP_N:-1024}" TRAIN_PX="${TRAIN_PX:-128}" \
         INR_N="${INR_N:-128}" STEPS="${STEPS:-20}"
  LIMIT_SETUP=100 LIMIT_TESTS=60 LIMIT_PART=60  # + sirt/wbp 90 each: 460 s in all
fi

# 0 setup: the package and its test extra; torch is kept (never replaced by a CPU wheel)
run_part setup "$LIMIT_SETUP" bash -c '
  '"$PY"' -c "import torch; print(\"RESULT torch\", torch.__version__, \"cuda\", torch.version.cuda, \"available\", torch.cuda.is_available(), torch.cuda.get_device_name(0) if torch.cuda.is_available() else \"\")" || '"$PY"' -m pip install -q torch
  '"$PY"' -c "import napari_tiltgen, distributed, pytest" 2>/dev/null || '"$PY"' -m pip install -q -e . pytest
  '"$PY"' -c "import astra; print(\"RESULT astra\", astra.__version__, \"cuda\", astra.use_cuda())" || true'

# 1 the gpu-marked tests (on the CPU dry run they are deselected by the markers: say so)
if [ "$DEVICE" = cpu ]; then
  run_part tests "$LIMIT_TESTS" bash -c "$PY -m pytest -q -p no:xvfb -m gpu --collect-only \$(grep -l 'mark.gpu' tests/*.py) 2>&1 | tail -1 | sed 's/^/RESULT dry run, collected: /'"
else
  run_part tests "$LIMIT_TESTS" $PY -m pytest -q -p no:xvfb -m gpu $(grep -l "mark.gpu" tests/*.py)
fi

# 2 SIRT on CUDA: ours vs ASTRA CUDA
run_part sirt "$(( LIMIT_PART * 3 / 2 ))" $PY - <<'EOF'
import os, time, numpy as np, torch
from napari_tiltgen.recon.iterative import sirt
from napari_tiltgen.physics.projector import Projector
dev = os.environ["GPU_CHECK_DEVICE"]; n = int(os.environ["SIRT_N"]); it = 20
ang = np.linspace(-60, 60, 61)
vol = torch.zeros((n, n, n)); vol[n//4:3*n//4, n//3:2*n//3, n//4:n//2] = 1.0
p = Projector((n, n, n), ang, device=dev)
b = p.forward(vol.to(dev))
def sync():
    if dev.startswith("cuda"): torch.cuda.synchronize()
sync(); t = time.time(); x = sirt(p, b, iterations=it); sync(); ours = time.time() - t
err = float(torch.linalg.vector_norm(x.cpu() - vol) / torch.linalg.vector_norm(vol))
print(f"RESULT ours SIRT {n}^3 x 61 tilts, {it} it on {dev}: {ours:.2f} s (incl. operator build), rel. error {err:.3f}")
try:
    from napari_tiltgen.recon.api import reconstruct
    from napari_tiltgen.io.model import TiltSeries
    ts = TiltSeries(b.cpu().numpy(), tilt_angles=ang)
    t = time.time(); reconstruct(ts, "sirt", it, backend="astra", device=dev, show=False); astra_s = time.time() - t
    print(f"RESULT ASTRA {'CUDA' if dev.startswith('cuda') else 'CPU'}: {astra_s:.2f} s -> ours/ASTRA {ours/astra_s:.2f}x")
except Exception as exc:
    print(f"RESULT ASTRA not run: {type(exc).__name__}: {str(exc)[:120]}")
EOF

# 3 WBP 1024^3 on CUDA (in memory), and out of core (1 GiB budget) for the peak memory
run_part wbp "$(( LIMIT_PART * 3 / 2 ))" $PY - <<'EOF'
import os, time, tempfile, resource, numpy as np
from napari_tiltgen.io.model import TiltSeries
from napari_tiltgen.recon.api import reconstruct
from napari_tiltgen.recon.outofcore import reconstruct_to_file
dev = os.environ["GPU_CHECK_DEVICE"]; n = int(os.environ["WBP_N"])
rng = np.random.default_rng(0)
ts = TiltSeries(rng.random((61, n, n), dtype=np.float32), tilt_angles=np.linspace(-60, 60, 61))
t = time.time()
try:
    v = reconstruct(ts, "wbp", device=dev, show=False)
    print(f"RESULT WBP {n}^3 in memory on {dev}: {time.time()-t:.2f} s")
    del v
except Exception as exc:
    print(f"RESULT WBP in memory failed: {type(exc).__name__}: {str(exc)[:120]}")
with tempfile.TemporaryDirectory(dir=os.environ.get("OUT") or None) as d:
    t = time.time()
    r = reconstruct_to_file(ts, os.path.join(d, "v.mrc"), "wbp", memory_budget=1 << 30, device=dev)
    print(f"RESULT WBP {n}^3 out of core on {dev}: {time.time()-t:.2f} s, {len(r.slabs)} slabs; "
          f"process peak resident {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss/2**20:.2f} GiB")
EOF

# 4 training throughput of the two networks (random batches; forward + backward + Adam)
run_part train "$LIMIT_PART" $PY - <<'EOF'
import os, time, torch
from napari_tiltgen.nets.interpolation.network import TiltInterpNet
from napari_tiltgen.nets.inpainting.network import UNetPP
dev = torch.device(os.environ["GPU_CHECK_DEVICE"]); px = int(os.environ["TRAIN_PX"]); steps = int(os.environ["STEPS"])
bs = 16 if dev.type == "cuda" else 2
def bench(name, model, make, loss_of):
    model = model.to(dev); opt = torch.optim.Adam(model.parameters(), 1e-4)
    for i in range(steps + 2):
        if i == 2:
            if dev.type == "cuda": torch.cuda.synchronize()
            t = time.time()
        loss = loss_of(model, *make()); opt.zero_grad(); loss.backward(); opt.step()
    if dev.type == "cuda": torch.cuda.synchronize()
    s = (time.time() - t) / steps
    print(f"RESULT {name} batch {bs} x {px}^2: {1/s:.1f} steps/s ({bs/s:.0f} samples/s) on {dev}")
def interp_batch():
    a = torch.rand(bs, 1, px, px, device=dev); return a, torch.rand_like(a), torch.rand_like(a)
bench("interpolation", TiltInterpNet(), interp_batch,
      lambda m, a, b, y: (m(a, b, 0.5, 4.0)["image"] - y).abs().mean())
def inp_batch():
    x = torch.rand(bs, 2, px, px, device=dev); return x, torch.full((bs,), 30.0, device=dev), torch.rand(bs, 1, px, px, device=dev)
bench("inpainting G", UNetPP(), inp_batch, lambda m, x, w, y: (m(x, w)[:, :1] - y).abs().mean())
EOF

# 5 INR fit with bf16 autocast (CUDA) vs fp32
run_part inr "$LIMIT_PART" $PY - <<'EOF'
import os, time
from napari_tiltgen.fits.inr import fit_inr
from napari_tiltgen.simulate.phantoms import sphere_phantom
dev = os.environ["GPU_CHECK_DEVICE"]; n = int(os.environ["INR_N"]); steps = 10 * int(os.environ["STEPS"])
ts, _ = sphere_phantom(size=n, tilt_step=3.0)
for amp in (True, False):
    t = time.time()
    r = fit_inr(ts, steps=steps, device=dev, mixed_precision=amp, show=False, preview_every=0)
    s = time.time() - t
    print(f"RESULT INR {n}^3 {'bf16 autocast' if amp else 'fp32'} on {dev}: {steps/s:.1f} steps/s ({steps} steps, {s:.1f} s)")
EOF

echo >> "$REPORT"
echo "Total $(( $(date +%s) - T0 )) s. Logs: $LOGDIR/. Command: bash benchmarks/gpu_check.sh$([ "$DEVICE" = cpu ] && echo ' --dry-run')" >> "$REPORT"
cat "$REPORT"
exit 0
