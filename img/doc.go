// Package img converts between diffusion batches and images: a batch
// (N, C, H, W) of float32 in [-1, 1] becomes 8-bit images (u = round((x+1)·127.5),
// clamped to [0, 255]), a grid PNG or one PNG per image, and an image file
// becomes a batch (x = u/127.5 − 1) after a resize and center crop to the
// model size.
//
// Conventions:
//   - C = 1 is grayscale (*image.Gray), C = 3 is RGB (*image.RGBA, opaque).
//   - Inputs are never modified; every function allocates its result.
//   - PNG bytes are deterministic: the same batch and options give the same
//     bytes (the encoder settings are fixed and there is no metadata).
//   - Masks for inpainting: white (luma ≥ 128) means KEEP, that pixel is
//     known and copied from the init image; black means GENERATE. A mask
//     is returned as a (1, 1, H, W) batch of exact 1s (keep) and 0s (generate).
//   - Untrusted image bytes are size-checked from their header before the
//     pixels are decoded (MaxPixels).
package img
