package kernels

import (
	"math"
	"math/rand/v2"
	"os"
	"runtime"
	"strings"
	"testing"
	"unsafe"

	"golang.org/x/sys/cpu"
)

// inferenceConvCases are shapes where the inference CPU picks oneDNN's
// Winograd kernel (winogradFaster) and, with one image, the direct one.
var inferenceConvCases = []ConvDims{
	{N: 4, C: 64, H: 16, W: 16, K: 64, R: 3, S: 3, StrideH: 1, StrideW: 1, PadTop: 1, PadLeft: 1, PadBottom: 1, PadRight: 1},
	{N: 4, C: 96, H: 16, W: 24, K: 80, R: 3, S: 3, StrideH: 1, StrideW: 1, PadTop: 1, PadLeft: 1, PadBottom: 1, PadRight: 1},
	{N: 4, C: 32, H: 16, W: 32, K: 48, R: 3, S: 3, StrideH: 1, StrideW: 1, PadTop: 1, PadLeft: 1, PadBottom: 1, PadRight: 1},
	{N: 1, C: 64, H: 8, W: 8, K: 64, R: 3, S: 3, StrideH: 1, StrideW: 1, PadTop: 1, PadLeft: 1, PadBottom: 1, PadRight: 1},
}

// winogradAvailable reports whether oneDNN 2.6 has Winograd kernels for
// this CPU (AVX-512 core only) and is not told to stay below that
// (DNNL_MAX_CPU_ISA).
func winogradAvailable() bool {
	isa := strings.ToUpper(os.Getenv("DNNL_MAX_CPU_ISA"))
	if isa != "" && !strings.HasPrefix(isa, "AVX512_CORE") && isa != "ALL" && !strings.HasPrefix(isa, "AVX10") && !strings.HasPrefix(isa, "AMX") {
		return false
	}
	return cpu.X86.HasAVX512F && cpu.X86.HasAVX512BW && cpu.X86.HasAVX512DQ && cpu.X86.HasAVX512VL
}

// relL2 is ||got - want|| / ||want||.
func relL2(got []float32, want []float64) float64 {
	var num, den float64
	for i, w := range want {
		d := float64(got[i]) - w
		num += d * d
		den += w * w
	}
	return notNaN(math.Sqrt(num / den))
}

// notNaN is e, or +Inf where e is NaN (a NaN in the output under test), so
// that no "e > tol" check passes a NaN.
func notNaN(e float64) float64 {
	if math.IsNaN(e) {
		return math.Inf(1)
	}
	return e
}

// checkInferenceConv runs forward and backward data on c for every
// inference case and compares them with the float64 twin: the forward
// within fwdTol (relative L2, and per element against the output's RMS),
// the backward data, always fp32 direct, within 1e-4.
func checkInferenceConv(t *testing.T, c *CPU, fwdTol float64, wantImpl string) (wino int) {
	r := rand.New(rand.NewPCG(41, 42))
	for ci, d := range inferenceConvCases {
		ohw := d.OutH() * d.OutW()
		x, w, b := rnd(r, d.N*d.C*d.H*d.W), rnd(r, d.K*d.C*d.R*d.S), rnd(r, d.K)
		dy := rnd(r, d.N*d.K*ohw)
		y, dx := make([]float32, d.N*d.K*ohw), make([]float32, len(x))
		for rep := 0; rep < 2; rep++ { // the second run uses the cached weights
			c.Conv2D(y, x, w, b, d)
		}
		c.Conv2DBackwardData(dx, dy, w, d)
		if err := c.Sync(); err != nil {
			t.Fatalf("case %d: %v", ci, err)
		}
		want := refConv(f64(x), f64(w), f64(b), d)
		e := relL2(y, want)
		var rms float64
		for _, v := range want {
			rms += v * v
		}
		rms = math.Sqrt(rms / float64(len(want)))
		if e > fwdTol {
			t.Errorf("case %d %+v: forward relative L2 error %.3g > %.3g", ci, d, e, fwdTol)
		}
		near(t, "y", y, want, 8*fwdTol*rms, 0)
		rdx, _, _ := refConvBack(f64(dy), f64(x), f64(w), d)
		near(t, "dx", dx, rdx, 1e-4, 1e-4)
		p, ok := c.planDNNL(d, passForward)
		if !ok {
			t.Fatalf("case %d: oneDNN rejected the shape", ci)
		}
		cd, _, _ := p.chunk(d, 0)
		impl := c.dconv.get(cd, 0, p.yStride(d), p.omp).impl
		t.Logf("case %d: forward %s, relative L2 error %.3g", ci, impl, e)
		if strings.Contains(impl, "wino") {
			wino++
		}
		if strings.Contains(impl, "wino") != (wantImpl == "wino" && winogradFaster(cd) && winogradAvailable()) {
			t.Errorf("case %d: chunk %+v: implementation %q, winogradFaster %v", ci, cd, impl, winogradFaster(cd))
		}
		if wantImpl == "bf16" && !strings.Contains(impl, "bf16") {
			t.Errorf("case %d: implementation %q, want a bf16 kernel", ci, impl)
		}
	}
	return wino
}

