package train_test

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/ddpm-go/ddpm/cuda"
	"github.com/ddpm-go/ddpm/kernels"
	"github.com/ddpm-go/ddpm/train"
	"github.com/ddpm-go/ddpm/unet"
	"github.com/ddpm-go/ddpm/weights"
)

// overflowOps is the CPU with an injected gradient overflow: the
// injectAt-th unscaling of the gradients (an Axpby of the whole gradient
// buffer in place with beta 0) leaves +Inf in its first value, as an fp16
// GEMM whose scaled inputs passed 65504 would.
type overflowOps struct {
	*kernels.CPU
	injectAt, calls int
}

func (o *overflowOps) Axpby(y []float32, alpha float32, x []float32, beta float32, n int) {
	o.CPU.Axpby(y, alpha, x, beta, n)
	if beta == 0 && n > 1000 && &y[0] == &x[0] {
		o.calls++
		if o.calls == o.injectAt {
			y[0] = float32(math.Inf(1))
		}
	}
}

// scaledTrainer is the tiny UNet's trainer on ops with loss scaling.
func scaledTrainer(t *testing.T, ops kernels.Ops[[]float32], dir string, steps int, ls train.LossScale) *train.Trainer[[]float32] {
	net, err := unet.NewOn[[]float32](tinyConfig(), ops, 3)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(net.Close)
	tr := configure(t, &train.Trainer[[]float32]{Net: net}, dir, steps)
	tr.Options.LossScale = ls
	return tr
}

func readCheckpoint(t *testing.T, dir string) *weights.Checkpoint {
	t.Helper()
	c, err := weights.ReadCheckpoint(filepath.Join(dir, "checkpoint.safetensors"))
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// tensorDiff describes the first place where two tensor maps differ in
// their bits (a tensor missing or of another size, or an element and
// both values), or returns "" when they hold the same bits.
func tensorDiff(a, b map[string]weights.Tensor) string {
	if len(a) != len(b) {
		return fmt.Sprintf("%d tensors against %d", len(a), len(b))
	}
	for _, k := range slices.Sorted(maps.Keys(a)) {
		ta, tb := a[k], b[k]
		if len(ta.Data) != len(tb.Data) {
			return fmt.Sprintf("%s: %d values against %d", k, len(ta.Data), len(tb.Data))
		}
		for i := range ta.Data {
			if math.Float32bits(ta.Data[i]) != math.Float32bits(tb.Data[i]) {
				return fmt.Sprintf("%s[%d]: %v against %v", k, i, ta.Data[i], tb.Data[i])
			}
		}
	}
	return ""
}

// TestLossScalingExact: scaling by a power of two is exact in float32, so
// 3 steps with loss scaling give the weights, optimiser state and logged
// losses of 3 steps without.
func TestLossScalingExact(t *testing.T) {
	plain, scaled := t.TempDir(), t.TempDir()
	if err := scaledTrainer(t, newCPU(t), plain, 3, train.LossScale{}).Run(context.Background(), false); err != nil {
		t.Fatal(err)
	}
	if err := scaledTrainer(t, newCPU(t), scaled, 3, train.LossScale{Enabled: true, Init: 1024}).Run(context.Background(), false); err != nil {
		t.Fatal(err)
	}
	a, b := readCheckpoint(t, plain), readCheckpoint(t, scaled)
	for name, pair := range map[string][2]map[string]weights.Tensor{"ema": {a.Tensors, b.Tensors}, "raw": {a.Raw, b.Raw},
		"adam_m": {a.AdamM, b.AdamM}, "adam_v": {a.AdamV, b.AdamV}} {
		if d := tensorDiff(pair[0], pair[1]); d != "" {
			t.Errorf("%s differs with loss scaling: %s", name, d)
		}
	}
	_, lp := logLosses(t, plain)
	_, ls := logLosses(t, scaled)
	for i := range lp {
		if lp[i] != ls[i] {
			t.Errorf("step %d: logged loss %v with scaling, %v without", i+1, ls[i], lp[i])
		}
	}
}

// TestLossScalingOverflow injects an overflow into step 3's gradients
// (scale 1024, growth after 2 good steps): step 3 is skipped, leaving
// the weights, Adam moments and EMA of step 2 bit for bit; the scale goes
// 1024 -> 2048 (after steps 1, 2) -> 1024 (the overflow) -> 2048 (after
// steps 4, 5), and the checkpoint keeps it for a resume.
func TestLossScalingOverflow(t *testing.T) {
	ls := train.LossScale{Enabled: true, Init: 1024, GrowthInterval: 2}
	two, three, five := t.TempDir(), t.TempDir(), t.TempDir()
	if err := scaledTrainer(t, newCPU(t), two, 2, ls).Run(context.Background(), false); err != nil {
		t.Fatal(err)
	}
	tr3 := scaledTrainer(t, &overflowOps{CPU: newCPU(t), injectAt: 3}, three, 3, ls)
	if err := tr3.Run(context.Background(), false); err != nil {
		t.Fatalf("an overflow the scaler skips must not stop training: %v", err)
	}
	if s, skipped := tr3.LossScaleNow(); s != 1024 || skipped != 1 {
		t.Errorf("after the overflow: scale %v, %d skipped; want 1024, 1", s, skipped)
	}
	a, b := readCheckpoint(t, two), readCheckpoint(t, three)
	for name, pair := range map[string][2]map[string]weights.Tensor{"ema": {a.Tensors, b.Tensors}, "raw": {a.Raw, b.Raw},
		"adam_m": {a.AdamM, b.AdamM}, "adam_v": {a.AdamV, b.AdamV}} {
		if d := tensorDiff(pair[0], pair[1]); d != "" {
			t.Errorf("%s changed in the skipped step: %s", name, d)
		}
	}
	var st struct {
		Scaler struct {
			Scale   float64 `json:"scale"`
			Good    int     `json:"good"`
			Skipped int     `json:"skipped"`
		} `json:"loss_scaler"`
	}
	if err := json.Unmarshal(b.TrainState, &st); err != nil || st.Scaler.Scale != 1024 || st.Scaler.Skipped != 1 {
		t.Errorf("checkpoint train state %s: want loss_scaler scale 1024, skipped 1 (%v)", b.TrainState, err)
	}
	tr5 := scaledTrainer(t, &overflowOps{CPU: newCPU(t), injectAt: 3}, five, 5, ls)
	if err := tr5.Run(context.Background(), false); err != nil {
		t.Fatal(err)
	}
	if s, skipped := tr5.LossScaleNow(); s != 2048 || skipped != 1 {
		t.Errorf("after 5 steps: scale %v, %d skipped; want 2048, 1", s, skipped)
	}
	log := readLog(t, five)
	if !strings.Contains(log, `"loss_scale":2048`) || !strings.Contains(log, `"skipped_steps":1`) {
		t.Errorf("log.jsonl lacks the scale:\n%s", log)
	}
}

func TestLossScaleValidate(t *testing.T) {
	for _, tc := range []struct {
		ls   train.LossScale
		want string
	}{
		{train.LossScale{Enabled: true, Init: 1000}, "loss_scale.init = 1000: must be a power of two"},
		{train.LossScale{Enabled: true, Init: -2}, "loss_scale.init = -2"},
		{train.LossScale{Enabled: true, GrowthInterval: -1}, "loss_scale.growth_interval = -1"},
	} {
		o := train.DefaultOptions()
		o.LossScale = tc.ls
		if err := o.Validate(); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("Validate(%+v) = %v, want %q", tc.ls, err, tc.want)
		}
	}
	o := train.DefaultOptions()
	o.LossScale = train.LossScale{Enabled: true, Init: 0.5}
	if err := o.Validate(); err != nil {
		t.Errorf("Init 0.5: %v", err)
	}
}

