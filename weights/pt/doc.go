// Package pt reads PyTorch checkpoints: the files torch.save writes for a
// model's state dict, such as OpenAI's released guided-diffusion and GLIDE
// weights (torch.save(model.state_dict(), "model.pt")).
//
// # Format
//
// Since PyTorch 1.6 a checkpoint is a zip archive: <name>/data.pkl is a
// pickle of the state dict (an OrderedDict of name -> tensor), in which each
// tensor is a call torch._utils._rebuild_tensor_v2(storage, offset, size,
// stride, requires_grad, hooks) and each storage a persistent id
// ('storage', torch.FloatStorage, key, location, numel) whose raw
// elements are the entry <name>/data/<key>. A <name>/byteorder record
// ("little" or "big", written since PyTorch 2.1) gives the byte order;
// without it the data are little-endian. The older format
// (_use_new_zipfile_serialization=False) is five pickles followed by the
// storages, each an 8-byte element count and the raw elements; Open reads
// it too. TorchScript archives and the tar format of PyTorch < 0.4 are
// refused with errors that say so.
//
// # Tensors
//
// Storages of float32, float16, bfloat16 and float64 give tensors that
// ReadAll returns as float32 weights.Tensor values (DType keeps the stored
// type, "F16" say). Integer and bool tensors (num_batches_tracked, index
// buffers) are listed in File.Tensors but returned only with
// IncludeIntegers. A tensor may view its storage at an offset with any
// strides (slices, transposes, tensors sharing one storage): the view is
// gathered into a new row-major tensor. Nested dicts are flattened with
// dotted names ({"model": {"w": t}} gives "model.w"); entries that are not
// tensors or dicts (ints, strings, None, lists) are listed in File.Skipped.
//
// # Safety
//
// A pickle is a program; this package never runs one. The pickle is first
// scanned opcode by opcode: only the opcodes a state dict needs are
// accepted, every length must fit in the bytes that remain, and every
// global must be one of collections.OrderedDict,
// torch._utils._rebuild_tensor_v2, torch._utils._rebuild_parameter and the
// torch.*Storage types (typed, and torch.UntypedStorage); any other global
// is refused with a *GlobalError naming it. Only then does
// github.com/nlpodyssey/gopickle unpickle it, with a class resolver that
// maps those globals to inert Go values; a runtime panic inside gopickle
// (it indexes its stack unchecked in a few opcodes, such as a DICT with an
// odd item count) becomes an error. Storage sizes must match their
// zip entries, views must lie inside their storages, shapes must not
// overflow, and no tensor may hold more elements than its storage.
//
// Memory is bounded: the pickle is at most MaxPickleLen bytes, and the
// scanner refuses one whose unpickling it estimates would allocate more
// than 512 MiB (about 50,000 tensors' worth); tensor data read from a file
// of N bytes is at most 4N bytes of float32 unless MaxBytes says
// otherwise, and Open reads no tensor data at all.
// Every error about the file's content wraps ErrFormat.
package pt
