package mnistclf

import (
	"context"
	"fmt"
	"math"
	"math/rand/v2"
	"runtime"
	"sync"

	"github.com/ddpm-go/ddpm/data"
	"github.com/ddpm-go/ddpm/diffusion"
)

// Classifier is a trained digit classifier. Its methods are safe for
// concurrent use; the parameters are never modified after Train or Load.
type Classifier struct {
	p []float32 // len nParam, layout in net.go
}

// New returns an untrained classifier with He-normal weights (std
// sqrt(2/fan_in)) and zero biases drawn from seed.
func New(seed uint64) *Classifier {
	r := rand.New(rand.NewPCG(seed, 0x6d6e697374))
	p := make([]float32, nParam)
	init := func(lo, hi, fanIn int) {
		std := math.Sqrt(2 / float64(fanIn))
		for i := lo; i < hi; i++ {
			p[i] = float32(r.NormFloat64() * std)
		}
	}
	init(offW1, offB1, kSize*kSize)
	init(offW2, offB2, c1*kSize*kSize)
	init(offF1, offFB1, flat)
	init(offF2, offFB2, hidden)
	return &Classifier{p: p}
}

// cropInto writes the centre 28×28 of a (1, s, s) image x (s = 28 or 32)
// into dst, shifted by (dx, dy) from the centre (0 for inference).
func cropInto(dst *[inH * inH]float32, x []float32, s, dx, dy int) {
	off := (s - inH) / 2
	for y := range inH {
		sy := y + off + dy
		copy(dst[y*inH:(y+1)*inH], x[sy*s+off+dx:sy*s+off+dx+inH])
	}
}

// checkInput validates a (N, 1, 28, 28) or (N, 1, 32, 32) batch.
func checkInput(b diffusion.Batch) error {
	if err := b.Check(); err != nil {
		return fmt.Errorf("mnistclf: %w", err)
	}
	if b.C != 1 || b.H != b.W || (b.H != 28 && b.H != 32) {
		return fmt.Errorf("mnistclf: batch (%d,%d,%d,%d): want (N,1,28,28) or (N,1,32,32)", b.N, b.C, b.H, b.W)
	}
	return nil
}

// parallel runs f(worker, i) for i in [0, n) on up to `workers` goroutines;
// worker w handles i = w, w+workers, ... so the assignment is fixed.
func parallel(n, workers int, f func(w, i int)) {
	workers = max(1, min(workers, n))
	var wg sync.WaitGroup
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := w; i < n; i += workers {
				f(w, i)
			}
		}()
	}
	wg.Wait()
}

// Logits returns the (N, 10) class scores of a (N, 1, 28, 28) or
// (N, 1, 32, 32) batch in [-1, 1]; 32×32 images are center-cropped.
func (c *Classifier) Logits(b diffusion.Batch) ([]float32, error) {
	if err := checkInput(b); err != nil {
		return nil, err
	}
	out := make([]float32, b.N*NumClasses)
	workers := runtime.GOMAXPROCS(0)
	ws := make([]work, min(workers, b.N))
	per := b.H * b.W
	parallel(b.N, workers, func(w, i int) {
		s := &ws[w]
		cropInto(&s.in, b.Data[i*per:(i+1)*per], b.H, 0, 0)
		forward(c.p, s)
		copy(out[i*NumClasses:], s.logits[:])
	})
	return out, nil
}

// FeatureDim is the length of one image's Features vector.
const FeatureDim = hidden

// Features returns the (N, FeatureDim) penultimate activations (fc1 after
// its ReLU) of a batch (see Logits for the accepted shapes): the feature
// space in which quality.FrechetDistance compares generated digits with
// real ones, as FID does with Inception's pool features.
func (c *Classifier) Features(b diffusion.Batch) ([]float32, error) {
	if err := checkInput(b); err != nil {
		return nil, err
	}
	out := make([]float32, b.N*FeatureDim)
	workers := runtime.GOMAXPROCS(0)
	ws := make([]work, min(workers, b.N))
	per := b.H * b.W
	parallel(b.N, workers, func(w, i int) {
		s := &ws[w]
		cropInto(&s.in, b.Data[i*per:(i+1)*per], b.H, 0, 0)
		forward(c.p, s)
		copy(out[i*FeatureDim:], s.h[:])
	})
	return out, nil
}

