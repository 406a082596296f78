// Package unet is diffusers' UNet2DModel (the noise-prediction network of
// Ho et al. 2020, "Denoising Diffusion Probabilistic Models", and of
// improved DDPM / DDIM) as a Gorgonia expression graph whose ops run on
// package kernels.
//
// The architecture follows diffusers 0.21: a sinusoidal timestep
// embedding (get_timestep_embedding with flip_sin_to_cos and freq_shift)
// through TimestepEmbedding (linear, SiLU, linear), plus an optional class
// embedding; conv_in; down blocks of ResnetBlock2D (GroupNorm+SiLU, 3x3
// conv, + time projection, GroupNorm+SiLU, dropout, 3x3 conv, + 1x1
// shortcut when channels change) with optional self-attention (GroupNorm,
// q/k/v projections, softmax(q k^T / sqrt(d)) v per head, output
// projection, residual) and a stride-2 Downsample2D; a mid block
// (ResNet, attention, ResNet); up blocks of layers_per_block+1 ResNet
// blocks over the concatenated skip connections, nearest-2x Upsample2D
// and conv; then GroupNorm+SiLU and conv_out. Parameter names are the
// diffusers state_dict keys, so diffusers folders load directly (Load).
//
// Model implements diffusion.Model (Predict) and train.Network (Step:
// forward, an external loss function, backward in one TapeMachine run).
// Graphs are built once per input shape and reused. Every op also
// implements gexec.Op, so Model.Graph can be handed to package gexec to
// run on a GPU.
package unet
