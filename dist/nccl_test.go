package dist

import (
	"errors"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"unsafe"

	"github.com/ebitengine/purego"
)

func TestNCCLCandidates(t *testing.T) {
	if got := ncclCandidates(envMap("DDPM_LIBNCCL=/x/libnccl.so.2", "CUDA_HOME=/cuda")); len(got) != 1 || got[0] != "/x/libnccl.so.2" {
		t.Errorf("with DDPM_LIBNCCL: %v, want it alone", got)
	}
	got := ncclCandidates(envMap("CUDA_HOME=/cuda", "NCCL_HOME=/nccl"))
	for _, want := range []string{"libnccl.so.2", "/nccl/lib/libnccl.so.2", "/cuda/lib64/libnccl.so.2",
		"/usr/local/cuda/lib64/libnccl.so.2", "/usr/lib/x86_64-linux-gnu/libnccl.so.2"} {
		if !contains(got, want) {
			t.Errorf("candidates lack %s: %v", want, got)
		}
	}
	if got[0] != "libnccl.so.2" {
		t.Errorf("the soname (searched by dlopen through LD_LIBRARY_PATH) should come first: %v", got)
	}
}

func TestOpenNCCLAbsent(t *testing.T) {
	missing := filepath.Join(t.TempDir(), "libnccl.so.2")
	_, err := OpenNCCL(missing)
	if !errors.Is(err, ErrNoNCCL) || !strings.Contains(err.Error(), missing) {
		t.Fatalf("OpenNCCL(%s) = %v, want ErrNoNCCL naming the path", missing, err)
	}
	// The search: $DDPM_LIBNCCL alone when set, else the usual places.
	t.Setenv("DDPM_LIBNCCL", missing)
	if _, err := OpenNCCL(""); !errors.Is(err, ErrNoNCCL) || !strings.Contains(err.Error(), "tried "+missing+" (absent) (") {
		t.Errorf("OpenNCCL with DDPM_LIBNCCL=%s: %v, want ErrNoNCCL naming only that path", missing, err)
	}
	t.Setenv("DDPM_LIBNCCL", "")
	if n, err := OpenNCCL(""); err == nil {
		t.Logf("this machine has NCCL: %v", n)
	} else if !errors.Is(err, ErrNoNCCL) || !strings.Contains(err.Error(), "/usr/local/cuda/lib64/libnccl.so.2") {
		t.Errorf("OpenNCCL(\"\") without NCCL = %v, want ErrNoNCCL naming the paths tried", err)
	}
	_, err = OpenNCCL("libm.so.6")
	if !errors.Is(err, ErrNoNCCL) || !strings.Contains(err.Error(), "lacks ncclGetUniqueId") {
		t.Fatalf("OpenNCCL(libm) = %v, want ErrNoNCCL naming the missing symbol", err)
	}
}

// fakeProbes reads what testdata/fakenccl.c last received.
type fakeProbes struct {
	lastInit      func(id *NCCLID, nranks, rank *int32)
	lastAllReduce func(send, recv *uintptr, count *uint64, typ, op *int32, stream *uintptr)
}

func openFakeNCCL(t *testing.T) (*NCCL, fakeProbes) {
	t.Helper()
	so := buildFake(t, "fakenccl")
	n, err := OpenNCCL(so)
	if err != nil {
		t.Fatalf("OpenNCCL(fake): %v", err)
	}
	h, err := purego.Dlopen(so, purego.RTLD_NOW|purego.RTLD_GLOBAL)
	if err != nil {
		t.Fatal(err)
	}
	var p fakeProbes
	purego.RegisterLibFunc(&p.lastInit, h, "fake_last_init")
	purego.RegisterLibFunc(&p.lastAllReduce, h, "fake_last_allreduce")
	return n, p
}

