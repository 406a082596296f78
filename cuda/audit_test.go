package cuda

import (
	"errors"
	"fmt"
	"math"
	"os"
	"runtime"
	"strings"
	"testing"

	"github.com/ebitengine/purego"
)

// TestPickPerf checks the cuDNN algorithm choice on Find results: the
// fastest allowed one, or the first deterministic one after it; strict
// FP32 never takes FFT or Winograd; failed and too-large ones are skipped.
func TestPickPerf(t *testing.T) {
	p := func(algo int32, det int32, mem uint64) cudnnPerf {
		return cudnnPerf{algo: algo, determinism: det, memory: mem}
	}
	failed := cudnnPerf{algo: 1, status: 3}
	for _, tc := range []struct {
		name     string
		perf     []cudnnPerf
		dir      int
		prec     Precision
		wantAlgo int32
		wantWhy  string
	}{
		{"fastest deterministic", []cudnnPerf{p(6, 1, 0), p(1, 1, 0)}, 0, TF32, 6, "fastest"},
		{"fp32 skips winograd", []cudnnPerf{p(6, 1, 0), p(1, 1, 0)}, 0, FP32, 1, "fastest"},
		{"fp32 skips fft", []cudnnPerf{p(4, 1, 0), p(5, 1, 0), p(0, 1, 0)}, 0, FP32, 0, "fastest"},
		{"fp32 bwd-filter fft_tiling", []cudnnPerf{p(6, 1, 0), p(3, 1, 0)}, 2, FP32, 3, "fastest"},
		{"first deterministic", []cudnnPerf{p(0, 0, 0), p(1, 1, 0)}, 1, FP32, 1, "first deterministic"},
		{"none deterministic", []cudnnPerf{p(0, 0, 0), p(3, 0, 0)}, 2, TF32, 0, "fastest, none deterministic"},
		{"failed and too big skipped", []cudnnPerf{failed, p(0, 1, 1<<40), p(1, 1, 10)}, 0, BF16, 1, "fastest"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			i, why := pickPerf(tc.perf, tc.dir, 1<<30, tc.prec)
			if i < 0 || tc.perf[i].algo != tc.wantAlgo || why != tc.wantWhy {
				t.Fatalf("pickPerf = %d (%q), want algo %d (%q)", i, why, tc.wantAlgo, tc.wantWhy)
			}
		})
	}
	if i, _ := pickPerf([]cudnnPerf{p(6, 1, 0)}, 0, 1<<30, FP32); i != -1 {
		t.Fatalf("only Winograd in FP32: pickPerf = %d, want -1", i)
	}
}

// TestConvChoicesEmulated: the emulator's Find offers Winograd (fastest,
// deterministic), algorithm 0 (not deterministic) and 1; FP32 must take 1
// as "first deterministic", TF32 Winograd as "fastest", and every run
// uses the math type Find reported (the emulator fails otherwise).
func TestConvChoicesEmulated(t *testing.T) {
	if !emulated {
		t.Skip("needs the emulator's cuDNN")
	}
	for _, tc := range []struct {
		prec, want string
	}{
		{"fp32", "algo 1 math 3: first deterministic"},
		{"tf32", "fwd N3 C5 9x11 K7 3x3/1: algo 6 math 1: fastest"},
		{"fp16", "bwd-data N3 C5 9x11 K7 3x3/1: algo 4 math 1: fastest"},
	} {
		t.Run(tc.prec, func(t *testing.T) {
			d := openTest(t, tc.prec)
			checkOpsMatching(t, d, "Conv2D/3x3")
			checkOpsMatching(t, d, "Conv2DBackwardData/3x3")
			ch := strings.Join(d.ConvChoices(), "\n")
			if !strings.Contains(ch, tc.want) {
				t.Fatalf("ConvChoices:\n%s\nwant a line with %q", ch, tc.want)
			}
			if _, _, fb := d.ConvEngine(); len(fb) > 0 {
				t.Fatalf("fallbacks to im2col: %q", fb)
			}
		})
	}
}

