package cuda

import _ "embed"

// The kernels are CUDA C compiled to PTX by Debian's clang-16 (no CUDA SDK
// needed); the driver JIT-compiles the sm_80 PTX for the GPU it runs on
// (sm_90 on H100/H200). TestPTXUpToDate fails when the committed PTX is
// stale.
//
//go:generate clang-16 -x cuda --cuda-device-only --cuda-gpu-arch=sm_80 -nocudainc -nocudalib -O3 -S kernels/ops.cu -o kernels/ops.ptx

// opsPTX is kernels/ops.ptx, the module every Device loads.
//
//go:embed kernels/ops.ptx
var opsPTX string

// ptxClangArgs are the go:generate flags, shared with the staleness test.
var ptxClangArgs = []string{"-x", "cuda", "--cuda-device-only", "--cuda-gpu-arch=sm_80",
	"-nocudainc", "-nocudalib", "-O3", "-S"}
