package dist

import (
	"bytes"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"time"
	"unsafe"

	"github.com/ebitengine/purego"
)

// Open MPI's ABI (mpi.h of Open MPI 3.x to 5.x). Handles such as
// MPI_COMM_WORLD are addresses of exported globals (ompi_mpi_comm_world,
// ...), found with dlsym; MPICH and its derivatives use integer handles
// instead, which this binding refuses (ErrNotOpenMPI).
const (
	mpiSuccess          = 0
	mpiThreadSerialized = 2 // enum { SINGLE, FUNNELED, SERIALIZED, MULTIPLE }
	mpiThreadMultiple   = 3
	mpiInPlace          = 1    // #define MPI_IN_PLACE ((void *) 1)
	mpiMaxErrorString   = 256  // MPI_MAX_ERROR_STRING
	mpiMaxLibVersion    = 8192 // >= MPI_MAX_LIBRARY_VERSION_STRING of any implementation
	// maxCount is the largest element count passed in one call: MPI counts
	// are C ints, so longer buffers go in pieces.
	maxCount = 1 << 30
)

// DefaultChunk is the default Options.Chunk: 1Mi float32 values (4 MiB).
const DefaultChunk = 1 << 20

// mpiLib is an opened libmpi: entry points and predefined handles. It is
// immutable once built.
type mpiLib struct {
	path    string
	version string // MPI_Get_library_version, first line

	initThread, initialized, finalized         uintptr
	commRank, commSize, commSetErrhandler      uintptr
	allreduce, bcast, barrier, abort, finalize uintptr
	errorString, getLibraryVersion             uintptr

	// Predefined handles: addresses of Open MPI's globals.
	commWorld, typeFloat, typeByte, opSum, errorsReturn uintptr
}

// mpiCandidates lists where libmpi is looked for: $DDPM_LIBMPI alone when
// set; else Open MPI's soname (found by dlopen through LD_LIBRARY_PATH and
// ld.so.cache), then the prefixes Open MPI and the distributions use.
func mpiCandidates(getenv func(string) string) []string {
	if p := getenv("DDPM_LIBMPI"); p != "" {
		return []string{p}
	}
	const name = "libmpi.so.40" // Open MPI 3.0 to 5.0
	out := []string{name}
	for _, env := range []string{"OPAL_PREFIX", "MPI_HOME", "MPI_ROOT"} {
		if h := getenv(env); h != "" {
			out = append(out, filepath.Join(h, "lib", name), filepath.Join(h, "lib64", name))
		}
	}
	return append(out,
		"/usr/lib/x86_64-linux-gnu/"+name, "/usr/lib/aarch64-linux-gnu/"+name,
		"/usr/lib64/openmpi/lib/"+name, "/usr/lib/x86_64-linux-gnu/openmpi/lib/"+name,
		"/opt/openmpi/lib/"+name, "/usr/local/lib/"+name)
}

// openMPILib opens the first libmpi that loads (path alone when given) and
// binds it. A missing library is ErrNoMPI; a library that is not Open MPI
// is ErrNotOpenMPI.
func openMPILib(path string, getenv func(string) string) (*mpiLib, error) {
	cands := []string{path}
	if path == "" {
		cands = mpiCandidates(getenv)
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
		// RTLD_GLOBAL: Open MPI dlopens its components (mca_*.so), which
		// resolve symbols of libmpi and its dependencies globally.
		h, err := purego.Dlopen(p, purego.RTLD_NOW|purego.RTLD_GLOBAL)
		if err == nil {
			lib, path = h, p
			break
		}
		tried = append(tried, fmt.Sprintf("%s (%v)", p, err))
	}
	if lib == 0 {
		return nil, fmt.Errorf("%w: tried %s (install Open MPI, e.g. Debian's openmpi-bin, or set DDPM_LIBMPI)",
			ErrNoMPI, strings.Join(tried, ", "))
	}
	m := &mpiLib{path: path}
	if sym, err := purego.Dlsym(lib, "MPI_Get_library_version"); err == nil {
		m.getLibraryVersion = sym
		m.version = m.libraryVersion()
	}
	// Open MPI's handles are addresses of these globals; their absence
	// means another implementation (MPICH: integer constants).
	for _, s := range []struct {
		p    *uintptr
		name string
	}{
		{&m.commWorld, "ompi_mpi_comm_world"},
		{&m.typeFloat, "ompi_mpi_float"},
		{&m.typeByte, "ompi_mpi_byte"},
		{&m.opSum, "ompi_mpi_op_sum"},
		{&m.errorsReturn, "ompi_mpi_errors_return"},
	} {
		a, err := purego.Dlsym(lib, s.name)
		if err != nil {
			v := m.version
			if v == "" {
				v = "unknown implementation"
			}
			return nil, fmt.Errorf("%w: %s (%s) lacks %s; package dist binds Open MPI's ABI, where MPI handles are addresses of exported globals (MPICH's are integers)",
				ErrNotOpenMPI, path, v, s.name)
		}
		*s.p = a
	}
	if m.version != "" && !strings.HasPrefix(m.version, "Open MPI") {
		return nil, fmt.Errorf("%w: %s reports %q", ErrNotOpenMPI, path, m.version)
	}
	for _, s := range []struct {
		p    *uintptr
		name string
	}{
		{&m.initThread, "MPI_Init_thread"},
		{&m.initialized, "MPI_Initialized"},
		{&m.finalized, "MPI_Finalized"},
		{&m.commRank, "MPI_Comm_rank"},
		{&m.commSize, "MPI_Comm_size"},
		{&m.commSetErrhandler, "MPI_Comm_set_errhandler"},
		{&m.allreduce, "MPI_Allreduce"},
		{&m.bcast, "MPI_Bcast"},
		{&m.barrier, "MPI_Barrier"},
		{&m.abort, "MPI_Abort"},
		{&m.finalize, "MPI_Finalize"},
		{&m.errorString, "MPI_Error_string"},
	} {
		a, err := purego.Dlsym(lib, s.name)
		if err != nil {
			return nil, fmt.Errorf("%w: %s lacks %s: %v", ErrNoMPI, path, s.name, err)
		}
		*s.p = a
	}
	return m, nil
}

