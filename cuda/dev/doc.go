// Package dev is the kernel lab of package cuda (in the manner of llm.c's
// dev/cuda): for the kernels where the choice matters, each numbered
// variant is validated against kernels.CPU on seeded random input and then
// timed at the DDPM CIFAR-10 UNet's shapes (batch 128):
//
//   - GroupNorm(+SiLU) forward and backward: variant 1 reads the group
//     from global memory in every pass; variant 2 (the default when a group
//     fits in 48 KiB) caches it in shared memory and reads it once.
//
//   - Conv2D forward and backward: im2col + GEMM with 64 MiB, 512 MiB (the
//     default) and 2 GiB of column workspace, i.e. a few large GEMMs or
//     many smaller ones.
//
//   - The whole network: a UNet2DModel (diffusers semantics and parameter
//     names) written directly on kernels.Ops, forward (checked against the
//     diffusers fixture to 1e-6 on CPU and GPU) and a training step (a
//     tape of backward closures, MSE, AdamW; gradients checked by finite
//     differences), so the backend can be timed on the ddpm-cifar10 UNet
//     (35,746,307 parameters) at batch 128: 50-step DDIM sampling and a
//     training step, beside bench/torch_gpu.py's PyTorch eager twin.
//
// Run on a GPU machine with
//
//	go test -c -o dev.test ./cuda/dev && ./dev.test -test.run Lab -test.bench Lab -test.benchtime 10x
//
// (bench/gpu-check.sh does). Without a GPU the validations run on the CPU
// emulator of package cudatest and the benchmarks skip.
package dev
