package mnistclf_test

import (
	"fmt"

	"github.com/ddpm-go/ddpm/diffusion"
	"github.com/ddpm-go/ddpm/quality/mnistclf"
)

// ExampleClassifier_Score scores a batch of images that were all meant to
// show the digit 1: here a vertical bar, drawn in the diffusion convention
// (background −1, ink +1) at the 32×32 sample size.
func ExampleClassifier_Score() {
	c, err := mnistclf.Pretrained()
	if err != nil {
		fmt.Println(err)
		return
	}
	b := diffusion.NewBatch(1, 1, 32, 32)
	for i := range b.Data {
		b.Data[i] = -1
	}
	for y := 8; y < 24; y++ {
		for x := 15; x < 17; x++ {
			b.Data[y*32+x] = 1
		}
	}
	rep, err := c.Score(b, []int{1})
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Printf("%d of %d read as intended\n", rep.Total.Correct, rep.Total.N)
	// Output: 1 of 1 read as intended
}