// call invokes an MPI function and returns its int result.
func (m *mpiLib) call(fn uintptr, args ...uintptr) int {
	r, _, _ := purego.SyscallN(fn, args...)
	return int(int32(r))
}

// libraryVersion is MPI_Get_library_version's first line (callable before
// MPI_Init).
func (m *mpiLib) libraryVersion() string {
	var pn runtime.Pinner
	defer pn.Unpin()
	buf := pinned[[mpiMaxLibVersion]byte](&pn)
	n := pinned[int32](&pn)
	if m.call(m.getLibraryVersion, uintptr(unsafe.Pointer(buf)), uintptr(unsafe.Pointer(n))) != mpiSuccess {
		return ""
	}
	s := buf[:max(0, min(int(*n), len(buf)))]
	if i := bytes.IndexByte(s, 0); i >= 0 {
		s = s[:i]
	}
	// "Open MPI v4.1.4, package: Debian OpenMPI, ident: ...": keep the
	// name and version.
	v, _, _ := strings.Cut(string(s), "\n")
	v, _, _ = strings.Cut(v, ",")
	return strings.TrimSpace(v)
}

// pinned returns a new zero T on the heap, pinned by pn, for a C
// out-parameter. A stack variable must never be passed to C as a uintptr:
// the goroutine's stack may move (grow) between the conversion and the
// call. (Pin takes an interface, so p escapes to the heap.)
func pinned[T any](pn *runtime.Pinner) *T {
	p := new(T)
	pn.Pin(p)
	return p
}

// intOut calls fn(args..., &out) for an int out-parameter and returns the
// call's result and out.
func (m *mpiLib) intOut(fn uintptr, args ...uintptr) (int, int) {
	var pn runtime.Pinner
	defer pn.Unpin()
	out := pinned[int32](&pn)
	rc := m.call(fn, append(args, uintptr(unsafe.Pointer(out)))...)
	return rc, int(*out)
}

// fail turns a non-zero return code into an *MPIError with the library's
// description.
func (m *mpiLib) fail(op string, rc int) error {
	if rc == mpiSuccess {
		return nil
	}
	e := &MPIError{Op: op, Code: rc}
	var pn runtime.Pinner
	defer pn.Unpin()
	buf := pinned[[mpiMaxErrorString + 1]byte](&pn)
	n := pinned[int32](&pn)
	if m.call(m.errorString, uintptr(rc), uintptr(unsafe.Pointer(buf)), uintptr(unsafe.Pointer(n))) == mpiSuccess {
		e.Text = string(buf[:max(0, min(int(*n), mpiMaxErrorString))])
	}
	return e
}

