package main

import (
	"context"
	"flag"
	"fmt"
	"io"

	"github.com/ddpm-go/ddpm/cuda"
	"github.com/ddpm-go/ddpm/pipeline"
)

// precisionFlag adds --precision to fs: the GPU arithmetic of GEMMs and
// convolutions, parsed once by cuda.ParsePrecision (through
// cuda.Options.Precision); on the CPU, bf16 and fp16 are refused and tf32
// is noted as ignored (cuda.CPUPrecision).
func precisionFlag(fs *flag.FlagSet) *string {
	return fs.String("precision", "", precisionHelp)
}

// precisionHelp is the --precision flag's help text.
const precisionHelp = cuda.PrecisionFlagHelp

// checkPrecision turns a bad --precision into a usage error.
func checkPrecision(s string) error {
	if _, err := cuda.ParsePrecision(s); err != nil {
		return usageError{fmt.Sprintf("--precision %q: allowed are fp32, tf32, bf16, fp16", s)}
	}
	return nil
}

// openPipelineGPU is openPipeline with --precision, passed through
// pipeline.Options.GPU.
func openPipelineGPU(ctx context.Context, model, device, precision string, log io.Writer) (*pipeline.Pipeline, error) {
	if _, err := cuda.ParseDevice(device); err != nil {
		return nil, usageError{err.Error()}
	}
	if err := checkPrecision(precision); err != nil {
		return nil, err
	}
	return pipeline.Open(ctx, model, pipeline.Options{Device: device, GPU: cuda.Options{Precision: precision},
		Logf: func(f string, a ...any) { fmt.Fprintf(log, f+"\n", a...) }})
}