// TestPickCUBLAS: a library whose cublasCreate fails gives way to the
// next candidate; one that does not load is listed and skipped.
func TestPickCUBLAS(t *testing.T) {
	a13, a12 := &cublasAPI{path: "libcublas.so.13"}, &cublasAPI{path: "libcublas.so.12"}
	open := func(p string) (*cublasAPI, error) {
		switch p {
		case "libcublas.so.13", "/usr/local/cuda/lib64/libcublas.so.13":
			return a13, nil
		case "libcublas.so.12":
			return a12, nil
		}
		return nil, fmt.Errorf("%s (not found)", p)
	}
	var created []string
	create := func(a *cublasAPI) (*blasHandle, error) {
		created = append(created, a.path)
		if a == a13 {
			return nil, fmt.Errorf("cublasCreate_v2: %w", BLASStatus(1))
		}
		return &blasHandle{api: a}, nil
	}
	h, tried, err := pickCUBLAS([]string{"libcublas.so.13", "/usr/local/cuda/lib64/libcublas.so.13", "libcublas.so.11", "libcublas.so.12"}, open, create)
	if err != nil || h.api != a12 {
		t.Fatalf("pickCUBLAS = %v, %v; want the .12 library", h, err)
	}
	if strings.Join(created, ",") != "libcublas.so.13,libcublas.so.12" {
		t.Errorf("handles tried on %v: the same library must be tried once", created)
	}
	if len(tried) != 2 || !strings.Contains(tried[0], "CUBLAS_STATUS_NOT_INITIALIZED") || !strings.Contains(tried[1], "not found") {
		t.Errorf("tried = %q", tried)
	}
	if _, _, err := pickCUBLAS([]string{"libcublas.so.13"}, open, create); err == nil ||
		!strings.Contains(err.Error(), "could create a handle") {
		t.Errorf("all failing: error %v", err)
	}
}

// TestNoLibraryMessage: the missing-library error starts with one short
// sentence saying what to set, then lists every path tried.
func TestNoLibraryMessage(t *testing.T) {
	err := error(&libError{sentinel: ErrNoDriver, hint: "set DDPM_LIBCUDA to its path",
		tried: []string{"libcuda.so.1 (cannot open shared object file: No such file or directory)", "/usr/lib64/libcuda.so.1 (not found)"}})
	lines := strings.Split(err.Error(), "\n")
	if lines[0] != "cuda: no NVIDIA driver found (libcuda.so.1); set DDPM_LIBCUDA to its path" {
		t.Errorf("first line %q", lines[0])
	}
	if len(lines) != 4 || !strings.Contains(lines[2], "libcuda.so.1 (cannot open") || !strings.Contains(lines[3], "/usr/lib64") {
		t.Errorf("message:\n%s", err)
	}
	if !errors.Is(err, ErrNoDriver) {
		t.Error("errors.Is(err, ErrNoDriver) = false")
	}
	if got := shortReason(err); got != "no NVIDIA driver found (libcuda.so.1)" {
		t.Errorf("shortReason = %q", got)
	}
	sel := &selectError{flag: "cuda", err: err}
	if first := strings.SplitN(sel.Error(), "\n", 2)[0]; first != "--device cuda: no NVIDIA driver found (libcuda.so.1); set DDPM_LIBCUDA to its path" {
		t.Errorf("Select's first line %q", first)
	}
}

// TestFreeOtherThread: Free makes the context current like every other
// call (the emulator's cuMemFree needs it on the calling thread) and
// returns blocks to the cache after a sticky error too.
func TestFreeOtherThread(t *testing.T) {
	d := openTestWith(t, Options{Precision: "fp32", CacheLimit: 1})
	p := d.Alloc(1000)
	if err := d.Sync(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		runtime.LockOSThread() // a fresh thread: no context current
		defer close(done)
		d.Free(p) // over the cache limit: cuMemFree on this thread
	}()
	<-done
	if err := d.Sync(); err != nil {
		t.Fatalf("Free on another thread: %v", err)
	}
	q := d.Alloc(10)
	d.Slice(0, 0, 1) // a sticky argument error
	d.Free(q)
	if err := d.Sync(); err == nil {
		t.Fatal("no sticky error")
	}
	if st := d.MemStats(); st.InUse != 0 {
		t.Fatalf("MemStats after Free with a sticky error: %+v, want nothing in use", st)
	}
}

// emuCall calls a test hook of the emulator.
func emuCall(t *testing.T, name string, args ...uintptr) uintptr {
	lib, err := purego.Dlopen(os.Getenv("DDPM_LIBCUDA"), purego.RTLD_NOW|purego.RTLD_GLOBAL)
	if err != nil {
		t.Fatal(err)
	}
	f, err := purego.Dlsym(lib, name)
	if err != nil {
		t.Fatal(err)
	}
	r, _, _ := purego.SyscallN(f, args...)
	return r
}