// MPI is a communicator over Open MPI's MPI_COMM_WORLD, loaded at run time
// with purego (no cgo, no MPI headers at build time).
//
// The library is initialised with MPI_THREAD_MULTIPLE when Open MPI
// provides it (its Debian build does), else MPI_THREAD_SERIALIZED: Go
// runs a goroutine on whichever OS thread is free, and the watchdog and
// Abort may call MPI_Abort while a collective blocks another goroutine.
// Collectives hold a mutex, so they are serialised in any case. Errors
// come back as *MPIError (MPI_ERRORS_RETURN is set on MPI_COMM_WORLD); a
// rank that gets one should Abort, since the others may be waiting.
type MPI struct {
	lib         *mpiLib
	rank, size  int
	threadLevel int
	timeout     time.Duration
	chunk       int // values per MPI_Allreduce call
	log         io.Writer

	mu     sync.Mutex // serialises collectives and Close
	closed bool
}

var _ Comm = (*MPI)(nil)

// InitMPI opens libmpi (see Options.Library), checks that it is Open MPI,
// calls MPI_Init_thread and reads the rank and size of MPI_COMM_WORLD.
// MPI can be initialised once per process: a second InitMPI, or one after
// Close, is an error. Most callers want FromEnv, which calls InitMPI only
// when mpirun launched the process.
func InitMPI(opts Options) (*MPI, error) {
	getenv := opts.Getenv
	if getenv == nil {
		getenv = os.Getenv
	}
	lib, err := openMPILib(opts.Library, getenv)
	if err != nil {
		return nil, err
	}
	if rc, fin := lib.intOut(lib.finalized); rc == mpiSuccess && fin != 0 {
		return nil, fmt.Errorf("dist: MPI was already finalized in this process (%s); it cannot be initialised again", lib.path)
	}
	if rc, init := lib.intOut(lib.initialized); rc == mpiSuccess && init != 0 {
		return nil, fmt.Errorf("dist: MPI is already initialised in this process (%s); use the existing communicator", lib.path)
	}
	// MPI_Init_thread(NULL, NULL, required, &provided): MPI-2 allows NULL
	// argc and argv.
	rc, provided := lib.intOut(lib.initThread, 0, 0, mpiThreadMultiple)
	if err := lib.fail("MPI_Init_thread", rc); err != nil {
		return nil, fmt.Errorf("dist: initialise %s (%s): %w", lib.path, lib.version, err)
	}
	m := &MPI{lib: lib, threadLevel: provided, timeout: opts.Timeout, log: opts.Log, chunk: opts.Chunk}
	if m.log == nil {
		m.log = os.Stderr
	}
	if m.chunk <= 0 {
		m.chunk = DefaultChunk
	}
	m.chunk = min(m.chunk, maxCount)
	if provided < mpiThreadSerialized {
		lib.call(lib.finalize)
		return nil, fmt.Errorf("dist: %s provides MPI thread level %d; Go needs MPI_THREAD_SERIALIZED (2) or better, since goroutines move between OS threads", lib.path, provided)
	}
	if err := lib.fail("MPI_Comm_set_errhandler", lib.call(lib.commSetErrhandler, lib.commWorld, lib.errorsReturn)); err != nil {
		return nil, fmt.Errorf("dist: initialise %s: %w", lib.path, err)
	}
	rc, m.rank = lib.intOut(lib.commRank, lib.commWorld)
	if err := lib.fail("MPI_Comm_rank", rc); err != nil {
		return nil, fmt.Errorf("dist: initialise %s: %w", lib.path, err)
	}
	rc, m.size = lib.intOut(lib.commSize, lib.commWorld)
	if err := lib.fail("MPI_Comm_size", rc); err != nil {
		return nil, fmt.Errorf("dist: initialise %s: %w", lib.path, err)
	}
	return m, nil
}

// Rank is this process's rank in MPI_COMM_WORLD.
func (m *MPI) Rank() int { return m.rank }

// Size is the number of ranks in MPI_COMM_WORLD.
func (m *MPI) Size() int { return m.size }

// Library describes the loaded MPI: its path, version line and thread
// level, e.g. "libmpi.so.40 (Open MPI v4.1.4, MPI_THREAD_MULTIPLE)".
func (m *MPI) Library() string {
	lvl := "MPI_THREAD_SERIALIZED"
	if m.threadLevel >= mpiThreadMultiple {
		lvl = "MPI_THREAD_MULTIPLE"
	}
	return fmt.Sprintf("%s (%s, %s)", m.lib.path, m.lib.version, lvl)
}

// enter locks the communicator for one operation and arms the watchdog.
// The returned function disarms it and unlocks.
func (m *MPI) enter(op string, n int) (leave func(), err error) {
	m.mu.Lock()
	if m.closed {
		m.mu.Unlock()
		return nil, fmt.Errorf("dist: rank %d: %s: %w", m.rank, op, ErrClosed)
	}
	if m.timeout <= 0 {
		return m.mu.Unlock, nil
	}
	t := time.AfterFunc(m.timeout, func() { m.expire(op, n) })
	return func() {
		t.Stop()
		m.mu.Unlock()
	}, nil
}

