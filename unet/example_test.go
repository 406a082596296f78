package unet_test

import (
	"context"
	"fmt"

	"github.com/ddpm-go/ddpm/diffusion"
	"github.com/ddpm-go/ddpm/kernels"
	"github.com/ddpm-go/ddpm/unet"
	"github.com/ddpm-go/ddpm/weights"
)

// ExampleLoad loads the embedded default model (any --model source works:
// a diffusers folder, a ddpm model file or checkpoint, a Hub id) and reads
// its size and classes.
func ExampleLoad() {
	cpu, err := kernels.NewCPU(kernels.CPUOptions{})
	if err != nil {
		fmt.Println(err)
		return
	}
	m, src, err := unet.Load(weights.DefaultPath, cpu)
	if err != nil {
		fmt.Println(err)
		return
	}
	c := m.Config()
	fmt.Printf("%dx%dx%d images, %d classes: %v\n", c.InChannels, c.SampleSize, c.SampleSize, len(src.ClassNames), src.ClassNames[:3])
	// Output: 1x32x32 images, 10 classes: [0 1 2]
}

// ExampleModel_Predict predicts the noise in a batch of two 16x16 images
// with a small randomly initialised model.
func ExampleModel_Predict() {
	cpu, err := kernels.NewCPU(kernels.CPUOptions{})
	if err != nil {
		fmt.Println(err)
		return
	}
	cfg := unet.Config{SampleSize: 16, InChannels: 3, OutChannels: 3, TimeEmbeddingType: "positional",
		FlipSinToCos: true, LayersPerBlock: 1, MidBlockScaleFactor: 1, ActFn: "silu", NormNumGroups: 8,
		NormEps: 1e-5, ResnetTimeScaleShift: "default", BlockOutChannels: []int{16, 32},
		DownBlockTypes: []string{"DownBlock2D", "AttnDownBlock2D"}, UpBlockTypes: []string{"AttnUpBlock2D", "UpBlock2D"}}
	m, err := unet.New(cfg, cpu, 1)
	if err != nil {
		fmt.Println(err)
		return
	}
	x := diffusion.NewBatch(2, 3, 16, 16) // x_t
	eps, err := m.Predict(context.Background(), x, []float64{10, 500}, nil)
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println(eps.N, eps.C, eps.H, eps.W)
	// Output: 2 3 16 16
}
