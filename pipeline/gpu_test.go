package pipeline

import (
	"context"
	"fmt"
	"math"
	"os"
	"strings"
	"testing"

	"github.com/ddpm-go/ddpm/cuda"
	"github.com/ddpm-go/ddpm/cuda/cudatest"
	"github.com/ddpm-go/ddpm/diffusion"
	"github.com/ddpm-go/ddpm/kernels"
	"github.com/ddpm-go/ddpm/unet"
)

// TestMain runs the GPU tests on the CPU emulator of package cudatest
// when there is no GPU.
func TestMain(m *testing.M) {
	_, cleanup, err := cudatest.UseEmulator("../cuda")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
	}
	code := m.Run()
	cleanup()
	os.Exit(code)
}

// tinyModel writes a small class-conditional UNet (8x8, random weights)
// as a model file.
func tinyModel(t *testing.T) string {
	k := 4
	cfg := unet.Config{SampleSize: 8, InChannels: 1, OutChannels: 1, TimeEmbeddingType: "positional", FlipSinToCos: true,
		LayersPerBlock: 1, MidBlockScaleFactor: 1, DownsamplePadding: 1, ActFn: "silu", NormNumGroups: 4, NormEps: 1e-6,
		ResnetTimeScaleShift: "default", BlockOutChannels: []int{8, 8}, AttentionHeadDim: &k,
		DownBlockTypes: []string{"DownBlock2D", "AttnDownBlock2D"}, UpBlockTypes: []string{"AttnUpBlock2D", "UpBlock2D"},
		NumClassEmbeds: &k}
	cpu, err := kernels.NewCPU(kernels.CPUOptions{})
	if err != nil {
		t.Fatal(err)
	}
	m, err := unet.New(cfg, cpu, 3)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	path := t.TempDir() + "/tiny.safetensors"
	if err := m.Save(path, nil); err != nil {
		t.Fatal(err)
	}
	return path
}

// sampleWith opens model with o and draws 2 images with 5 DDIM steps
// (the forward pass runs op by op twice, is captured, then replayed).
func sampleWith(t *testing.T, model string, o Options) ([]float32, string) {
	t.Helper()
	p, err := Open(context.Background(), model, o)
	if err != nil {
		if strings.Contains(err.Error(), "no NVIDIA driver") {
			t.Skipf("no GPU or emulator: %v", err)
		}
		t.Fatal(err)
	}
	defer p.Close()
	so := diffusion.Options{Sampler: diffusion.SamplerDDIM, Steps: 5, Seed: 4, N: 2, C: p.Config.InChannels,
		H: p.Config.SampleSize, W: p.Config.SampleSize, Labels: []int{3, 1}}
	b, err := p.Diffusion.Sample(context.Background(), p.Model, so)
	if err != nil {
		t.Fatal(err)
	}
	if m, ok := p.Model.(*unet.Net[cuda.Ptr]); ok {
		if g, ok := any(m.Engine().Ops()).(*cuda.GraphOps); ok {
			if st := g.Stats(); st.Replayed < 2 || st.Failed > 0 {
				t.Errorf("graph stats %+v after 5 sampling steps: want the last two replayed", st)
			}
		}
	}
	return b.Data, p.Device
}

// TestOpenGPUGraphs: on the GPU the model runs through cuda.GraphOps by
// default (the device name says so), and sampling gives the same bits as
// with NoGraphs, and the CPU's image within fp32 rounding.
func TestOpenGPUGraphs(t *testing.T) {
	model := tinyModel(t)
	gpu := Options{Device: "cuda", GPU: cuda.Options{Precision: "fp32"}}
	withGraphs, name := sampleWith(t, model, gpu)
	if !strings.HasSuffix(name, ", graphs") {
		t.Errorf("device %q: want the model through cuda.GraphOps", name)
	}
	gpu.NoGraphs = true
	plain, name := sampleWith(t, model, gpu)
	if strings.Contains(name, "graphs") {
		t.Errorf("device %q with NoGraphs", name)
	}
	for i := range plain {
		if math.Float32bits(plain[i]) != math.Float32bits(withGraphs[i]) {
			t.Fatalf("value %d: %v with graphs, %v without", i, withGraphs[i], plain[i])
		}
	}
	cpu, _ := sampleWith(t, model, Options{Device: "cpu"})
	var num, den float64
	for i := range cpu {
		d := float64(cpu[i] - plain[i])
		num, den = num+d*d, den+float64(cpu[i])*float64(cpu[i])
	}
	if e := math.Sqrt(num / den); e > 1e-4 {
		t.Errorf("GPU fp32 sample vs CPU: relative L2 error %.3g > 1e-4", e)
	}
}