// expire is the watchdog: it names the rank and the blocked call, then
// ends the job with ExitTimeout.
func (m *MPI) expire(op string, n int) {
	what := op
	if n >= 0 {
		what = fmt.Sprintf("%s of %d values", op, n)
	}
	fmt.Fprintf(m.log, "dist: rank %d of %d: %s did not complete within %v (another rank died, hangs, or called a different collective); aborting the job with exit status %d\n",
		m.rank, m.size, what, m.timeout, ExitTimeout)
	m.Abort(ExitTimeout)
}

// AllReduceSum sums buf over all ranks in place (MPI_Allreduce with
// MPI_IN_PLACE, MPI_FLOAT, MPI_SUM): no copy, so sub-slices of one large
// gradient buffer cost only the communication. Buffers longer than
// Options.Chunk values go in several calls (see Options.Chunk for why).
func (m *MPI) AllReduceSum(buf []float32) error {
	if len(buf) == 0 {
		return nil
	}
	leave, err := m.enter("MPI_Allreduce", len(buf))
	if err != nil {
		return err
	}
	defer leave()
	var pn runtime.Pinner
	pn.Pin(&buf[0])
	defer pn.Unpin()
	base := uintptr(unsafe.Pointer(&buf[0]))
	for off := 0; off < len(buf); off += m.chunk {
		n := min(m.chunk, len(buf)-off)
		rc := m.lib.call(m.lib.allreduce, mpiInPlace, base+uintptr(off)*4, uintptr(n),
			m.lib.typeFloat, m.lib.opSum, m.lib.commWorld)
		if err := m.lib.fail("MPI_Allreduce", rc); err != nil {
			return fmt.Errorf("dist: rank %d: all-reduce of %d values: %w", m.rank, len(buf), err)
		}
	}
	return nil
}

// Broadcast copies root's buf to every rank (MPI_Bcast of MPI_BYTE).
func (m *MPI) Broadcast(buf []byte, root int) error {
	if root < 0 || root >= m.size {
		return fmt.Errorf("dist: Broadcast: root %d out of range [0, %d)", root, m.size)
	}
	if len(buf) == 0 {
		return nil
	}
	leave, err := m.enter("MPI_Bcast", len(buf))
	if err != nil {
		return err
	}
	defer leave()
	var pn runtime.Pinner
	pn.Pin(&buf[0])
	defer pn.Unpin()
	base := uintptr(unsafe.Pointer(&buf[0]))
	for off := 0; off < len(buf); off += maxCount {
		n := min(maxCount, len(buf)-off)
		rc := m.lib.call(m.lib.bcast, base+uintptr(off), uintptr(n), m.lib.typeByte, uintptr(root), m.lib.commWorld)
		if err := m.lib.fail("MPI_Bcast", rc); err != nil {
			return fmt.Errorf("dist: rank %d: broadcast of %d bytes from rank %d: %w", m.rank, len(buf), root, err)
		}
	}
	return nil
}

// Barrier blocks until every rank has called it (MPI_Barrier).
func (m *MPI) Barrier() error {
	leave, err := m.enter("MPI_Barrier", -1)
	if err != nil {
		return err
	}
	defer leave()
	if err := m.lib.fail("MPI_Barrier", m.lib.call(m.lib.barrier, m.lib.commWorld)); err != nil {
		return fmt.Errorf("dist: rank %d: %w", m.rank, err)
	}
	return nil
}

// Abort ends every rank of the job (MPI_Abort on MPI_COMM_WORLD); mpirun
// then exits with status code. It may be called from any goroutine, also
// while another is blocked in a collective, and does not return.
func (m *MPI) Abort(code int) {
	m.lib.call(m.lib.abort, m.lib.commWorld, uintptr(code))
	os.Exit(code) // MPI_Abort does not return; this is a guard.
}

// Close calls MPI_Finalize (under the watchdog, when set). Later calls of
// Close return nil; collectives return ErrClosed.
func (m *MPI) Close() error {
	leave, err := m.enter("MPI_Finalize", -1)
	if err != nil {
		return nil // already closed
	}
	defer leave()
	m.closed = true
	if err := m.lib.fail("MPI_Finalize", m.lib.call(m.lib.finalize)); err != nil {
		return fmt.Errorf("dist: rank %d: %w", m.rank, err)
	}
	return nil
}
