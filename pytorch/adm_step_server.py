"""adm's TestStepServer driven from Python: the Go side of pytorch/bench_adm.py
and pytorch/bench_glide.py, which time one sampling step of OpenAI's
architectures in their reference PyTorch code against ddpm's engine."""

import os
import subprocess


class GoSide:
    """adm's TestStepServer in its own process (GOMAXPROCS threads)."""

    def __init__(self, binary, tmp, nt):
        env = dict(os.environ, DDPM_ADM_BENCH=tmp, GOMAXPROCS=str(nt))
        self.p = subprocess.Popen([binary, "-test.run", "^TestStepServer$", "-test.timeout", "0"], env=env,
                                  stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd="adm")
        line = self.p.stdout.readline()
        if line.strip() != "ready":
            raise SystemExit(f"go side (GOMAXPROCS={nt}) did not start: {line!r}")

    def step(self, n):
        self.p.stdin.write(f"{n}\n")
        self.p.stdin.flush()
        f = self.p.stdout.readline().split()
        if len(f) != 4 or f[0] != "ms":
            raise SystemExit(f"go side: {f!r}")
        return float(f[1]), float(f[3])

    def close(self):
        self.p.stdin.close()
        self.p.wait()
