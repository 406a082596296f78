package data_test

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"

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

// ExampleLoader_Restore saves a loader's position as JSON (as a training
// checkpoint would) and continues from it with the same batches.
func ExampleLoader_Restore() {
	pix := []uint8{0, 50, 100, 150, 200, 250} // six 1x1 gray images
	ds, err := data.NewImages(pix, 6, 1, 1, 1, nil, 0, nil, 0, data.ResizeNone)
	if err != nil {
		fmt.Println(err)
		return
	}
	ctx := context.Background()
	a, _ := data.NewLoader(ds, 4, 7, data.LoaderOptions{})
	a.Next(ctx)
	saved, _ := json.Marshal(a.State())
	want, _, _ := a.Next(ctx)

	var st data.LoaderState
	json.Unmarshal(saved, &st)
	b, _ := data.NewLoader(ds, 4, 0, data.LoaderOptions{})
	if err := b.Restore(st); err != nil {
		fmt.Println(err)
		return
	}
	got, _, _ := b.Next(ctx)
	fmt.Println(string(saved), slices.Equal(got.Data, want.Data))
	// Output: {"seed":7,"len":6,"batch":4,"epoch":0,"pos":4} true
}
