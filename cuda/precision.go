package cuda

import (
	"fmt"
	"strings"

	"github.com/ddpm-go/ddpm/kernels"
)

// Precision is the arithmetic of the GEMMs and convolutions (the tensor
// core work). Every other op, and every buffer, is float32 in all modes:
// activations, gradients and weights stay fp32 in memory, so the 16-bit
// modes save compute time, not memory.
type Precision int

const (
	// TF32 (the default): inputs rounded to TF32 (10 mantissa bits) on
	// the tensor cores, float32 accumulation; unit roundoff 2^-11.
	TF32 Precision = iota
	// FP32: strict IEEE float32 (CUBLAS_PEDANTIC_MATH, CUDNN_FMA_MATH, and
	// no FFT or Winograd convolution algorithms).
	FP32
	// BF16: inputs rounded to bfloat16 (7 mantissa bits, fp32's range)
	// inside cuBLAS (cublasGemmEx with CUBLAS_COMPUTE_32F_FAST_16BF on
	// float32 matrices), float32 accumulation; unit roundoff 2^-8.
	// cuDNN's convolution API cannot down-convert float32 to bfloat16, so
	// the convolutions run as im2col + those GEMMs.
	BF16
	// FP16: inputs rounded to IEEE half (10 mantissa bits, max 65504)
	// inside cuBLAS (CUBLAS_COMPUTE_32F_FAST_16F) and cuDNN
	// (CUDNN_TENSOR_OP_MATH_ALLOW_CONVERSION), float32 accumulation; unit
	// roundoff 2^-11 but a narrow range: train with loss scaling
	// (train.Options.LossScale).
	FP16
)

var precisionNames = [...]string{TF32: "tf32", FP32: "fp32", BF16: "bf16", FP16: "fp16"}

// String is the name ParsePrecision accepts.
func (p Precision) String() string {
	if p < 0 || int(p) >= len(precisionNames) {
		return fmt.Sprintf("Precision(%d)", int(p))
	}
	return precisionNames[p]
}

// UnitRoundoff is the relative rounding error of one GEMM input in this
// mode (2^-24 for FP32): tests scale their tolerances by it.
func (p Precision) UnitRoundoff() float64 {
	switch p {
	case FP32:
		return 0x1p-24
	case BF16:
		return 0x1p-8
	}
	return 0x1p-11
}

// ParsePrecision parses a --precision value (Options.Precision): "" and
// "tf32" are TF32; "fp32", "bf16", "fp16". It is the one parser of the
// flag for every command.
func ParsePrecision(s string) (Precision, error) {
	switch strings.ToLower(strings.TrimSpace(s)) {
	case "", "tf32":
		return TF32, nil
	case "fp32":
		return FP32, nil
	case "bf16":
		return BF16, nil
	case "fp16":
		return FP16, nil
	}
	return 0, fmt.Errorf("cuda: Options.Precision = %q: allowed are fp32, tf32, bf16, fp16", s)
}

// PrecisionFlagHelp is the --precision flag's help text, shared by the
// commands.
const PrecisionFlagHelp = "arithmetic of GEMMs and convolutions: fp32, tf32 (GPU default), bf16 or fp16 " +
	"(16-bit compute with fp32 storage and accumulation; fp16 training uses dynamic loss scaling). " +
	"The CPU computes in fp32, or with bf16 its convolutions for inference on CPUs with AVX512_BF16 or AMX; it refuses fp16"

// CPUPrecision checks a --precision value for a command that runs on the
// CPU and applies it to opts: fp32 and the default pass silently, an
// explicit tf32 passes with a note for the log, bf16 sets opts.BF16
// (bf16 convolutions, for inference only: opts.ConstWeights must be set,
// and the CPU must have AVX512_BF16 or AMX-BF16), and fp16 is an error.
func CPUPrecision(s string, opts *kernels.CPUOptions) (note string, err error) {
	p, err := ParsePrecision(s)
	if err != nil {
		return "", err
	}
	switch p {
	case FP16:
		return "", fmt.Errorf("--precision fp16: not supported on the CPU backend (use bf16 for inference, fp32, or --device cuda)")
	case BF16:
		if !opts.ConstWeights {
			return "", fmt.Errorf("--precision bf16: on the CPU it is for inference (sampling, serving, bench without --train); training computes in fp32")
		}
		if err := kernels.BF16Supported(); err != nil {
			return "", fmt.Errorf("--precision bf16: %v; use --precision fp32", err)
		}
		opts.BF16 = true
	case TF32:
		if strings.TrimSpace(s) != "" {
			return "--precision tf32 applies to the GPU only: the CPU computes in fp32", nil
		}
	}
	return "", nil
}