// TestConvWinograd: with ConstWeights, 3x3 convolutions that measured
// faster with oneDNN's Winograd kernels use them, within 2e-6 relative L2
// of the float64 twin (measured: F(4x4, 3x3) 9e-7, F(2x2, 3x3) 3e-7, the
// direct kernel 2e-7).
func TestConvWinograd(t *testing.T) {
	c, err := NewCPU(CPUOptions{BLAS: BLASDNNL, Conv: ConvDNNL, Threads: 2, ConstWeights: true})
	if err != nil {
		t.Skipf("oneDNN not available: %v", err)
	}
	want := 3
	if !winogradAvailable() {
		want = 0
	}
	if n := checkInferenceConv(t, c, 2e-6, "wino"); n != want {
		t.Errorf("%d cases ran the Winograd kernel, want %d", n, want)
	}
}

// TestConvBF16: with BF16 the forward convolutions run oneDNN's bf16
// kernels, within 1e-2 relative L2 of the float64 twin (inputs rounded to
// 8 significant bits), and the backward data pass stays fp32.
func TestConvBF16(t *testing.T) {
	if err := BF16Supported(); err != nil {
		t.Skipf("no bf16 on this CPU: %v", err)
	}
	c, err := NewCPU(CPUOptions{BLAS: BLASDNNL, Conv: ConvDNNL, Threads: 2, ConstWeights: true, BF16: true})
	if err != nil {
		t.Skipf("oneDNN not available: %v", err)
	}
	if !strings.Contains(c.Name(), "bf16") {
		t.Errorf("Name() = %q: want it to say bf16", c.Name())
	}
	checkInferenceConv(t, c, 1e-2, "bf16")
}

// TestBF16Options: BF16 without ConstWeights (training) is refused with a
// message naming what it needs.
func TestBF16Options(t *testing.T) {
	_, err := NewCPU(CPUOptions{BF16: true})
	if err == nil || !strings.Contains(err.Error(), "ConstWeights") {
		t.Fatalf("NewCPU(BF16 without ConstWeights) = %v: want an error naming ConstWeights", err)
	}
	_, err = NewCPU(CPUOptions{BF16: true, ConstWeights: true, Conv: ConvIm2col})
	if BF16Supported() == nil && (err == nil || !strings.Contains(err.Error(), "oneDNN")) {
		t.Fatalf("NewCPU(BF16, im2col) = %v: want an error naming oneDNN", err)
	}
}

// TestPrimitivesPinThreads: the workers' forward-inference primitives of
// one Winograd shape, made on OS threads left with different OpenMP
// counts, still agree on the weights' layout, which they share through
// the weight cache (pinThreads; made under the leftover counts they did
// not, and a run read past the cached weights).
func TestPrimitivesPinThreads(t *testing.T) {
	c, err := NewCPU(CPUOptions{BLAS: BLASDNNL, Conv: ConvDNNL, Threads: 2, ConstWeights: true})
	if err != nil || !winogradAvailable() {
		t.Skipf("oneDNN Winograd kernels not available: %v", err)
	}
	api := c.dconv.api
	if api.ompSetThreads == nil {
		t.Skip("no omp_set_num_threads")
	}
	d := ConvDims{N: 2, C: 32, H: 16, W: 16, K: 48, R: 3, S: 3, StrideH: 1, StrideW: 1, PadTop: 1, PadLeft: 1, PadBottom: 1, PadRight: 1}
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	var layouts []unsafe.Pointer
	for worker, leftover := range []int32{1, 2, 4} {
		api.ompSetThreads(leftover)
		p := c.dconv.get(d, worker, 0, 1)
		if p == nil {
			t.Fatal("oneDNN rejected the shape")
		}
		p.mu.Lock()
		s, err := p.fwdStep(0)
		p.mu.Unlock()
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(p.impl, "wino") {
			t.Skipf("oneDNN picked %q, not a Winograd kernel", p.impl)
		}
		wt := s.tensors[dnnlArgWeights]
		if wt == nil || wt.internalMD == nil {
			t.Fatal("the Winograd primitive reads the weights in the user's layout")
		}
		layouts = append(layouts, wt.internalMD)
	}
	for i := 1; i < len(layouts); i++ {
		if api.mdEqual(layouts[0], layouts[i]) == 0 {
			t.Errorf("worker %d's primitive wants another weights layout than worker 0's", i)
		}
	}
}
