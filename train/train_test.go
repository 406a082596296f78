package train_test

import (
	"context"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ddpm-go/ddpm/data"
	"github.com/ddpm-go/ddpm/diffusion"
	"github.com/ddpm-go/ddpm/kernels"
	"github.com/ddpm-go/ddpm/train"
	"github.com/ddpm-go/ddpm/unet"
	"github.com/ddpm-go/ddpm/weights"
)

// tinyUNet is a real (small) class-conditional UNet with a null class.
func tinyUNet(t testing.TB, cpu *kernels.CPU) (unet.Config, *unet.Model) {
	t.Helper()
	k, null := 3, 2
	cfg := unet.Config{SampleSize: 8, InChannels: 1, OutChannels: 1, TimeEmbeddingType: "positional", FlipSinToCos: true,
		LayersPerBlock: 1, MidBlockScaleFactor: 1, DownsamplePadding: 1, ActFn: "silu", NormNumGroups: 4, NormEps: 1e-6,
		ResnetTimeScaleShift: "default", BlockOutChannels: []int{8, 8},
		DownBlockTypes: []string{"DownBlock2D", "AttnDownBlock2D"}, UpBlockTypes: []string{"AttnUpBlock2D", "UpBlock2D"},
		NumClassEmbeds: &k, NullClass: &null}
	m, err := unet.New(cfg, cpu, 3)
	if err != nil {
		t.Fatal(err)
	}
	return cfg, m
}

// blobs is a dataset of 64 8x8 images: bright squares whose corner is the class.
func blobs(t testing.TB) data.Dataset {
	t.Helper()
	r := rand.New(rand.NewPCG(5, 5))
	const n = 64
	pix := make([]uint8, n*64)
	labels := make([]uint8, n)
	for i := 0; i < n; i++ {
		c := uint8(i % 2)
		labels[i] = c
		for y := 0; y < 8; y++ {
			for x := 0; x < 8; x++ {
				v := uint8(r.IntN(30))
				if (c == 0 && x < 4 && y < 4) || (c == 1 && x >= 4 && y >= 4) {
					v = 220 + uint8(r.IntN(30))
				}
				pix[i*64+y*8+x] = v
			}
		}
	}
	ds, err := data.NewImages(pix, n, 1, 8, 8, labels, 2, nil, 0, data.ResizeNone)
	if err != nil {
		t.Fatal(err)
	}
	return ds
}

func newTrainer(t testing.TB, dir string, steps int) (*train.Trainer, *[]float64) {
	t.Helper()
	cpu, err := kernels.NewCPU(kernels.CPUOptions{})
	if err != nil {
		t.Fatal(err)
	}
	cfg, net := tinyUNet(t, cpu)
	d, err := diffusion.New(diffusion.DefaultConfig())
	if err != nil {
		t.Fatal(err)
	}
	o := train.DefaultOptions()
	o.Steps, o.Batch, o.LR, o.WarmupSteps, o.SaveEvery, o.LogEvery = steps, 8, 2e-3, 5, 0, 1
	o.LabelDropout, o.Seed, o.Timesteps = 0.2, 11, "loss-second-moment"
	losses := &[]float64{}
	tr := &train.Trainer{Options: o, Net: &recorder{net, losses}, Diffusion: d, Data: blobs(t), CPU: cpu, Dir: dir,
		Meta: train.Meta{UNetConfig: cfg.JSON(), DiffusionConfig: []byte(`{}`)}}
	return tr, losses
}

// recorder records every step's loss.
type recorder struct {
	*unet.Model
	losses *[]float64
}

func (r *recorder) Step(ctx context.Context, x diffusion.Batch, t, y []int, seed uint64, loss train.LossFunc) (float64, error) {
	l, err := r.Model.Step(ctx, x, t, y, seed, loss)
	*r.losses = append(*r.losses, l)
	return l, err
}

func mean(v []float64) float64 {
	s := 0.0
	for _, x := range v {
		s += x
	}
	return s / float64(len(v))
}

func TestLossDecreases(t *testing.T) {
	tr, losses := newTrainer(t, t.TempDir(), 150)
	if err := tr.Run(context.Background(), false); err != nil {
		t.Fatal(err)
	}
	first, last := mean((*losses)[:20]), mean((*losses)[130:])
	t.Logf("mean loss: first 20 steps %.4f, last 20 steps %.4f", first, last)
	if !(last < 0.7*first) {
		t.Errorf("loss did not decrease: first %.4f, last %.4f", first, last)
	}
	if _, err := weights.Open(tr.CheckpointPath()); err != nil {
		t.Errorf("checkpoint does not load as a model: %v", err)
	}
}

