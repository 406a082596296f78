// Package gexec runs a Gorgonia expression graph node by node on any
// kernels.Ops backend: kernels.CPU, or cuda.Device on a GPU. It is the
// project's one executor: the models are Gorgonia graphs of custom ops
// (package nn), and every device runs them through here.
//
// Ops implement Op[B] for the backend's buffer type B: Exec queues the
// op's kernels.Ops calls on the node's buffers, with a Ctx for scratch
// and saved buffers (a forward op's statistics that its backward op
// reads). Because ops are generic over B, each op's arithmetic is written
// once, in kernels.Ops, and no op list exists twice.
//
// Grad adds gradient nodes to a graph by reverse-mode differentiation
// through each op's SymDiff (Gorgonia's SDOp interface), summing the
// contributions of values used more than once with its own AddN op, so
// gradient graphs hold only ops that implement Op[B].
//
// Compile takes the nodes to compute (forward outputs and gradient nodes)
// and plans them:
//
//   - order: every node the outputs depend on, children first;
//   - leaves are inputs (SetInput, or Bind to a caller-owned buffer such
//     as device-resident parameters); constants are uploaded once;
//   - buffers by liveness: each value's buffer returns to a per-size free
//     list after its last reader, so a deep network needs a few buffers
//     per distinct size rather than one per node (Stats reports both);
//     inputs and outputs keep their own, and outputs may be bound to
//     caller buffers (gradients straight into one flat buffer). All
//     buffers are allocated at Compile: Run allocates nothing in steady
//     state.
//
// Run queues every step and waits once at the end; Queue does not wait,
// so an optimiser step can follow on the device before the one wait.
// Options.HostFallback runs nodes that are not Op[B] (Gorgonia's own ops)
// through their Gorgonia Do on downloaded values, for tests; otherwise
// Compile fails listing every such node.
//
// The tests check outputs and Grad's gradients against closed forms on
// kernels.CPU and on cuda.Device (or its CPU emulator).
package gexec
