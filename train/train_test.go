package train_test

import (
	"bufio"
	"context"
	"encoding/json"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ddpm-go/ddpm/cuda"
	"github.com/ddpm-go/ddpm/data"
	"github.com/ddpm-go/ddpm/diffusion"
	"github.com/ddpm-go/ddpm/kernels"
	"github.com/ddpm-go/ddpm/train"
	"github.com/ddpm-go/ddpm/unet"
	"github.com/ddpm-go/ddpm/weights"
)

// tinyConfig is a real (small) class-conditional UNet with a null class.
func tinyConfig() unet.Config {
	k, null := 3, 2
	return unet.Config{SampleSize: 8, InChannels: 1, OutChannels: 1, TimeEmbeddingType: "positional", FlipSinToCos: true,
		LayersPerBlock: 1, MidBlockScaleFactor: 1, DownsamplePadding: 1, ActFn: "silu", NormNumGroups: 4, NormEps: 1e-6,
		ResnetTimeScaleShift: "default", BlockOutChannels: []int{8, 8},
		DownBlockTypes: []string{"DownBlock2D", "AttnDownBlock2D"}, UpBlockTypes: []string{"AttnUpBlock2D", "UpBlock2D"},
		NumClassEmbeds: &k, NullClass: &null, Dropout: 0.1}
}

