package adm

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ddpm-go/ddpm/diffusion"
	"github.com/ddpm-go/ddpm/kernels"
	"github.com/ddpm-go/ddpm/npy"
)

// TestStepServer is the Go side of pytorch/bench_adm.py and
// pytorch/bench_glide.py, which run guided-diffusion's own UNetModel or
// glide-text2im's own Text2ImUNet on the same weights and inputs and
// alternate with this process step by step, so both see the same load
// on a shared machine. Skipped unless $DDPM_ADM_BENCH names a folder
// holding model.pt + args.json and, per batch size N, x_N.npy, t_N.npy,
// y_N.npy (guided-diffusion) or tokens_N.npy and mask_N.npy (GLIDE:
// (N, text_ctx) token ids and the 0/1 padding mask, as float32), and
// PyTorch's out_N.npy. It loads the model on a CPU backend with
// GOMAXPROCS threads, prints "ready", then for each line "N" on stdin
// runs one sampling step (one forward pass; PredictText for GLIDE) at
// batch N and prints "ms <milliseconds> relL2 <error of the output
// against out_N.npy>".
func TestStepServer(t *testing.T) {
	dir := os.Getenv("DDPM_ADM_BENCH")
	if dir == "" {
		t.Skip("DDPM_ADM_BENCH not set (see pytorch/bench_adm.py)")
	}
	m, err := benchModel(dir)
	if err != nil {
		t.Fatal(err)
	}
	fmt.Println("ready")
	sc := bufio.NewScanner(os.Stdin)
	ctx := context.Background()
	for sc.Scan() {
		n, err := strconv.Atoi(strings.TrimSpace(sc.Text()))
		if err != nil {
			t.Fatalf("request %q: want a batch size", sc.Text())
		}
		in := func(name string) []float32 {
			v, err := readNPYFile(filepath.Join(dir, fmt.Sprintf("%s_%d.npy", name, n)))
			if err != nil {
				t.Fatal(err)
			}
			return v
		}
		x, tf, want := in("x"), in("t"), in("out")
		ts := make([]float64, n)
		for i := range ts {
			ts[i] = float64(tf[i])
		}
		xb := diffusion.Batch{N: n, C: 3, H: m.a.size, W: m.a.size, Data: x}
		var run func() (diffusion.Batch, error)
		if m.TextCtx() > 0 {
			var text TextInputs
			for _, v := range in("tokens") {
				text.Tokens = append(text.Tokens, int(v))
			}
			for _, v := range in("mask") {
				text.Mask = append(text.Mask, v != 0)
			}
			run = func() (diffusion.Batch, error) { return m.PredictText(ctx, xb, ts, text) }
		} else {
			yf := in("y")
			var ys []int
			for i := 0; i < n && m.Classes() > 0; i++ {
				ys = append(ys, int(yf[i]))
			}
			run = func() (diffusion.Batch, error) { return m.Predict(ctx, xb, ts, ys) }
		}
		start := time.Now()
		out, err := run()
		if err != nil {
			t.Fatal(err)
		}
		fmt.Printf("ms %.1f relL2 %.3g\n", float64(time.Since(start).Microseconds())/1000, relL2(out.Data, want))
	}
}

var bench struct {
	once sync.Once
	m    *Model
	err  error
}

func benchModel(dir string) (*Model, error) {
	bench.once.Do(func() {
		cpu, err := kernels.NewCPU(kernels.CPUOptions{ConstWeights: true})
		if err != nil {
			bench.err = err
			return
		}
		bench.m, _, bench.err = Load[[]float32](filepath.Join(dir, "model.pt"), "", cpu)
	})
	return bench.m, bench.err
}

// readNPYFile reads any numeric .npy as float32 values.
func readNPYFile(path string) ([]float32, error) {
	a, err := npy.ReadFile(path)
	if err != nil {
		return nil, err
	}
	return a.Float32s(), nil
}
