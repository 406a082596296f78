package dist

import (
	"context"
	"errors"
	"fmt"
	"math"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// The MPI tests run this test binary under a real `mpirun -np N`: the
// parent test starts mpirun with workerEnv naming a worker function, and
// each rank runs TestMPIWorker, which calls it. A worker that fails makes
// its rank exit non-zero, so mpirun does, and the parent prints the output.
const workerEnv = "DDPM_DIST_WORKER"

// workers are the rank bodies, by name.
var workers = map[string]func(t *testing.T){
	"collectives": workCollectives,
	"mismatch":    workMismatch,
	"killed":      workKilled,
	"hang":        workHang,
}

// TestMPIWorker is one rank of an MPI test; it runs only under mpirun.
func TestMPIWorker(t *testing.T) {
	name := os.Getenv(workerEnv)
	if name == "" {
		t.Skip("runs only as a rank under mpirun, started by the TestMPI* tests")
	}
	f := workers[name]
	if f == nil {
		t.Fatalf("unknown worker %q", name)
	}
	f(t)
}

// mpiResult is what one mpirun run produced.
type mpiResult struct {
	out     string // both ranks' stdout and stderr, and mpirun's
	code    int    // mpirun's exit status (-1: killed at the limit)
	elapsed time.Duration
}

// runMPI runs `mpirun -np np` of this test binary's worker, killing the
// whole process group at limit. It skips when mpirun is not installed.
func runMPI(t *testing.T, np int, worker string, limit time.Duration, env ...string) mpiResult {
	t.Helper()
	mpirun, err := exec.LookPath("mpirun")
	if err != nil {
		t.Skip("mpirun not installed (Debian: apt-get install openmpi-bin); the MPI tests need a real Open MPI")
	}
	ctx, cancel := context.WithTimeout(context.Background(), limit)
	defer cancel()
	args := []string{"--allow-run-as-root", "--oversubscribe", "--bind-to", "none", "-np", strconv.Itoa(np),
		os.Args[0], "-test.run=^TestMPIWorker$", "-test.v", "-test.timeout=" + (2 * limit).String()}
	cmd := exec.CommandContext(ctx, mpirun, args...)
	cmd.Env = append(os.Environ(), workerEnv+"="+worker)
	cmd.Env = append(cmd.Env, env...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	cmd.WaitDelay = 5 * time.Second
	start := time.Now()
	out, err := cmd.CombinedOutput()
	r := mpiResult{out: string(out), elapsed: time.Since(start)}
	var ee *exec.ExitError
	switch {
	case ctx.Err() != nil:
		r.code = -1
	case errors.As(err, &ee):
		r.code = ee.ExitCode()
	case err != nil:
		t.Fatalf("mpirun: %v\n%s", err, out)
	}
	return r
}

func TestMPICollectives(t *testing.T) {
	if testing.Short() {
		t.Skip("starts mpirun")
	}
	var env []string
	if so, err := compileFake("fakenccl", t.TempDir()); err == nil {
		env = append(env, "DDPM_DIST_FAKENCCL="+so)
	} else {
		t.Logf("NCCL id exchange through the fake libnccl skipped: %v", err)
	}
	for _, np := range []int{2, 3} {
		t.Run(fmt.Sprintf("np=%d", np), func(t *testing.T) {
			r := runMPI(t, np, "collectives", 90*time.Second, env...)
			if r.code != 0 {
				t.Fatalf("mpirun -np %d exited with %d after %v:\n%s", np, r.code, r.elapsed.Round(time.Millisecond), r.out)
			}
			if n := strings.Count(r.out, "--- PASS: TestMPIWorker"); n != np {
				t.Fatalf("%d of %d ranks passed:\n%s", n, np, r.out)
			}
		})
	}
}

// workCollectives checks every collective against known values.
func workCollectives(t *testing.T) {
	// Chunk 300000: the 1e6-value all-reduce goes in 4 calls (3 x 300000
	// and 100000), checking the offsets.
	c, l, err := FromEnv(Options{Timeout: 60 * time.Second, Chunk: 300_000})
	if err != nil {
		t.Fatal(err)
	}
	rank, size := c.Rank(), c.Size()
	m, ok := c.(*MPI)
	if !ok {
		t.Fatalf("FromEnv under mpirun returned %T, want *MPI", c)
	}
	t.Logf("rank %d of %d, %s, %s", rank, size, l, m.Library())
	wantRank, _ := strconv.Atoi(os.Getenv("OMPI_COMM_WORLD_RANK"))
	wantSize, _ := strconv.Atoi(os.Getenv("OMPI_COMM_WORLD_SIZE"))
	if rank != wantRank || size != wantSize || l.Rank != rank || l.Size != size || l.LocalRank != rank {
		t.Fatalf("rank %d size %d (launch %+v), mpirun says rank %d size %d", rank, size, l, wantRank, wantSize)
	}
	if _, err := InitMPI(Options{}); err == nil || !strings.Contains(err.Error(), "already initialised") {
		t.Errorf("second InitMPI = %v, want an already-initialised error", err)
	}
	// Open MPI must leave Go's signal handlers alone: a nil dereference
	// is still a recoverable panic, not a crash in an MPI handler.
	if r := nilDeref(); r == nil || !strings.Contains(fmt.Sprint(r), "nil pointer dereference") {
		t.Errorf("nil dereference after MPI_Init recovered %v, want Go's runtime error", r)
	}

	// Sums of known vectors: rank r holds (r+1) * (i%1000 - 500), all exact
	// in float32, so the sum is size(size+1)/2 * (i%1000 - 500) exactly.
	tri := float32(size * (size + 1) / 2)
	for _, n := range []int{1, 7, 1000, 1_000_000} {
		buf := make([]float32, n)
		for i := range buf {
			buf[i] = float32(rank+1) * float32(i%1000-500)
		}
		if err := c.AllReduceSum(buf); err != nil {
			t.Fatalf("AllReduceSum of %d: %v", n, err)
		}
		for i, v := range buf {
			if want := tri * float32(i%1000-500); v != want {
				t.Fatalf("AllReduceSum of %d: element %d = %v, want %v", n, i, v, want)
			}
		}
	}

	// Sub-slices of one buffer (gradient buckets), inside NaN guard bands.
	const guard = 16
	whole := make([]float32, guard+1000+guard)
	for i := range whole {
		whole[i] = float32(math.NaN())
	}
	grads := whole[guard : guard+1000]
	for i := range grads {
		grads[i] = float32(rank + i)
	}
	for _, b := range [][2]int{{0, 1}, {1, 300}, {300, 999}, {999, 1000}} {
		if err := c.AllReduceSum(grads[b[0]:b[1]]); err != nil {
			t.Fatalf("AllReduceSum of bucket %v: %v", b, err)
		}
	}
	if err := c.AllReduceSum(grads[10:10]); err != nil {
		t.Fatalf("AllReduceSum of an empty bucket: %v", err)
	}
	for i, v := range grads {
		if want := float32(size*i + size*(size-1)/2); v != want {
			t.Fatalf("bucketed sum: element %d = %v, want %v", i, v, want)
		}
	}
	for i := range guard {
		if !math.IsNaN(float64(whole[i])) || !math.IsNaN(float64(whole[len(whole)-1-i])) {
			t.Fatalf("AllReduceSum wrote outside its sub-slice (guard element %d)", i)
		}
	}

	// Broadcast from the first and the last rank.
	for _, root := range []int{0, size - 1} {
		b := make([]byte, 10_000)
		if rank == root {
			for i := range b {
				b[i] = byte(i*31 + root)
			}
		}
		if err := c.Broadcast(b, root); err != nil {
			t.Fatalf("Broadcast from %d: %v", root, err)
		}
		for i, v := range b {
			if v != byte(i*31+root) {
				t.Fatalf("Broadcast from %d: byte %d = %d, want %d", root, i, v, byte(i*31+root))
			}
		}
	}
	if err := c.Broadcast(make([]byte, 1), size); err == nil {
		t.Errorf("Broadcast from rank %d of %d: no error", size, size)
	}
	if err := c.Barrier(); err != nil {
		t.Fatalf("Barrier: %v", err)
	}
	if err := CheckSame(c, "flags", []byte("--lr=1e-4 --batch=8")); err != nil {
		t.Fatalf("CheckSame of equal data: %v", err)
	}

	// The NCCL id exchange over MPI, with a fake id source on rank 0.
	calls := 0
	want := NCCLID{0: 42, 127: 7}
	id, err := ExchangeID(c, func() (NCCLID, error) { calls++; return want, nil })
	if err != nil || id != want {
		t.Fatalf("ExchangeID = %v..%v, %v; want rank 0's id", id[0], id[127], err)
	}
	if wantCalls := map[bool]int{true: 1, false: 0}[rank == 0]; calls != wantCalls {
		t.Errorf("rank %d called the id source %d times, want %d", rank, calls, wantCalls)
	}
	_, err = ExchangeID(c, func() (NCCLID, error) { return NCCLID{}, errors.New("no GPU on rank 0") })
	if err == nil || (rank == 0) != strings.Contains(err.Error(), "no GPU on rank 0") ||
		(rank != 0 && !strings.Contains(err.Error(), "rank 0 could not create the NCCL id")) {
		t.Errorf("rank %d: ExchangeID with a failing source = %v", rank, err)
	}
	if so := os.Getenv("DDPM_DIST_FAKENCCL"); so != "" {
		// NewComm end to end on the fake libnccl: rank 0's ncclGetUniqueId
		// travels over MPI to every rank's ncclCommInitRank.
		n, err := OpenNCCL(so)
		if err != nil {
			t.Fatal(err)
		}
		g, err := n.NewComm(c, 30*time.Second)
		if err != nil {
			t.Fatalf("NewComm: %v", err)
		}
		if g.Rank() != rank || g.Size() != size {
			t.Errorf("NCCL comm rank %d size %d, want %d %d", g.Rank(), g.Size(), rank, size)
		}
		ids := make([]float32, 128) // every rank's id, summed: rank 0's times size
		uid, _ := n.UniqueID()
		for i := range ids {
			ids[i] = float32(uid[i])
		}
		if err := c.AllReduceSum(ids); err != nil {
			t.Fatal(err)
		}
		for i := range ids {
			if ids[i] != float32(size)*float32(uid[i]) {
				t.Fatalf("ranks disagree on the NCCL id at byte %d", i)
			}
		}
		if err := g.Close(); err != nil {
			t.Error(err)
		}
	}

	if err := c.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if err := c.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	if err := c.AllReduceSum(make([]float32, 3)); !errors.Is(err, ErrClosed) {
		t.Errorf("AllReduceSum after Close = %v, want ErrClosed", err)
	}
}

// nilDeref dereferences a nil pointer and returns what recover saw.
func nilDeref() (r any) {
	defer func() { r = recover() }()
	var p *int
	*p = 1
	return nil
}

func TestMPICheckSameMismatch(t *testing.T) {
	if testing.Short() {
		t.Skip("starts mpirun")
	}
	r := runMPI(t, 3, "mismatch", 60*time.Second)
	if r.code != 0 {
		t.Fatalf("mpirun exited with %d after %v:\n%s", r.code, r.elapsed, r.out)
	}
	for _, want := range []string{
		`rank 2: dist: ranks disagree on flags: rank 2 has "--lr=2e-4 --batch=8" (19 bytes), rank 0 has "--lr=1e-4 --batch=8" (19 bytes) (rank(s) [2] of 3 differ from rank 0)`,
		`rank 0: dist: ranks disagree on flags: rank(s) [2] of 3 differ from rank 0, which has "--lr=1e-4 --batch=8" (19 bytes)`,
		`rank 1: dist: ranks disagree on flags: rank(s) [2] of 3 differ from rank 0, which has "--lr=1e-4 --batch=8" (19 bytes)`,
	} {
		if !strings.Contains(r.out, want) {
			t.Errorf("output lacks %q:\n%s", want, r.out)
		}
	}
}

// workMismatch: rank 2 has other flags; every rank must get ErrMismatch.
func workMismatch(t *testing.T) {
	c, _, err := FromEnv(Options{Timeout: 30 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	flags := "--lr=1e-4 --batch=8"
	if c.Rank() == 2 {
		flags = "--lr=2e-4 --batch=8"
	}
	err = CheckSame(c, "flags", []byte(flags))
	if !errors.Is(err, ErrMismatch) {
		t.Fatalf("rank %d: CheckSame = %v, want ErrMismatch", c.Rank(), err)
	}
	t.Logf("rank %d: %v", c.Rank(), err)
	// The ranks are still in step: a collective after the failed check works.
	if err := CheckSame(c, "seed", []byte("1")); err != nil {
		t.Fatalf("CheckSame after a mismatch: %v", err)
	}
}

// killLimit bounds how long the surviving ranks may outlive a killed one.
const killLimit = 20 * time.Second

// killMark precedes the time (Unix ns) at which the killed rank kills itself.
const killMark = "dist-test: rank 1 sends itself SIGKILL at "

func TestMPIKilledRankEndsTheJob(t *testing.T) {
	if testing.Short() {
		t.Skip("starts mpirun")
	}
	r := runMPI(t, 3, "killed", 2*killLimit)
	end := time.Now()
	_, after, ok := strings.Cut(r.out, killMark)
	if !ok {
		t.Fatalf("rank 1 did not kill itself; mpirun exited with %d:\n%s", r.code, r.out)
	}
	ns, err := strconv.ParseInt(strings.Fields(after)[0], 10, 64)
	if err != nil {
		t.Fatal(err)
	}
	since := end.Sub(time.Unix(0, ns))
	t.Logf("mpirun exited with %d, %v after rank 1 was killed", r.code, since.Round(time.Millisecond))
	if r.code == 0 || r.code == -1 || since > killLimit {
		t.Fatalf("after rank 1 was killed, mpirun exited with %d after %v; want non-zero within %v:\n%s",
			r.code, since, killLimit, r.out)
	}
	if !strings.Contains(r.out, "rank 1 with PID") || !strings.Contains(r.out, "signal 9 (Killed)") {
		t.Errorf("mpirun's output does not say that rank 1 was killed:\n%s", r.out)
	}
	if strings.Contains(r.out, "--- PASS") {
		t.Errorf("a surviving rank passed; it should have been ended:\n%s", r.out)
	}
}

// workKilled: every rank loops on all-reduces of 1e6 values; rank 1 is
// killed with SIGKILL by a timer while inside one. No watchdog is set: the
// survivors must be ended by Open MPI itself.
func workKilled(t *testing.T) {
	c, _, err := FromEnv(Options{})
	if err != nil {
		t.Fatal(err)
	}
	if c.Rank() == 1 {
		time.AfterFunc(500*time.Millisecond, func() {
			fmt.Printf("%s%d\n", killMark, time.Now().UnixNano())
			syscall.Kill(os.Getpid(), syscall.SIGKILL)
		})
	}
	buf := make([]float32, 1_000_000)
	deadline := time.Now().Add(killLimit + 5*time.Second)
	for i := 0; time.Now().Before(deadline); i++ {
		if err := c.AllReduceSum(buf); err != nil {
			t.Fatalf("rank %d, all-reduce %d: %v", c.Rank(), i, err)
		}
	}
	t.Fatalf("rank %d still running %v after rank 1 was killed", c.Rank(), killLimit)
}

func TestMPIWatchdogAbortsAHungJob(t *testing.T) {
	if testing.Short() {
		t.Skip("starts mpirun")
	}
	r := runMPI(t, 2, "hang", 60*time.Second)
	t.Logf("mpirun exited with %d after %v", r.code, r.elapsed.Round(time.Millisecond))
	if r.code != ExitTimeout || r.elapsed > killLimit {
		t.Fatalf("with rank 1 hung, mpirun exited with %d after %v; want %d (the watchdog) within %v:\n%s",
			r.code, r.elapsed, ExitTimeout, killLimit, r.out)
	}
	want := "dist: rank 0 of 2: MPI_Allreduce of 1000 values did not complete within 2s"
	// (Open MPI's own "MPI_ABORT was invoked" note is sometimes lost:
	// its help-message path can race with the job's teardown.)
	if !strings.Contains(r.out, want) {
		t.Errorf("output lacks %q:\n%s", want, r.out)
	}
}

// workHang: rank 1 stays alive but never joins the all-reduce; rank 0's
// watchdog (2 s) must abort the job.
func workHang(t *testing.T) {
	c, _, err := FromEnv(Options{Timeout: 2 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Barrier(); err != nil { // both ranks are up
		t.Fatal(err)
	}
	if c.Rank() == 1 {
		time.Sleep(killLimit + 10*time.Second)
		t.Fatal("rank 1 was not ended by rank 0's watchdog")
	}
	err = c.AllReduceSum(make([]float32, 1000))
	t.Fatalf("rank 0: AllReduceSum returned (%v) instead of blocking until the watchdog fired", err)
}