func newCPU(t testing.TB) *kernels.CPU {
	t.Helper()
	cpu, err := kernels.NewCPU(kernels.CPUOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return cpu
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

// newTrainer is a CPU trainer of the tiny UNet on blobs, logging every
// step, with no Meta (the trainer fills it).
func newTrainer(t testing.TB, dir string, steps int) *train.Trainer[[]float32] {
	t.Helper()
	net, err := unet.New(tinyConfig(), newCPU(t), 3)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(net.Close)
	return configure(t, &train.Trainer[[]float32]{Net: net}, dir, steps)
}

func configure[B any](t testing.TB, tr *train.Trainer[B], dir string, steps int) *train.Trainer[B] {
	d, err := diffusion.New(diffusion.DefaultConfig())
	if err != nil {
		t.Fatal(err)
	}
	o := train.DefaultOptions()
	o.Steps, o.Batch, o.LR, o.WarmupSteps, o.SaveEvery, o.LogEvery = steps, 8, 2e-3, 5, 0, 1
	o.LabelDropout, o.Seed, o.Timesteps = 0.2, 11, train.LossSecondMoment
	tr.Options, tr.Diffusion, tr.Data, tr.Dir = o, d, blobs(t), dir
	return tr
}

// logLosses reads the loss of every logged step from dir's log.jsonl.
func logLosses(t testing.TB, dir string) (steps []int, losses []float64) {
	t.Helper()
	f, err := os.Open(filepath.Join(dir, "log.jsonl"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		var rec struct {
			Step int     `json:"step"`
			Loss float64 `json:"loss"`
		}
		if err := json.Unmarshal(sc.Bytes(), &rec); err != nil {
			t.Fatalf("log line %q: %v", sc.Text(), err)
		}
		steps, losses = append(steps, rec.Step), append(losses, rec.Loss)
	}
	return
}

func mean(v []float64) float64 {
	s := 0.0
	for _, x := range v {
		s += x
	}
	return s / float64(len(v))
}

// TestLossDecreases trains 150 steps without Meta: the loss falls and the
// checkpoint loads as a model with the configs the trainer filled in.
func TestLossDecreases(t *testing.T) {
	dir := t.TempDir()
	tr := newTrainer(t, dir, 150)
	if err := tr.Run(context.Background(), false); err != nil {
		t.Fatal(err)
	}
	_, losses := logLosses(t, dir)
	first, last := mean(losses[:20]), mean(losses[130:])
	t.Logf("mean loss: first 20 steps %.4f, last 20 steps %.4f", first, last)
	if !(last < 0.7*first) {
		t.Errorf("loss did not decrease: first %.4f, last %.4f", first, last)
	}
	m, src, err := unet.Load(tr.CheckpointPath(), newCPU(t))
	if err != nil {
		t.Fatalf("checkpoint does not load as a model: %v", err)
	}
	defer m.Close()
	if _, err := diffusion.ParseConfig(src.DiffusionConfig); err != nil {
		t.Errorf("checkpoint diffusion config: %v", err)
	}
	if len(src.ClassNames) != 2 {
		t.Errorf("class names %v, want the dataset's 2", src.ClassNames)
	}
}

// TestResumeEqualsUninterrupted: 12 steps straight and 5 + resume + 7
// give bit-identical losses and weights; the resumed log has each step
// once, in order.
func TestResumeEqualsUninterrupted(t *testing.T) {
	fullDir := t.TempDir()
	full := newTrainer(t, fullDir, 12)
	if err := full.Run(context.Background(), false); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	if err := newTrainer(t, dir, 5).Run(context.Background(), false); err != nil {
		t.Fatal(err)
	}
	// A crash after the checkpoint leaves log lines of lost steps behind.
	f, _ := os.OpenFile(filepath.Join(dir, "log.jsonl"), os.O_APPEND|os.O_WRONLY, 0)
	f.WriteString(`{"step":6,"loss":99}` + "\n" + `{"step":7,"loss":98}` + "\n")
	f.Close()
	b := newTrainer(t, dir, 12)
	if err := b.Run(context.Background(), true); err != nil {
		t.Fatal(err)
	}
	ws, want := logLosses(t, fullDir)
	gs, got := logLosses(t, dir)
	if len(gs) != len(ws) {
		t.Fatalf("resumed log has steps %v, want %v", gs, ws)
	}
	for i := range got {
		if gs[i] != i+1 || got[i] != want[i] {
			t.Fatalf("log line %d: step %d loss %v; uninterrupted step %d loss %v", i, gs[i], got[i], ws[i], want[i])
		}
	}
	pf, pb := make([]float32, full.Net.Engine().NumParams()), make([]float32, b.Net.Engine().NumParams())
	full.Net.Engine().ReadParams(pf)
	b.Net.Engine().ReadParams(pb)
	for j := range pf {
		if pf[j] != pb[j] {
			t.Fatalf("parameter %d differs after resume", j)
		}
	}
}

// nanInputs feeds the network NaN images from its nanAt-th step on.
type nanInputs struct {
	train.Network[[]float32]
	calls, nanAt int
}

func (n *nanInputs) Inputs(x diffusion.Batch, t []float64, y []int) (map[string][]float32, error) {
	n.calls++
	if n.calls >= n.nanAt {
		x.Data = append([]float32(nil), x.Data...)
		for i := range x.Data {
			x.Data[i] = float32(math.NaN())
		}
	}
	return n.Network.Inputs(x, t, y)
}

func TestNaNStopsAndKeepsCheckpoint(t *testing.T) {
	dir := t.TempDir()
	if err := newTrainer(t, dir, 4).Run(context.Background(), false); err != nil {
		t.Fatal(err)
	}
	tr2 := newTrainer(t, dir, 10)
	tr2.Net = &nanInputs{Network: tr2.Net, nanAt: 3}
	tr2.Options.SaveEvery = 1
	err := tr2.Run(context.Background(), true)
	if err == nil || !strings.Contains(err.Error(), "NaN") {
		t.Fatalf("want a NaN error, got %v", err)
	}
	t.Log(err)
	// Steps 5 and 6 were good and saved; the NaN step was not.
	c, err := weights.ReadCheckpoint(tr2.CheckpointPath())
	if err != nil {
		t.Fatalf("checkpoint unreadable after the NaN stop: %v", err)
	}
	if !strings.Contains(string(c.TrainState), `"step":6`) {
		t.Errorf("checkpoint state %s: want the last good step 6", c.TrainState[:min(len(c.TrainState), 60)])
	}
}

// cancelAfter cancels the run's context during its n-th step.
type cancelAfter struct {
	train.Network[[]float32]
	calls, n int
	cancel   func()
}

func (c *cancelAfter) Inputs(x diffusion.Batch, t []float64, y []int) (map[string][]float32, error) {
	c.calls++
	if c.calls == c.n {
		c.cancel()
	}
	return c.Network.Inputs(x, t, y)
}

func TestCancelSaves(t *testing.T) {
	dir := t.TempDir()
	tr := newTrainer(t, dir, 1000)
	ctx, cancel := context.WithCancel(context.Background())
	// Cancelled while step 4 is being set up: that step is dropped, the
	// checkpoint holds the 3 finished ones.
	tr.Net = &cancelAfter{Network: tr.Net, n: 4, cancel: cancel}
	if err := tr.Run(ctx, false); err != context.Canceled {
		t.Fatalf("want context.Canceled, got %v", err)
	}
	c, err := weights.ReadCheckpoint(filepath.Join(dir, "checkpoint.safetensors"))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(c.TrainState), `"step":3`) {
		t.Errorf("after cancel at step 3 the checkpoint says %s", c.TrainState[:40])
	}
}

// TestExistingCheckpoint: without resume an existing checkpoint is refused
// unless Overwrite is set; stale temporary files of a crashed write are
// removed at start.
func TestExistingCheckpoint(t *testing.T) {
	dir := t.TempDir()
	if err := newTrainer(t, dir, 2).Run(context.Background(), false); err != nil {
		t.Fatal(err)
	}
	stale := filepath.Join(dir, ".checkpoint.safetensors.tmp123")
	os.WriteFile(stale, []byte("half a checkpoint"), 0o644)
	err := newTrainer(t, dir, 2).Run(context.Background(), false)
	if err == nil || !strings.Contains(err.Error(), "--overwrite") {
		t.Fatalf("second fresh run into the same folder: %v", err)
	}
	if _, err := os.Stat(stale); !os.IsNotExist(err) {
		t.Errorf("stale temporary file left behind: %v", err)
	}
	tr := newTrainer(t, dir, 2)
	tr.Overwrite = true
	if err := tr.Run(context.Background(), false); err != nil {
		t.Fatalf("with Overwrite: %v", err)
	}
}

// TestUpfrontChecks: mismatches between network, diffusion and data are
// reported before the first step, naming what to change.
func TestUpfrontChecks(t *testing.T) {
	cpu := newCPU(t)
	mk := func(cfg unet.Config) *train.Trainer[[]float32] {
		net, err := unet.New(cfg, cpu, 1)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(net.Close)
		return configure(t, &train.Trainer[[]float32]{Net: net}, t.TempDir(), 3)
	}
	// A learned variance needs 2C output channels.
	tr := mk(tinyConfig())
	cfg := diffusion.DefaultConfig()
	cfg.Variance, cfg.Loss = diffusion.LearnedRange, diffusion.LossHybrid
	tr.Diffusion, _ = diffusion.New(cfg)
	if err := tr.Run(context.Background(), false); err == nil || !strings.Contains(err.Error(), "out_channels") {
		t.Errorf("learned variance on a 1-channel network: %v", err)
	}
	// Label dropout needs a null class.
	noNull := tinyConfig()
	noNull.NullClass = nil
	if err := mk(noNull).Run(context.Background(), false); err == nil || !strings.Contains(err.Error(), "ddpm_null_class") {
		t.Errorf("label dropout without a null class: %v", err)
	}
	// An unconditional network on a labelled dataset ignores the labels.
	uncond := tinyConfig()
	uncond.NumClassEmbeds, uncond.NullClass = nil, nil
	if err := mk(uncond).Run(context.Background(), false); err != nil {
		t.Errorf("unconditional network on labelled data: %v", err)
	}
}

// TestGPUMatchesCPU trains 5 steps on cuda.Device (a GPU, or the CPU
// emulator of package cudatest, strict fp32) and on the CPU from the same
// initial weights: every logged loss agrees to 1e-4 relative.
func TestGPUMatchesCPU(t *testing.T) {
	gpu, err := cuda.Open(0, cuda.Options{Precision: "fp32"})
	if err != nil {
		t.Skipf("no GPU or emulator: %v", err)
	}
	defer gpu.Close()
	cpuDir, gpuDir := t.TempDir(), t.TempDir()
	if err := newTrainer(t, cpuDir, 5).Run(context.Background(), false); err != nil {
		t.Fatal(err)
	}
	net, err := unet.NewOn[cuda.Ptr](tinyConfig(), gpu, 3)
	if err != nil {
		t.Fatal(err)
	}
	defer net.Close()
	tr := configure(t, &train.Trainer[cuda.Ptr]{Net: net}, gpuDir, 5)
	if err := tr.Run(context.Background(), false); err != nil {
		t.Fatal(err)
	}
	_, want := logLosses(t, cpuDir)
	_, got := logLosses(t, gpuDir)
	for i := range want {
		if math.Abs(got[i]-want[i]) > 1e-4*math.Abs(want[i]) {
			t.Errorf("step %d: GPU loss %.7g, CPU %.7g", i+1, got[i], want[i])
		}
	}
	t.Logf("CPU losses %v, GPU %v", want, got)
}

func TestOptionsValidate(t *testing.T) {
	for _, tc := range []struct {
		name string
		mod  func(*train.Options)
		want string
	}{
		{"steps", func(o *train.Options) { o.Steps = 0 }, "steps"},
		{"lr", func(o *train.Options) { o.LR = -1 }, "lr"},
		{"schedule", func(o *train.Options) { o.LRSchedule = 7 }, "lr_schedule"},
		{"ema", func(o *train.Options) { o.EMARate = 1 }, "ema_rate"},
		{"sampler", func(o *train.Options) { o.Timesteps = -1 }, "timesteps"},
		{"dropout", func(o *train.Options) { o.LabelDropout = 1 }, "label_dropout"},
	} {
		o := train.DefaultOptions()
		tc.mod(&o)
		if err := o.Validate(); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: got %v, want an error naming %s", tc.name, err, tc.want)
		}
	}
	o := train.DefaultOptions()
	o.Steps, o.WarmupSteps, o.LRSchedule = 100, 10, train.Cosine
	if o.LRAt(5) != o.LR/2 || o.LRAt(10) != o.LR || math.Abs(o.LRAt(100)) > 1e-12 {
		t.Errorf("LRAt: warmup/cosine wrong: %v %v %v", o.LRAt(5), o.LRAt(10), o.LRAt(100))
	}
	var s train.LRSchedule
	if err := s.UnmarshalText([]byte("step")); err == nil {
		t.Error(`lr_schedule "step": no error`)
	}
	b, _ := json.Marshal(o)
	var back train.Options
	if err := json.Unmarshal(b, &back); err != nil || back != o {
		t.Errorf("options JSON round trip: %v, %+v", err, back)
	}
}
