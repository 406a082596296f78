package dist

import (
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"sort"
	"strings"
	"time"
	"unsafe"

	"github.com/ebitengine/purego"
)

// nccl.h constants.
const (
	ncclUniqueIDBytes = 128 // NCCL_UNIQUE_ID_BYTES
	ncclFloat32       = 7   // ncclDataType_t: Int8, Uint8, Int32, Uint32, Int64, Uint64, Float16, Float32
	ncclSum           = 0   // ncclRedOp_t
)

// NCCLID is NCCL's ncclUniqueId: rank 0 creates it (ncclGetUniqueId) and
// every rank passes the same bytes to ncclCommInitRank.
type NCCLID [ncclUniqueIDBytes]byte

// ncclUniqueID mirrors `typedef struct { char internal[128]; } ncclUniqueId`,
// which ncclCommInitRank takes by value (purego passes it as C does: on
// the stack on amd64, by reference on arm64).
type ncclUniqueID struct {
	internal NCCLID
}

// NCCL is an opened libnccl.so.2 (NVIDIA's collective library for GPUs),
// bound at run time with purego like cuBLAS: no cgo, no NCCL headers at
// build time. It holds no communicator; NewComm makes one.
type NCCL struct {
	path    string
	version int // ncclGetVersion's code, e.g. 22703 for 2.27.3

	getUniqueID, allReduce, commDestroy, getVersion uintptr
	commAbort                                       uintptr // optional (NCCL >= 2.2)

	// Bound with purego.RegisterFunc: a struct argument by value, and C
	// strings copied into Go strings.
	commInitRank   func(comm *uintptr, nranks int32, id ncclUniqueID, rank int32) int32
	getErrorString func(rc int32) string
	getLastError   func(comm uintptr) string // nil before NCCL 2.13
}

// ncclCandidates lists where libnccl is looked for: $DDPM_LIBNCCL alone
// when set; else the soname (dlopen searches LD_LIBRARY_PATH and the
// ld.so cache), $NCCL_HOME, $CUDA_HOME and $CUDA_PATH, the CUDA toolkit,
// the distributions' library directories and the nvidia-nccl pip wheels
// that a PyTorch install brings.
func ncclCandidates(getenv func(string) string) []string {
	if p := getenv("DDPM_LIBNCCL"); p != "" {
		return []string{p}
	}
	const name = "libnccl.so.2"
	out := []string{name}
	var dirs []string
	for _, env := range []string{"NCCL_HOME", "CUDA_HOME", "CUDA_PATH"} {
		if h := getenv(env); h != "" {
			dirs = append(dirs, filepath.Join(h, "lib64"), filepath.Join(h, "lib"))
		}
	}
	dirs = append(dirs, "/usr/local/cuda/lib64", "/usr/local/cuda/targets/x86_64-linux/lib",
		"/usr/lib/x86_64-linux-gnu", "/usr/lib/aarch64-linux-gnu", "/usr/lib64")
	for _, pat := range []string{
		"/usr/local/lib/python3*/dist-packages/nvidia/nccl/lib",
		"/usr/local/lib/python3*/site-packages/nvidia/nccl/lib",
		"/usr/lib/python3*/dist-packages/nvidia/nccl/lib",
		"/opt/conda/lib/python3*/site-packages/nvidia/nccl/lib",
		"/opt/conda/lib",
	} {
		m, _ := filepath.Glob(pat)
		sort.Sort(sort.Reverse(sort.StringSlice(m))) // newest Python first
		dirs = append(dirs, m...)
	}
	if h := getenv("HOME"); h != "" {
		m, _ := filepath.Glob(filepath.Join(h, ".local/lib/python3*/site-packages/nvidia/nccl/lib"))
		dirs = append(dirs, m...)
	}
	for _, d := range dirs {
		out = append(out, filepath.Join(d, name))
	}
	return out
}