func readLog(t *testing.T, dir string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(dir, "log.jsonl"))
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// TestGPUFP16LossScaling trains 3 steps of the tiny UNet on cuda.Device
// (a GPU or the emulator, which rounds GEMM inputs to half) in fp16 with
// loss scaling: every logged loss is within 20 unit roundoffs (relative)
// of the fp32 CPU run's, and no step is skipped.
func TestGPUFP16LossScaling(t *testing.T) {
	const steps = 3
	cpuDir := t.TempDir()
	if err := newTrainer(t, cpuDir, steps).Run(context.Background(), false); err != nil {
		t.Fatal(err)
	}
	_, want := logLosses(t, cpuDir)
	for _, prec := range []string{"fp16"} {
		t.Run(prec, func(t *testing.T) {
			gpu, err := cuda.Open(0, cuda.Options{Precision: prec})
			if err != nil {
				t.Skipf("no GPU or emulator: %v", err)
			}
			defer gpu.Close()
			net, err := unet.NewOn[cuda.Ptr](tinyConfig(), gpu, 3)
			if err != nil {
				t.Fatal(err)
			}
			defer net.Close()
			dir := t.TempDir()
			tr := configure(t, &train.Trainer[cuda.Ptr]{Net: net}, dir, steps)
			tr.Options.LossScale.Enabled = prec == "fp16"
			if err := tr.Run(context.Background(), false); err != nil {
				t.Fatal(err)
			}
			_, got := logLosses(t, dir)
			tol := 20 * gpu.Precision().UnitRoundoff()
			for i := range want {
				if math.Abs(got[i]-want[i]) > tol*math.Abs(want[i]) {
					t.Errorf("step %d: %s loss %.7g, CPU fp32 %.7g (tolerance %.2g relative)", i+1, prec, got[i], want[i], tol)
				}
			}
			if s, skipped := tr.LossScaleNow(); skipped != 0 {
				t.Errorf("%d steps skipped (scale %v)", skipped, s)
			}
			t.Logf("%s losses %v, CPU fp32 %v", prec, got, want)
		})
	}
}