// TestOutOfMemoryReleasesCache: an allocation that fails frees the cached
// blocks, after waiting for the queued work that may still use them (the
// emulator refuses cuMemFree with unsynchronised work), and succeeds.
func TestOutOfMemoryReleasesCache(t *testing.T) {
	if !emulated {
		t.Skip("needs the emulator's memory cap")
	}
	d := openTest(t, "fp32")
	if err := d.Sync(); err != nil {
		t.Fatal(err)
	}
	used := emuCall(t, "ddpm_emu_mem_used")
	emuCall(t, "ddpm_emu_set_mem_limit", used+26<<20)
	defer emuCall(t, "ddpm_emu_set_mem_limit", 0)
	var blocks []Ptr
	for i := 0; i < 6; i++ {
		blocks = append(blocks, d.Alloc(1<<20)) // 4 MiB each
	}
	for _, b := range blocks {
		d.SiLU(b, b, 1024) // queued work on every block
		d.Free(b)
	}
	if st := d.MemStats(); st.Cached < 6*(4<<20) {
		t.Fatalf("MemStats %+v: the blocks should be cached", st)
	}
	big := d.Alloc(5 << 20) // 20 MiB: only fits once the cache is released
	if err := d.Sync(); err != nil || big == 0 {
		t.Fatalf("Alloc after releasing the cache: %v", err)
	}
	if st := d.MemStats(); st.Cached != 0 {
		t.Fatalf("MemStats %+v: cache not released", st)
	}
	d.Free(big)
}

// TestEmbeddingBounds: ids are checked against the logical table (the
// values Alloc was asked for, not its rounded size class), also through
// a Slice of a larger buffer.
func TestEmbeddingBounds(t *testing.T) {
	d := openTest(t, "fp32")
	table := d.Alloc(10 * 33) // 1320 bytes, a 2048-byte class: 15 rows fit the block
	y := d.Alloc(33)
	d.Embedding(y, table, []int{9}, 33)
	if err := d.Sync(); err != nil {
		t.Fatalf("id 9 of 10: %v", err)
	}
	d.Embedding(y, table, []int{12}, 33)
	if err := d.Sync(); err == nil || !strings.Contains(err.Error(), "must be in [0, 10)") {
		t.Fatalf("id 12 of a 10-row table: error %v", err)
	}
	big := d.Alloc(100 * 33)
	d.Embedding(y, d.Slice(big, 90*33, 10*33), []int{10}, 33)
	if err := d.Sync(); err == nil || !strings.Contains(err.Error(), "must be in [0, 10)") {
		t.Fatalf("id 10 past the end of the buffer holding a Slice: error %v", err)
	}
}

// TestTranspose12Grid: more than 65535*32 rows would overflow grid.y.
func TestTranspose12Grid(t *testing.T) {
	d := openTest(t, "fp32")
	i := 65535*32 + 1
	x, y := d.Alloc(i), d.Alloc(i)
	d.Transpose12(y, x, 1, i, 1)
	if err := d.Sync(); err == nil || !strings.Contains(err.Error(), "grid.y") {
		t.Fatalf("Transpose12 with %d rows: error %v", i, err)
	}
}

// TestPrecisionRounding checks each mode's rounding of GEMM inputs
// exactly on the emulator (a GPU's cuBLAS may use wider inputs than the
// compute type allows, so there the values are only logged): x . w with
// x = (1 + 2^-10, 1 + 2^-12, 2^-9) and w = (1, 1, 70000).
func TestPrecisionRounding(t *testing.T) {
	x := []float32{1 + 0x1p-10, 1 + 0x1p-12, 0x1p-9}
	w := []float32{1, 0, 0, 0, 1, 0, 0, 0, 70000}
	big := float32(70000) * 0x1p-9
	for _, tc := range []struct {
		prec string
		want []float32 // y = x w^T, w (3, 3)
	}{
		{"fp32", []float32{1 + 0x1p-10, 1 + 0x1p-12, big}},
		{"tf32", []float32{1 + 0x1p-10, 1, float32(70016) * 0x1p-9}}, // 70000 to 10 mantissa bits: 70016
		{"bf16", []float32{1, 1, float32(70144) * 0x1p-9}},           // 7 bits: 70144
		{"fp16", []float32{1 + 0x1p-10, 1, float32(math.Inf(1))}},    // 70000 > 65504: inf
	} {
		t.Run(tc.prec, func(t *testing.T) {
			d := openTest(t, tc.prec)
			px, pw, py := d.Alloc(3), d.Alloc(9), d.Alloc(3)
			d.Upload(px, x)
			d.Upload(pw, w)
			d.Linear(py, px, pw, 0, 1, 3, 3)
			got := make([]float32, 3)
			d.Download(got, py)
			if err := d.Sync(); err != nil {
				t.Fatal(err)
			}
			if !emulated {
				t.Logf("%s: %v (the emulator gives %v)", tc.prec, got, tc.want)
				return
			}
			if !equal(got, tc.want) {
				t.Fatalf("%s: x w^T = %v, want %v", tc.prec, got, tc.want)
			}
		})
	}
}
