// Package nn is the engine every model of ddpm runs on, on every device:
// layers as Gorgonia ops generic over the backend's buffer type B, a
// builder that declares a network's inputs, parameters and layers, and
// Net, which holds a network on one backend and runs it.
//
// A model is written once, as a BuildFunc that calls Builder methods
// (Conv, Linear, GroupNorm, Attention, ...) for one batch shape; package
// unet builds diffusers' UNet2DModel this way, package adm OpenAI's
// guided-diffusion networks. Each op's Exec is a few kernels.Ops[B] calls
// (so its arithmetic lives once per backend, in kernels.CPU and
// cuda.Device) and its SymDiff builds the backward ops, from which
// gexec.Grad differentiates whole graphs. Ops carry their dimensions
// explicitly (no Gorgonia Reshape: DESIGN.md fact 2).
//
// A few layers are a sequence of ops in graphs that take gradients and
// one fused op in forward-only graphs (Builder.Fused: Forward's, not
// TrainStep's or VJP's): NormConv (GroupNorm, SiLU, convolution, skip
// connection), NormTokens and LinearToMap (attention's norm and output
// projection without transposed copies). A fused op runs the backend's kernels.Fused method
// when it has one and the sequence otherwise, so models are still written
// once and every device runs every graph.
//
// Net[B] keeps the parameters in one flat buffer on the device (and the
// gradients, once trained, in another, laid out the same way, so an
// optimiser updates them with one call each), compiles one graph per
// shape and mode with gexec (the six most recently used are kept), and
// offers:
//
//   - Forward: the output for named inputs;
//   - TrainStep: forward, the diffusion loss kernel (kernels.Ops.
//     DiffusionLoss, fed by LossCoefRows), backward, gradients into the
//     flat buffer, queued without waiting so the optimiser follows on the
//     device; LossBuffers reads the loss where it is;
//   - VJP: the product of a seed with the Jacobian, for gradients with
//     respect to inputs (classifier guidance) and parameters.
//
// Randomness inside a graph (dropout) is counter-based from a State set
// per step, so a mask depends on the seed and an element's position in
// the global batch only, never on the device or the batch split.
package nn