// OpenNCCL opens libnccl: path when not empty (a path or a name for
// dlopen), else the first of $DDPM_LIBNCCL or the usual places that loads.
// A missing library is an error wrapping ErrNoNCCL that names every path
// tried; the caller then stays on MPI (or on one GPU). Opening NCCL makes
// no CUDA call.
func OpenNCCL(path string) (*NCCL, error) {
	cands := []string{path}
	if path == "" {
		cands = ncclCandidates(os.Getenv)
	}
	var lib uintptr
	var tried []string
	for _, p := range cands {
		if strings.Contains(p, "/") {
			if _, err := os.Stat(p); err != nil {
				tried = append(tried, p+" (absent)")
				continue
			}
		}
		h, err := purego.Dlopen(p, purego.RTLD_NOW|purego.RTLD_GLOBAL)
		if err == nil {
			lib, path = h, p
			break
		}
		tried = append(tried, fmt.Sprintf("%s (%v)", p, err))
	}
	if lib == 0 {
		return nil, fmt.Errorf("%w: tried %s (set DDPM_LIBNCCL, CUDA_HOME or LD_LIBRARY_PATH)", ErrNoNCCL, strings.Join(tried, ", "))
	}
	n := &NCCL{path: path}
	for _, s := range []struct {
		p    *uintptr
		name string
		opt  bool
	}{
		{&n.getUniqueID, "ncclGetUniqueId", false},
		{&n.allReduce, "ncclAllReduce", false},
		{&n.commDestroy, "ncclCommDestroy", false},
		{&n.getVersion, "ncclGetVersion", false},
		{&n.commAbort, "ncclCommAbort", true},
	} {
		a, err := purego.Dlsym(lib, s.name)
		if err != nil {
			if s.opt {
				continue
			}
			return nil, fmt.Errorf("%w: %s lacks %s: %v", ErrNoNCCL, path, s.name, err)
		}
		*s.p = a
	}
	for _, s := range []struct {
		fptr any
		name string
	}{
		{&n.commInitRank, "ncclCommInitRank"},
		{&n.getErrorString, "ncclGetErrorString"},
	} {
		a, err := purego.Dlsym(lib, s.name)
		if err != nil {
			return nil, fmt.Errorf("%w: %s lacks %s: %v", ErrNoNCCL, path, s.name, err)
		}
		purego.RegisterFunc(s.fptr, a)
	}
	if a, err := purego.Dlsym(lib, "ncclGetLastError"); err == nil { // NCCL >= 2.13
		purego.RegisterFunc(&n.getLastError, a)
	}
	var pn runtime.Pinner
	defer pn.Unpin()
	v := pinned[int32](&pn)
	if err := n.check("ncclGetVersion", 0, n.call(n.getVersion, uintptr(unsafe.Pointer(v)))); err != nil {
		return nil, fmt.Errorf("%w: %s: %v", ErrNoNCCL, path, err)
	}
	n.version = int(*v)
	return n, nil
}

// Version is the library's version, e.g. "2.27.3".
func (n *NCCL) Version() string {
	v := n.version
	if v >= 10000 { // NCCL_VERSION(X,Y,Z) = X*10000 + Y*100 + Z since 2.9
		return fmt.Sprintf("%d.%d.%d", v/10000, v/100%100, v%100)
	}
	return fmt.Sprintf("%d.%d.%d", v/1000, v/100%10, v%100) // X*1000 + Y*100 + Z before
}

// String names the library and its version for logs.
func (n *NCCL) String() string { return fmt.Sprintf("%s (NCCL %s)", n.path, n.Version()) }

func (n *NCCL) call(fn uintptr, args ...uintptr) int {
	r, _, _ := purego.SyscallN(fn, args...)
	return int(int32(r))
}

// check turns a non-zero ncclResult_t into an *NCCLError with
// ncclGetErrorString's text and, when comm is set and the library has it,
// ncclGetLastError's detail.
func (n *NCCL) check(op string, comm uintptr, rc int) error {
	if rc == 0 {
		return nil
	}
	e := &NCCLError{Op: op, Code: rc, Text: n.getErrorString(int32(rc))}
	if n.getLastError != nil {
		if last := n.getLastError(comm); last != "" {
			e.Text += " (" + last + ")"
		}
	}
	return e
}

// UniqueID calls ncclGetUniqueId: call it on one rank only (ExchangeID
// does) and pass the result to every rank.
func (n *NCCL) UniqueID() (NCCLID, error) {
	var pn runtime.Pinner
	defer pn.Unpin()
	id := pinned[NCCLID](&pn)
	if err := n.check("ncclGetUniqueId", 0, n.call(n.getUniqueID, uintptr(unsafe.Pointer(id)))); err != nil {
		return NCCLID{}, err
	}
	return *id, nil
}

// ExchangeID gives every rank of c the same id: rank 0 calls gen and
// broadcasts the result over c (MPI). When gen fails on rank 0, a status
// byte sent with the id makes every rank return an error, so none waits
// in ncclCommInitRank for a communicator that will never form. It is a
// collective on c.
func ExchangeID(c Comm, gen func() (NCCLID, error)) (NCCLID, error) {
	var msg [1 + ncclUniqueIDBytes]byte // status (1 = ok), then the id
	var genErr error
	if c.Rank() == 0 {
		id, err := gen()
		if err != nil {
			genErr = err
		} else {
			msg[0] = 1
			copy(msg[1:], id[:])
		}
	}
	if err := c.Broadcast(msg[:], 0); err != nil {
		return NCCLID{}, fmt.Errorf("dist: broadcast the NCCL id: %w", err)
	}
	if genErr != nil {
		return NCCLID{}, fmt.Errorf("dist: rank 0: create the NCCL id: %w", genErr)
	}
	if msg[0] != 1 {
		return NCCLID{}, fmt.Errorf("dist: rank %d: rank 0 could not create the NCCL id (see its message)", c.Rank())
	}
	var id NCCLID
	copy(id[:], msg[1:])
	return id, nil
}

