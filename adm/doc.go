// Package adm builds OpenAI's ADM networks ("ablated diffusion model",
// Dhariwal & Nichol 2021, "Diffusion Models Beat GANs on Image Synthesis";
// code: openai/guided-diffusion, guided_diffusion/unet.py) on the
// project's engine (package nn): UNetModel, the diffusion model;
// SuperResModel, the upsamplers, whose input is the noisy image
// concatenated with the bilinearly upsampled low-resolution image; and
// EncoderUNetModel, the noisy classifiers used for classifier guidance,
// with their adaptive, attention, spatial and spatial_v2 pooling heads.
//
// Every flag of the repository's scripts is supported (class_cond,
// learn_sigma, channel_mult, attention_resolutions, num_heads,
// num_head_channels, num_heads_upsample, use_scale_shift_norm,
// resblock_updown, use_new_attention_order, dropout, use_fp16): Config
// holds them under the scripts' names, parsed from an args.json, a JSON
// config or the flag string the README prints, and Preset knows the
// flags of every released checkpoint by its file name. Parameters carry
// the state-dict keys of the PyTorch modules, so released .pt files load
// directly (LoadCheckpoint; float16 weights are widened to float32, and
// the whole network runs in float32 whatever use_fp16 says).
//
// Timesteps are the training schedule's, 0-indexed, and may be real
// (the sinusoidal embedding is defined for any t). ClassifierGradient
// is the gradient d/dx log p(y | x_t, t) of classifier guidance.
//
// It also builds GLIDE's text-conditional networks (Nichol et al. 2022,
// "GLIDE: Towards Photorealistic Image Generation and Editing with
// Text-Guided Diffusion Models"; code: openai/glide-text2im,
// text2im_model.py): Text2ImUNet, InpaintText2ImUNet and the
// super-resolution variants, from the flags of its model_creation.py
// (TextConfig) and the presets base, base_inpaint, upsample and
// upsample_inpaint. They take a prompt's tokens (Tokenize, package
// tokenizer) through PredictText or WithText. Like every other network
// here they run on the CPU and the GPU backends.
//
// The tests reproduce the outputs of OpenAI's own code on the shared
// openai-small fixtures (a UNet and a classifier built, saved and run by
// guided-diffusion, and GLIDE's Text2ImUNet and InpaintText2ImUNet built
// and run by glide-text2im).
package adm
