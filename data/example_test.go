package data_test

import (
	"context"
	"fmt"

	"github.com/ddpm-go/ddpm/data"
)

// Example loads the MNIST training set padded to 32x32 and draws one
// shuffled batch.
func Example() {
	ds, err := data.Open(context.Background(), "mnist", data.Options{Size: 32, Resize: data.ResizePad})
	if err != nil {
		fmt.Println(err)
		return
	}
	l, err := data.NewLoader(ds, 16, 1, data.LoaderOptions{})
	if err != nil {
		fmt.Println(err)
		return
	}
	x, y, err := l.Next(context.Background())
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println(ds.Len(), x.N, x.C, x.H, x.W, len(y))
	// Output: 60000 16 1 32 32 16
}