// TestResumeEqualsUninterrupted: 12 steps straight and 5 + resume + 7
// give bit-identical losses and weights.
func TestResumeEqualsUninterrupted(t *testing.T) {
	full, lf := newTrainer(t, t.TempDir(), 12)
	if err := full.Run(context.Background(), false); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	a, la := newTrainer(t, dir, 5)
	if err := a.Run(context.Background(), false); err != nil {
		t.Fatal(err)
	}
	b, lb := newTrainer(t, dir, 12)
	if err := b.Run(context.Background(), true); err != nil {
		t.Fatal(err)
	}
	got := append(append([]float64{}, *la...), *lb...)
	if len(got) != len(*lf) {
		t.Fatalf("%d losses after resume, %d uninterrupted", len(got), len(*lf))
	}
	for i := range got {
		if got[i] != (*lf)[i] {
			t.Fatalf("step %d: loss %v after resume, %v uninterrupted", i+1, got[i], (*lf)[i])
		}
	}
	pf, pb := full.Net.Params(), b.Net.Params()
	for i := range pf {
		for j := range pf[i].Value {
			if pf[i].Value[j] != pb[i].Value[j] {
				t.Fatalf("%s[%d] differs after resume", pf[i].Name, j)
			}
		}
	}
}

// nanNet returns NaN losses from step nanAt on.
type nanNet struct {
	*recorder
	nanAt int
}

func (n *nanNet) Step(ctx context.Context, x diffusion.Batch, t, y []int, seed uint64, loss train.LossFunc) (float64, error) {
	l, err := n.recorder.Step(ctx, x, t, y, seed, loss)
	if len(*n.losses) >= n.nanAt {
		return math.NaN(), err
	}
	return l, err
}

func TestNaNStopsAndKeepsCheckpoint(t *testing.T) {
	dir := t.TempDir()
	tr, _ := newTrainer(t, dir, 4)
	if err := tr.Run(context.Background(), false); err != nil {
		t.Fatal(err)
	}
	before, err := os.ReadFile(tr.CheckpointPath())
	if err != nil {
		t.Fatal(err)
	}
	tr2, _ := newTrainer(t, dir, 10)
	tr2.Net = &nanNet{tr2.Net.(*recorder), 3}
	tr2.Options.SaveEvery = 1
	err = tr2.Run(context.Background(), true)
	if err == nil || !strings.Contains(err.Error(), "NaN") {
		t.Fatalf("want a NaN error, got %v", err)
	}
	t.Log(err)
	after, err := os.ReadFile(tr.CheckpointPath())
	if err != nil {
		t.Fatal(err)
	}
	// Steps 5 and 6 were good and saved; the NaN step was not.
	c, err := weights.ReadCheckpoint(tr.CheckpointPath())
	if err != nil {
		t.Fatalf("checkpoint unreadable after the NaN stop: %v", err)
	}
	if len(after) == 0 || string(c.TrainState) == "" || len(before) == 0 {
		t.Fatal("empty checkpoint")
	}
	if !strings.Contains(string(c.TrainState), `"step":6`) {
		t.Errorf("checkpoint state %s: want the last good step 6", c.TrainState[:min(len(c.TrainState), 60)])
	}
}

func TestCancelSaves(t *testing.T) {
	dir := t.TempDir()
	tr, losses := newTrainer(t, dir, 1000)
	ctx, cancel := context.WithCancel(context.Background())
	tr.Net = &cancelAfter{tr.Net.(*recorder), 3, cancel}
	if err := tr.Run(ctx, false); err != context.Canceled {
		t.Fatalf("want context.Canceled, got %v", err)
	}
	c, err := weights.ReadCheckpoint(filepath.Join(dir, "checkpoint.safetensors"))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(c.TrainState), `"step":3`) {
		t.Errorf("after cancel at step 3 (%d losses) the checkpoint says %s", len(*losses), c.TrainState[:40])
	}
}

type cancelAfter struct {
	*recorder
	n      int
	cancel func()
}

func (c *cancelAfter) Step(ctx context.Context, x diffusion.Batch, t, y []int, seed uint64, loss train.LossFunc) (float64, error) {
	l, err := c.recorder.Step(ctx, x, t, y, seed, loss)
	if len(*c.losses) == c.n {
		c.cancel()
	}
	return l, err
}

func TestOptionsValidate(t *testing.T) {
	for _, tc := range []struct {
		name string
		mod  func(*train.Options)
		want string
	}{
		{"steps", func(o *train.Options) { o.Steps = 0 }, "steps"},
		{"lr", func(o *train.Options) { o.LR = -1 }, "lr"},
		{"schedule", func(o *train.Options) { o.LRSchedule = "step" }, "lr_schedule"},
		{"ema", func(o *train.Options) { o.EMARate = 1 }, "ema_rate"},
		{"sampler", func(o *train.Options) { o.Timesteps = "x" }, "timesteps"},
		{"dropout", func(o *train.Options) { o.LabelDropout = 1 }, "label_dropout"},
	} {
		o := train.DefaultOptions()
		tc.mod(&o)
		if err := o.Validate(); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: got %v, want an error naming %s", tc.name, err, tc.want)
		}
	}
	o := train.DefaultOptions()
	o.Steps, o.WarmupSteps, o.LRSchedule = 100, 10, "cosine"
	if o.LRAt(5) != o.LR/2 || o.LRAt(10) != o.LR || math.Abs(o.LRAt(100)) > 1e-12 {
		t.Errorf("LRAt: warmup/cosine wrong: %v %v %v", o.LRAt(5), o.LRAt(10), o.LRAt(100))
	}
}
