// bench.js: ONNX Runtime's CPU provider on a UNet exported by export.py,
// timed as `ddpm bench` times ddpm: the median of --iters forward passes
// after --warmup, printed as one JSON line with the same keys.
//
//   node bench/ort/bench.js MODEL.onnx --batch N --channels C --size S
//        [--iters K] [--warmup W] [--threads T] [--profile PREFIX]
//
// onnxruntime-node is looked up from NODE_PATH (bench/ort/run.sh installs
// it with npm install --ignore-scripts onnxruntime-node@1.20.1: the CPU
// library ships in the package; the install script only fetches GPU
// binaries).
"use strict";
const ort = require("onnxruntime-node");

function parse(argv) {
  const a = { batch: 0, channels: 3, size: 32, iters: 10, warmup: 2, threads: 2, profile: "" };
  a.model = argv[0];
  for (let i = 1; i < argv.length; i += 2) {
    const k = argv[i].replace(/^--/, "");
    if (!(k in a)) throw new Error(`unknown flag --${k}: allowed are --batch --channels --size --iters --warmup --threads --profile`);
    a[k] = k === "profile" ? argv[i + 1] : Number(argv[i + 1]);
  }
  if (!a.model || !(a.batch > 0)) throw new Error("usage: bench.js MODEL.onnx --batch N [--channels C --size S --iters K --warmup W --threads T]");
  return a;
}

function randn(n) {
  const out = new Float32Array(n);
  for (let i = 0; i < n; i++) {
    const u = 1 - Math.random(), v = Math.random();
    out[i] = Math.sqrt(-2 * Math.log(u)) * Math.cos(2 * Math.PI * v);
  }
  return out;
}

async function main() {
  const a = parse(process.argv.slice(2));
  const opts = {
    executionProviders: ["cpu"], graphOptimizationLevel: "all",
    intraOpNumThreads: a.threads, interOpNumThreads: 1, executionMode: "sequential",
  };
  if (a.profile) Object.assign(opts, { enableProfiling: true, profileFilePrefix: a.profile });
  const s = await ort.InferenceSession.create(a.model, opts);
  const x = new ort.Tensor("float32", randn(a.batch * a.channels * a.size * a.size), [a.batch, a.channels, a.size, a.size]);
  const t = new ort.Tensor("int64", BigInt64Array.from({ length: a.batch }, () => 500n), [a.batch]);
  const feeds = { x, t };
  for (let i = 0; i < a.warmup; i++) await s.run(feeds);
  const ms = [];
  for (let i = 0; i < a.iters; i++) {
    const t0 = process.hrtime.bigint();
    await s.run(feeds);
    ms.push(Number(process.hrtime.bigint() - t0) / 1e6);
  }
  if (a.profile) await s.release(); // the node binding writes the profile when the session is released
  ms.sort((p, q) => p - q);
  const med = ms.length % 2 ? ms[(ms.length - 1) / 2] : (ms[ms.length / 2 - 1] + ms[ms.length / 2]) / 2;
  console.log(JSON.stringify({ device: `cpu (onnxruntime-node 1.20.1, ${a.threads} threads)`, batch: a.batch,
    forward_ms_median: med, images_per_sec: a.batch * 1e3 / med }));
}

main().catch((e) => { console.error(`bench.js: ${e.message}`); process.exit(1); });
