package img_test

import (
	"fmt"

	"github.com/ddpm-go/ddpm/diffusion"
	"github.com/ddpm-go/ddpm/img"
)

// ExampleGrid tiles four 28x28 gray samples two per row with 2 px padding.
func ExampleGrid() {
	b := diffusion.NewBatch(4, 1, 28, 28) // all zeros: mid gray
	g, err := img.Grid(b, img.GridOptions{NRow: 2, Padding: 2})
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println(g.Bounds().Dx(), g.Bounds().Dy(), img.ToUint8(0))
	// Output: 62 62 128
}
