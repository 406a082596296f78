// Package gexec runs a Gorgonia expression graph node by node through any
// kernels.Ops backend: kernels.CPU, or cuda.Device on a GPU.
//
// Compile takes the nodes to compute (outputs of the forward pass, and for
// training the gradient nodes gorgonia.Grad added) and plans them:
//
//   - order: every node the outputs depend on, children first;
//   - lowering: leaves are inputs (SetInput, or Bind to a caller-owned
//     buffer such as device-resident parameters), constants are uploaded
//     once, Reshape is a view of its operand (no copy), same-shape + - ⊙,
//     neg and tensor ⊙ scalar-constant map to Ops calls, and custom ops
//     implementing Op (package unet's convolution, GroupNorm, attention,
//     ...) queue their own Ops calls through the handle-based Kernels
//     interface, which is not generic, so op types can implement it;
//   - buffers by liveness: each value's buffer returns to a per-size free
//     list after its last reader, so a deep network needs a few buffers per
//     distinct size rather than one per node (Stats reports both); inputs
//     and outputs keep their own. All buffers are allocated at Compile:
//     Run allocates nothing in steady state.
//
// Run queues every step and waits once at the end; with no host-fallback
// nodes there is no copy to or from the host inside a step. Options.
// HostFallback runs any other node through its Gorgonia Do on downloaded
// values (useful for tests and rare ops; Stats.Host counts them), else
// Compile fails listing every op it cannot lower.
//
// The tests check that the executor on kernels.CPU (and on cuda.Device,
// or its CPU emulator) gives the TapeMachine's outputs and gradients.
package gexec
