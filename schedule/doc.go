// Package schedule computes the noise schedules of denoising diffusion
// probabilistic models and the closed forms that follow from them, in
// float64 with no dependencies beyond the standard library.
//
// Notation follows Ho et al. 2020 ("Denoising Diffusion Probabilistic
// Models") and Nichol & Dhariwal 2021 ("Improved Denoising Diffusion
// Probabilistic Models"), with one difference: timesteps are 0-indexed,
// t = 0..T-1, as in diffusers and improved-diffusion's code. Index t here is
// the paper's step t+1: x_t below is the paper's x_{t+1}, and "x_{t-1}" at
// t = 0 is the data x_0.
//
// The forward process adds Gaussian noise with variances beta_t:
//
//	q(x_t | x_{t-1}) = N(sqrt(1 - beta_t) x_{t-1}, beta_t I)          (Ho Eq. 2)
//	q(x_t | x_0)     = N(sqrt(alphabar_t) x_0, (1 - alphabar_t) I)      (Ho Eq. 4)
//
// with alpha_t = 1 - beta_t and alphabar_t = prod_{s<=t} alpha_s. The
// posterior of one reverse step is Gaussian too:
//
//	q(x_{t-1} | x_t, x_0) = N(mutilde_t, betatilde_t I)                (Ho Eq. 6, 7)
//	mutilde_t   = coef1_t x_0 + coef2_t x_t
//	coef1_t     = beta_t sqrt(alphabar_{t-1}) / (1 - alphabar_t)
//	coef2_t     = (1 - alphabar_{t-1}) sqrt(alpha_t) / (1 - alphabar_t)
//	betatilde_t = beta_t (1 - alphabar_{t-1}) / (1 - alphabar_t)
//
// with alphabar_{-1} = 1. A Schedule holds these tables; Respace derives a
// shorter schedule over a subsequence of timesteps whose betas are
// recomputed from alphabar so that its forward marginals are the original
// ones (Nichol & Dhariwal 2021, Sec. 4), keeping the map back to the
// original timesteps that the network was trained on.
//
// Slices held by a Schedule are shared, not copied: callers must treat them
// as read-only. Functions never modify their inputs.
package schedule
