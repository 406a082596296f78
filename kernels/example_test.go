package kernels_test

import (
	"fmt"

	"github.com/ddpm-go/ddpm/kernels"
)

// A forward and backward pass of Linear followed by SiLU on the CPU
// backend: outputs first, then inputs, then sizes; errors come from Sync.
func ExampleNewCPU() {
	cpu, err := kernels.NewCPU(kernels.CPUOptions{BLAS: kernels.BLASAuto, Threads: 2})
	if err != nil {
		panic(err)
	}
	var ops kernels.Ops[[]float32] = cpu // what a model codes against

	const m, in, out = 2, 3, 2
	x := []float32{1, 2, 3, -1, 0, 1} // (M, In)
	w := []float32{1, 0, 0, 0, 1, -1} // (Out, In)
	b := []float32{0, 0.5}            // (Out)
	h, y := ops.Alloc(m*out), ops.Alloc(m*out)
	ops.Linear(h, x, w, b, m, in, out)
	ops.SiLU(y, h, m*out)

	dy := []float32{1, 1, 1, 1}
	dh, dx, dw, db := ops.Alloc(m*out), ops.Alloc(m*in), ops.Alloc(out*in), ops.Alloc(out)
	ops.SiLUBackward(dh, dy, h, m*out)
	ops.LinearBackward(dx, dw, db, dh, x, w, m, in, out)
	if err := ops.Sync(); err != nil {
		panic(err)
	}
	fmt.Printf("h = %v\n", h)
	fmt.Printf("y = %.4f\n", y)
	fmt.Printf("db = %.4f\n", db)

	// Bad sizes are errors, not panics.
	ops.Linear(h, x, w, b, m, in, 5)
	fmt.Println(ops.Sync() != nil)
	// Output:
	// h = [1 -0.5 -1 -0.5]
	// y = [0.7311 -0.1888 -0.2689 -0.1888]
	// db = [1.0000 0.5201]
	// true
}

// An inference backend that runs its convolutions in bf16 where the CPU
// has bf16 dot products, and in fp32 (with Winograd kernels where faster)
// elsewhere.
func ExampleBF16Supported() {
	opts := kernels.CPUOptions{ConstWeights: true} // sampling: the weights never change
	if err := kernels.BF16Supported(); err == nil {
		opts.BF16 = true
	} else {
		fmt.Println("fp32:", err)
	}
	cpu, err := kernels.NewCPU(opts)
	if err != nil {
		panic(err)
	}
	fmt.Println(cpu.Name())
}
