package diffusion_test

import (
	"context"
	"fmt"
	"math"
	"math/rand/v2"

	"github.com/ddpm-go/ddpm/diffusion"
)

// meanModel is the ideal epsilon predictor for data that is always the
// constant c: E[eps | x_t] = (x_t - sqrt(alphabar_t) c) / sqrt(1 - alphabar_t).
type meanModel struct {
	c float64
	d *diffusion.Diffusion
}

func (m meanModel) Predict(ctx context.Context, x diffusion.Batch, t []float64, y []int) (diffusion.Batch, error) {
	out := diffusion.NewBatch(x.N, x.C, x.H, x.W)
	s := m.d.Schedule()
	D := x.C * x.H * x.W
	for i := range x.N {
		ab := s.AlphasCumprod[int(t[i])]
		for j := range D {
			k := i*D + j
			out.Data[k] = float32((float64(x.Data[k]) - math.Sqrt(ab)*m.c) / math.Sqrt(1-ab))
		}
	}
	return out, nil
}

func ExampleDiffusion_Sample() {
	d, err := diffusion.New(diffusion.DefaultConfig()) // linear, T = 1000, epsilon, fixed-small
	if err != nil {
		fmt.Println(err)
		return
	}
	x, err := d.Sample(context.Background(), meanModel{c: 0.5, d: d}, diffusion.Options{
		Sampler: diffusion.SamplerDDIM, Steps: 50, Seed: 1,
		N: 1, C: 1, H: 2, W: 2,
	})
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Printf("%.3f\n", x.Data)
	// Output: [0.500 0.500 0.500 0.500]
}

func ExampleDiffusion_TrainingLoss() {
	cfg := diffusion.DefaultConfig()
	cfg.Timesteps = 100
	d, _ := diffusion.New(cfg)
	x0 := diffusion.Batch{N: 1, C: 1, H: 1, W: 2, Data: []float32{0.5, -0.5}}
	noise := diffusion.Batch{N: 1, C: 1, H: 1, W: 2, Data: []float32{1, -1}}
	out := diffusion.Batch{N: 1, C: 1, H: 1, W: 2, Data: []float32{0.5, -1}} // the network's epsilon
	terms, dout, _ := d.TrainingLoss(out, x0, noise, []int{10}, nil)
	fmt.Printf("L_simple %.3f, dL/dout %.2f\n", terms.Loss[0], dout)
	// Output: L_simple 0.125, dL/dout [-0.50 0.00]
}

func ExampleDiffusion_NLL() {
	cfg := diffusion.DefaultConfig()
	cfg.Timesteps = 100
	d, err := diffusion.New(cfg)
	if err != nil {
		fmt.Println(err)
		return
	}
	// Four pixels of value 191 (x = 2*191/255 - 1) and the ideal epsilon
	// predictor for that constant image.
	x := float32(2*191.0/255 - 1)
	x0 := diffusion.Batch{N: 1, C: 1, H: 2, W: 2, Data: []float32{x, x, x, x}}
	res, err := d.NLL(context.Background(), meanModel{c: float64(x), d: d}, x0, nil, rand.New(rand.NewPCG(1, 2)), nil)
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Printf("%d terms, prior %.1e bits/dim, total %.2f bits/dim\n", len(res.Terms), res.PriorBPD[0], res.MeanBPD())
	// Output: 100 terms, prior 3.6e-06 bits/dim, total 3.14 bits/dim
}
