package train_test

import (
	"context"
	"fmt"
	"os"

	"github.com/ddpm-go/ddpm/data"
	"github.com/ddpm-go/ddpm/diffusion"
	"github.com/ddpm-go/ddpm/kernels"
	"github.com/ddpm-go/ddpm/train"
	"github.com/ddpm-go/ddpm/unet"
	"github.com/ddpm-go/ddpm/weights"
)

// ExampleTrainer trains a small class-conditional UNet on 8x8 images for a
// few steps on the CPU and reads the checkpoint back. The same code trains
// on a GPU with unet.NewOn[cuda.Ptr] and train.Trainer[cuda.Ptr].
func ExampleTrainer() {
	pix := make([]uint8, 32*8*8)
	labels := make([]uint8, 32)
	for i := range labels {
		labels[i] = uint8(i % 2)
		for j := 0; j < 64; j++ {
			if (j%8 < 4) == (labels[i] == 0) {
				pix[i*64+j] = 255 // the class is which half is bright
			}
		}
	}
	ds, err := data.NewImages(pix, 32, 1, 8, 8, labels, 2, []string{"left", "right"}, 0, data.ResizeNone)
	if err != nil {
		fmt.Println(err)
		return
	}
	classes, null := 3, 2 // two classes and the null class for guidance
	cfg := unet.Config{SampleSize: 8, InChannels: 1, OutChannels: 1, TimeEmbeddingType: "positional", FlipSinToCos: true,
		LayersPerBlock: 1, MidBlockScaleFactor: 1, DownsamplePadding: 1, ActFn: "silu", NormNumGroups: 4, NormEps: 1e-6,
		ResnetTimeScaleShift: "default", BlockOutChannels: []int{8, 8},
		DownBlockTypes: []string{"DownBlock2D", "AttnDownBlock2D"}, UpBlockTypes: []string{"AttnUpBlock2D", "UpBlock2D"},
		NumClassEmbeds: &classes, NullClass: &null}
	cpu, err := kernels.NewCPU(kernels.CPUOptions{})
	if err != nil {
		fmt.Println(err)
		return
	}
	net, err := unet.New(cfg, cpu, 1)
	if err != nil {
		fmt.Println(err)
		return
	}
	defer net.Close()
	d, err := diffusion.New(diffusion.DefaultConfig())
	if err != nil {
		fmt.Println(err)
		return
	}
	dir, err := os.MkdirTemp("", "ddpm-example")
	if err != nil {
		fmt.Println(err)
		return
	}
	defer os.RemoveAll(dir)
	o := train.DefaultOptions()
	o.Steps, o.Batch, o.WarmupSteps, o.LabelDropout = 20, 8, 5, 0.1
	tr := &train.Trainer[[]float32]{Options: o, Net: net, Diffusion: d, Data: ds, Dir: dir}
	if err := tr.Run(context.Background(), false); err != nil {
		fmt.Println(err)
		return
	}
	c, err := weights.ReadCheckpoint(tr.CheckpointPath())
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Printf("%d steps; the checkpoint holds %d EMA tensors and the classes %v\n", tr.Step(), len(c.Tensors), c.ClassNames)
	// Output: 20 steps; the checkpoint holds 143 EMA tensors and the classes [left right]
}
