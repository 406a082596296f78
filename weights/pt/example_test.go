package pt_test

import (
	"fmt"
	"log"

	"github.com/ddpm-go/ddpm/weights/pt"
)

// Read a state dict saved with torch.save: tensors come back as float32,
// views (here slices and a transpose of one storage) already gathered.
func ExampleRead() {
	tensors, err := pt.Read("testdata/views.pt")
	if err != nil {
		log.Fatal(err)
	}
	t := tensors["cols"] // base[:, 2:5] of base = arange(24).reshape(4, 6)
	fmt.Println(t.DType, t.Shape, t.Data[:6])
	fmt.Println(tensors["t"].Shape, tensors["t"].Data[:4])
	// Output:
	// F32 [4 3] [2 3 4 8 9 10]
	// [6 4] [0 6 12 18]
}

// Open lists a checkpoint's tensors without reading their data.
func ExampleOpenFile() {
	f, err := pt.OpenFile("testdata/dtypes.pt")
	if err != nil {
		log.Fatal(err)
	}
	defer f.Close()
	for _, ti := range f.Tensors[:4] {
		fmt.Println(ti.Name, ti.DType, ti.Shape)
	}
	ti, _ := f.Info("bn.num_batches_tracked")
	fmt.Println(ti.Name, ti.DType, ti.IsFloat())
	// Output:
	// f32 F32 [2 3]
	// f32_scalar F32 []
	// f32_empty F32 [0 3]
	// f16 F16 [2 5]
	// bn.num_batches_tracked I64 false
}