// Predict returns the most likely digit of each image of the batch
// (see Logits for the accepted shapes).
func (c *Classifier) Predict(b diffusion.Batch) ([]int, error) {
	l, err := c.Logits(b)
	if err != nil {
		return nil, err
	}
	pred := make([]int, b.N)
	for n := range pred {
		row := l[n*NumClasses : (n+1)*NumClasses]
		for k, v := range row {
			if v > row[pred[n]] {
				pred[n] = k
			}
		}
	}
	return pred, nil
}

// TrainOptions configures Train. Zero fields take the defaults shown.
type TrainOptions struct {
	Epochs  int     // passes over the data (5)
	Batch   int     // examples per Adam step (32)
	LR      float64 // peak Adam learning rate, cosine-decayed to 0 (2e-3)
	Shift   int     // random translation of ±Shift px for 32×32 inputs (2; negative = none)
	Seed    uint64  // initialisation, shuffling and shifts
	Workers int     // goroutines (GOMAXPROCS); results depend on it through float summation order
	// Progress, when set, is called every 100 steps with the mean loss since the last call.
	Progress func(step, steps int, loss float64)
}

// Train fits a classifier to ds, whose examples must be (1, 28, 28) or
// (1, 32, 32) in [-1, 1] with labels 0..9 (e.g. data.MNIST). With 32×32
// examples (MNIST padded by 2 px), each training image is a random 28×28
// crop, a translation of up to ±Shift px. Minimises the mean softmax
// cross-entropy with Adam (β1 0.9, β2 0.999, ε 1e-8). The same options and
// data give the same weights.
func Train(ctx context.Context, ds data.Dataset, opts TrainOptions) (*Classifier, error) {
	ch, h, w := ds.Shape()
	if ch != 1 || h != w || (h != 28 && h != 32) {
		return nil, fmt.Errorf("mnistclf: dataset shape (%d,%d,%d): want (1,28,28) or (1,32,32)", ch, h, w)
	}
	if ds.NumClasses() != NumClasses {
		return nil, fmt.Errorf("mnistclf: dataset has %d classes, want %d", ds.NumClasses(), NumClasses)
	}
	if opts.Epochs == 0 {
		opts.Epochs = 5
	}
	if opts.Batch == 0 {
		opts.Batch = 32
	}
	if opts.LR == 0 {
		opts.LR = 2e-3
	}
	if opts.Shift == 0 {
		opts.Shift = 2
	}
	if opts.Workers == 0 {
		opts.Workers = runtime.GOMAXPROCS(0)
	}
	switch {
	case opts.Epochs < 1 || opts.Epochs > 1000:
		return nil, fmt.Errorf("mnistclf: Epochs=%d: allowed 1..1000", opts.Epochs)
	case opts.Batch < 1 || opts.Batch > 4096:
		return nil, fmt.Errorf("mnistclf: Batch=%d: allowed 1..4096", opts.Batch)
	case !(opts.LR > 0 && opts.LR < 1):
		return nil, fmt.Errorf("mnistclf: LR=%g: allowed (0, 1)", opts.LR)
	case opts.Shift > (h-inH)/2 && h != inH:
		return nil, fmt.Errorf("mnistclf: Shift=%d: allowed up to %d for %dx%d inputs", opts.Shift, (h-inH)/2, h, w)
	case opts.Workers < 1 || opts.Workers > 256:
		return nil, fmt.Errorf("mnistclf: Workers=%d: allowed 1..256", opts.Workers)
	}
	shift := max(opts.Shift, 0)
	if h == inH {
		shift = 0
	}
	loader, err := data.NewLoader(ds, opts.Batch, opts.Seed, data.LoaderOptions{})
	if err != nil {
		return nil, fmt.Errorf("mnistclf: %w", err)
	}
	c := New(opts.Seed)
	steps := opts.Epochs * ds.Len() / opts.Batch
	nw := min(opts.Workers, opts.Batch)
	ws := make([]work, nw)
	grads := make([][]float32, nw)
	losses := make([]float64, nw)
	for i := range grads {
		grads[i] = make([]float32, nParam)
	}
	m := make([]float64, nParam)
	v := make([]float64, nParam)
	g := make([]float64, nParam)
	shifts := make([][2]int, opts.Batch)
	rng := rand.New(rand.NewPCG(opts.Seed, 0x7368696674))
	x := diffusion.NewBatch(opts.Batch, 1, h, w)
	y := make([]int, opts.Batch)
	per := h * w
	const beta1, beta2, eps = 0.9, 0.999, 1e-8
	var running float64
	for step := range steps {
		if err := loader.NextInto(ctx, x, y); err != nil {
			return nil, fmt.Errorf("mnistclf: step %d: %w", step, err)
		}
		for i := range shifts {
			if shift > 0 {
				shifts[i] = [2]int{rng.IntN(2*shift+1) - shift, rng.IntN(2*shift+1) - shift}
			}
		}
		for i := range grads {
			clear(grads[i])
			losses[i] = 0
		}
		parallel(opts.Batch, nw, func(wk, i int) {
			s := &ws[wk]
			cropInto(&s.in, x.Data[i*per:(i+1)*per], h, shifts[i][0], shifts[i][1])
			forward(c.p, s)
			losses[wk] += lossAndGrad(s, y[i])
			backward(c.p, grads[wk], s)
		})
		var loss float64
		clear(g)
		for wk := range grads {
			loss += losses[wk]
			for j, v := range grads[wk] {
				g[j] += float64(v)
			}
		}
		running += loss / float64(opts.Batch)
		// Adam with bias correction; lr follows a cosine from LR to 0.
		t := float64(step + 1)
		lr := opts.LR * 0.5 * (1 + math.Cos(math.Pi*float64(step)/float64(steps)))
		a := lr * math.Sqrt(1-math.Pow(beta2, t)) / (1 - math.Pow(beta1, t))
		inv := 1 / float64(opts.Batch)
		for j := range c.p {
			gj := g[j] * inv
			m[j] = beta1*m[j] + (1-beta1)*gj
			v[j] = beta2*v[j] + (1-beta2)*gj*gj
			c.p[j] -= float32(a * m[j] / (math.Sqrt(v[j]) + eps))
		}
		if math.IsNaN(loss) || math.IsInf(loss, 0) {
			return nil, fmt.Errorf("mnistclf: loss is %v at step %d; lower LR", loss, step)
		}
		if opts.Progress != nil && (step+1)%100 == 0 {
			opts.Progress(step+1, steps, running/100)
			running = 0
		}
	}
	return c, nil
}

// Accuracy is the fraction of ds (shape (1, 28, 28) or (1, 32, 32), labels
// 0..9) that c classifies correctly.
func (c *Classifier) Accuracy(ctx context.Context, ds data.Dataset) (float64, error) {
	ch, h, w := ds.Shape()
	const chunk = 1000
	correct := 0
	for start := 0; start < ds.Len(); start += chunk {
		if err := ctx.Err(); err != nil {
			return 0, err
		}
		n := min(chunk, ds.Len()-start)
		b := diffusion.NewBatch(n, ch, h, w)
		labels := make([]int, n)
		per := ch * h * w
		for i := range n {
			l, err := ds.Example(start+i, b.Data[i*per:(i+1)*per])
			if err != nil {
				return 0, fmt.Errorf("mnistclf: %w", err)
			}
			labels[i] = l
		}
		pred, err := c.Predict(b)
		if err != nil {
			return 0, err
		}
		for i, p := range pred {
			if p == labels[i] {
				correct++
			}
		}
	}
	return float64(correct) / float64(ds.Len()), nil
}
