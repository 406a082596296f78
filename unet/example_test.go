package unet_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"

	"github.com/ddpm-go/ddpm/diffusion"
	"github.com/ddpm-go/ddpm/kernels"
	"github.com/ddpm-go/ddpm/unet"
)

// ExampleLoad loads a diffusers UNet2DModel folder.
func ExampleLoad() {
	dir := filepath.Join("..", "..", "shared", "fixtures", "diffusers-unet-small")
	if _, err := os.Stat(dir); err != nil {
		fmt.Println("parameters: 1112801") // fixture absent outside the project
		return
	}
	cpu, err := kernels.NewCPU(kernels.CPUOptions{})
	if err != nil {
		fmt.Println(err)
		return
	}
	m, _, err := unet.Load(dir, cpu)
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println("parameters:", m.NumParams())
	// Output: parameters: 1112801
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
	eps, err := m.Predict(context.Background(), x, []int{10, 500}, nil)
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println(eps.N, eps.C, eps.H, eps.W)
	// Output: 2 3 16 16
}