// NCCLComm is an NCCL communicator over the same ranks as the Comm it was
// made from, one CUDA device per rank. Use it from one goroutine at a
// time: NCCL operations on a communicator must be queued in the same order
// on every rank.
type NCCLComm struct {
	lib        *NCCL
	comm       uintptr // ncclComm_t
	rank, size int
}

// NewComm creates the NCCL communicator of c's ranks: rank 0's unique id
// travels over c (ExchangeID), then every rank calls ncclCommInitRank,
// which blocks until all have joined. It is a collective on c.
//
// NCCL binds the communicator to the CUDA device that is current on the
// calling OS thread: call NewComm from a goroutine locked to its thread
// (runtime.LockOSThread) with the device's context current, one device
// per rank on a node (Launch.LocalRank picks it). When timeout is
// positive and ncclCommInitRank has not returned by then, the job is
// aborted through c (exit status ExitTimeout), with a message naming the
// rank.
func (n *NCCL) NewComm(c Comm, timeout time.Duration) (*NCCLComm, error) {
	id, err := ExchangeID(c, n.UniqueID)
	if err != nil {
		return nil, err
	}
	if timeout > 0 {
		t := time.AfterFunc(timeout, func() {
			fmt.Fprintf(os.Stderr, "dist: rank %d of %d: ncclCommInitRank did not complete within %v; aborting the job with exit status %d\n",
				c.Rank(), c.Size(), timeout, ExitTimeout)
			c.Abort(ExitTimeout)
		})
		defer t.Stop()
	}
	return n.initRank(id, c.Size(), c.Rank())
}

// initRank calls ncclCommInitRank(&comm, size, id, rank).
func (n *NCCL) initRank(id NCCLID, size, rank int) (*NCCLComm, error) {
	h := new(uintptr)
	rc := n.commInitRank(h, int32(size), ncclUniqueID{internal: id}, int32(rank))
	if err := n.check("ncclCommInitRank", 0, int(rc)); err != nil {
		return nil, fmt.Errorf("dist: rank %d of %d: %w", rank, size, err)
	}
	return &NCCLComm{lib: n, comm: *h, rank: rank, size: size}, nil
}

// Rank is this rank's index in the communicator.
func (g *NCCLComm) Rank() int { return g.rank }

// Size is the number of ranks.
func (g *NCCLComm) Size() int { return g.size }

// AllReduceSum queues, on stream (a CUstream; 0 is the legacy default
// stream), the in-place sum over all ranks of count float32 values at the
// device address ptr (a CUdeviceptr). It returns once the work is queued:
// synchronise the stream before reading the result on the host. Every
// rank queues the same counts in the same order.
func (g *NCCLComm) AllReduceSum(ptr uintptr, count int, stream uintptr) error {
	if g.comm == 0 {
		return fmt.Errorf("dist: ncclAllReduce: %w", ErrClosed)
	}
	if count < 0 {
		return fmt.Errorf("dist: ncclAllReduce: count %d < 0", count)
	}
	if count == 0 {
		return nil
	}
	rc := g.lib.call(g.lib.allReduce, ptr, ptr, uintptr(count), ncclFloat32, ncclSum, g.comm, stream)
	if err := g.lib.check("ncclAllReduce", g.comm, rc); err != nil {
		return fmt.Errorf("dist: rank %d: all-reduce of %d values: %w", g.rank, count, err)
	}
	return nil
}

// Abort frees the communicator without waiting for queued work
// (ncclCommAbort, or ncclCommDestroy on libraries without it); use it
// after a failure. Later calls do nothing.
func (g *NCCLComm) Abort() error {
	if g.comm == 0 {
		return nil
	}
	fn, op := g.lib.commAbort, "ncclCommAbort"
	if fn == 0 {
		fn, op = g.lib.commDestroy, "ncclCommDestroy"
	}
	rc := g.lib.call(fn, g.comm)
	g.comm = 0
	return g.lib.check(op, 0, rc)
}

// Close frees the communicator (ncclCommDestroy, which waits for queued
// operations). Later calls do nothing.
func (g *NCCLComm) Close() error {
	if g.comm == 0 {
		return nil
	}
	rc := g.lib.call(g.lib.commDestroy, g.comm)
	g.comm = 0
	return g.lib.check("ncclCommDestroy", 0, rc)
}
