package npy_test

import (
	"bytes"
	"fmt"

	"github.com/ddpm-go/ddpm/npy"
)

func Example() {
	var buf bytes.Buffer
	// A (2, 3) float32 batch, as np.save would write it.
	if err := npy.WriteFloat32(&buf, []int{2, 3}, []float32{0, 1, 2, 3, 4, 5}); err != nil {
		panic(err)
	}
	a, err := npy.Read(&buf)
	if err != nil {
		panic(err)
	}
	fmt.Println(a.DType, a.Shape, a.Float32s())
	// Output: <f4 [2 3] [0 1 2 3 4 5]
}