// TestNCCLBindingsOnFake checks, without a GPU, that every NCCL argument
// reaches C where nccl.h puts it.
func TestNCCLBindingsOnFake(t *testing.T) {
	n, probe := openFakeNCCL(t)
	if n.Version() != "2.27.3" || !strings.Contains(n.String(), "libfakenccl.so") {
		t.Errorf("version %q, String %q", n.Version(), n.String())
	}
	id, err := n.UniqueID()
	if err != nil {
		t.Fatal(err)
	}
	for i, b := range id {
		if b != byte(i*7+3) {
			t.Fatalf("UniqueID byte %d = %d, want %d", i, b, byte(i*7+3))
		}
	}

	// NewComm over a one-rank Comm: the id goes to C by value, whole.
	g, err := n.NewComm(Single{}, 0)
	if err != nil {
		t.Fatalf("NewComm: %v", err)
	}
	var got NCCLID
	var nranks, rank int32
	probe.lastInit(&got, &nranks, &rank)
	if got != id || nranks != 1 || rank != 0 || g.Rank() != 0 || g.Size() != 1 {
		t.Fatalf("ncclCommInitRank got id[0:4]=%v nranks %d rank %d, want %v, 1, 0", got[:4], nranks, rank, id[:4])
	}

	// A third rank of three, with another id.
	id2 := NCCLID{0: 0xAB, 64: 0xCD, 127: 0xEF}
	g3, err := n.initRank(id2, 3, 2)
	if err != nil {
		t.Fatalf("initRank: %v", err)
	}
	probe.lastInit(&got, &nranks, &rank)
	if got != id2 || nranks != 3 || rank != 2 {
		t.Fatalf("ncclCommInitRank got id %v..%v nranks %d rank %d, want 3 ranks, rank 2", got[0], got[127], nranks, rank)
	}

	// The fake's sum over 3 ranks multiplies by 3; sub-slices go by address.
	buf := []float32{9, 1, 2, 3, 9}
	var pn runtime.Pinner
	pn.Pin(&buf[0])
	defer pn.Unpin()
	ptr := uintptr(unsafe.Pointer(&buf[1]))
	const stream = uintptr(0x5EED)
	if err := g3.AllReduceSum(ptr, 3, stream); err != nil {
		t.Fatalf("AllReduceSum: %v", err)
	}
	if want := []float32{9, 3, 6, 9, 9}; !equal(buf, want) {
		t.Errorf("after AllReduceSum: %v, want %v", buf, want)
	}
	var send, recv, st uintptr
	var count uint64
	var typ, op int32
	probe.lastAllReduce(&send, &recv, &count, &typ, &op, &st)
	if send != ptr || recv != ptr || count != 3 || typ != ncclFloat32 || op != ncclSum || st != stream {
		t.Errorf("ncclAllReduce got send %#x recv %#x count %d type %d op %d stream %#x; want in place at %#x, 3, float32 (7), sum (0), %#x",
			send, recv, count, typ, op, st, ptr, stream)
	}
	if err := g3.AllReduceSum(ptr, 0, stream); err != nil {
		t.Errorf("AllReduceSum of 0 values: %v", err)
	}
	if err := g3.AllReduceSum(ptr, -1, stream); err == nil {
		t.Errorf("AllReduceSum of -1 values: no error")
	}

	// Errors carry NCCL's name, its text and ncclGetLastError's detail.
	_, err = n.initRank(id, 2, 5)
	var ne *NCCLError
	if !errors.As(err, &ne) || ne.Code != 4 || !strings.Contains(err.Error(), "ncclInvalidArgument (4): invalid argument (fake) (fake detail)") {
		t.Errorf("initRank(rank 5 of 2) = %v, want an *NCCLError with code 4 and the fake's text", err)
	}

	for _, c := range []*NCCLComm{g, g3} {
		if err := c.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
		if err := c.Close(); err != nil {
			t.Errorf("second Close: %v", err)
		}
	}
	if err := g3.AllReduceSum(ptr, 3, stream); !errors.Is(err, ErrClosed) {
		t.Errorf("AllReduceSum after Close = %v, want ErrClosed", err)
	}
	g4, err := n.initRank(id, 1, 0)
	if err != nil {
		t.Fatal(err)
	}
	if err := g4.Abort(); err != nil {
		t.Errorf("Abort: %v", err)
	}
}

func equal(a, b []float32) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}
