// Package weights reads and writes model weights: safetensors files, Hugging
// Face diffusers folders, ddpm model files and training checkpoints, and the
// model embedded in the binary.
//
// # Safetensors
//
// A safetensors file (https://github.com/huggingface/safetensors) is an
// 8-byte little-endian header length N, N bytes of JSON mapping each tensor
// name to {"dtype", "shape", "data_offsets": [begin, end]} plus an optional
// "__metadata__" object of string values, then the byte buffer the offsets
// index. Read converts F32, F16, BF16, F64 and the integer and BOOL types to
// float32; Write always writes F32. The reader validates everything before it
// allocates: a header over MaxHeaderLen or past the end of the file, bad JSON,
// duplicate names, an unknown dtype, offsets that disagree with the shape, that
// overlap, leave holes or run past the buffer are errors wrapping ErrFormat,
// and no input makes it allocate more than the file's own size (times 4 for
// 1-byte types widened to float32).
//
// # Model files and checkpoints
//
// A ddpm model file is one safetensors file whose tensors carry diffusers
// UNet2DModel parameter names and whose metadata holds the model's
// configuration: MetaUNetConfig (the diffusers config.json), MetaDiffusionConfig
// (package diffusion's JSON, opaque here) and optionally MetaClassNames (a JSON
// array of strings). A checkpoint is a model file (the EMA weights under the
// plain names, so it loads as a model) plus tensors under the prefixes
// PrefixRaw, PrefixAdamM and PrefixAdamV and the MetaTrainState metadata
// (opaque JSON). Open accepts any of these and diffusers folders alike.
//
// Files are written atomically by WriteFileAtomic: a temporary file in the
// same directory is written, synced, and renamed over the target, so a crash
// at any point leaves either the old file or the new one.
package weights
