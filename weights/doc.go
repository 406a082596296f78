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
// # Models from the Hugging Face Hub
//
// Open also takes a Hub model id, "org/name" or "org/name@revision" (a
// branch, tag or 40-hex commit), when no local file or folder has that
// name (ParseHubID states the rules). ResolveHub and OpenHub do the same
// explicitly, with a context and HubOptions. Ids resolve through the cache
// huggingface_hub keeps (HubCacheDir: $HF_HUB_CACHE, else $HF_HOME/hub,
// else $XDG_CACHE_HOME/huggingface/hub, else ~/.cache/huggingface/hub), in
// its layout: models--org--name/refs/<revision> holds a commit hash,
// snapshots/<commit>/<path> are relative symlinks to ../../blobs/<etag>.
// So a model diffusers downloaded loads offline, and one downloaded here
// serves diffusers. A complete cached copy is used without any request;
// otherwise the needed files (a pipeline's model_index.json,
// unet/config.json, unet/diffusion_pytorch_model.safetensors or its .fp16
// variant and scheduler/scheduler_config.json; a model repository's
// config.json and weights) are downloaded from $HF_ENDPOINT with $HF_TOKEN
// (or the token file) as bearer token: resumably into
// blobs/<etag>.incomplete, checked against the etag (sha256 for LFS files,
// the git blob sha1 for others) before the rename into blobs/. With
// $HF_HUB_OFFLINE=1 only the cache is read. Errors wrap ErrHubNotFound,
// ErrHubAccess (gated or private), ErrHubNotCached, ErrHubChecksum or
// ErrHubUnsupported (only PyTorch .bin weights).
//
// Files are written atomically by WriteFileAtomic: a temporary file in the
// same directory is written, synced, and renamed over the target, so a crash
// at any point leaves either the old file or the new one.
package weights
