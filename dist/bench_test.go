package dist

import (
	"flag"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
)

// unetParams is the CIFAR-10 UNet's parameter count (35.7M), the size of
// one data-parallel gradient all-reduce.
const unetParams = 35_746_307

// benchMPI is the process's MPI communicator for the benchmarks (MPI can
// be initialised once per process); TestMain finalises it.
var benchMPI struct {
	once sync.Once
	c    Comm
	err  error
}

func TestMain(m *testing.M) {
	code := m.Run()
	if benchMPI.c != nil {
		if err := benchMPI.c.Close(); err != nil {
			fmt.Fprintln(os.Stderr, err)
			code = 1
		}
	}
	os.Exit(code)
}

// BenchmarkMPIAllReduceSum times AllReduceSum of the CIFAR-10 UNet's
// gradients (35.7M float32, 143 MB) across the ranks of an mpirun, with
// the default Options.Chunk and with other chunk sizes (chunk=35746307 is
// one MPI_Allreduce for everything; DDPM_DIST_CHUNKS=a,b,... picks
// others). It must run under mpirun with a
// fixed iteration count, since every rank has to make the same calls:
//
//	go test -c -o /tmp/dist.test ./dist
//	mpirun --allow-run-as-root -np 2 /tmp/dist.test -test.run '^$' \
//	    -test.bench MPIAllReduceSum -test.benchtime 10x
//
// Each rank prints its own lines; ns/op is the time of one all-reduce of
// all parameters, MB/s the gradient bytes reduced per second.
func BenchmarkMPIAllReduceSum(b *testing.B) {
	if os.Getenv("OMPI_COMM_WORLD_SIZE") == "" {
		b.Skip("run under mpirun: go test -c -o /tmp/dist.test ./dist && mpirun -np 2 /tmp/dist.test -test.run '^$' -test.bench MPIAllReduceSum -test.benchtime 10x")
	}
	if bt := flag.Lookup("test.benchtime"); bt == nil || !strings.HasSuffix(bt.Value.String(), "x") {
		b.Fatal("use -test.benchtime Nx: every rank must run the same number of all-reduces")
	}
	benchMPI.once.Do(func() { benchMPI.c, _, benchMPI.err = FromEnv(Options{}) })
	if benchMPI.err != nil {
		b.Fatal(benchMPI.err)
	}
	m, ok := benchMPI.c.(*MPI)
	if !ok {
		b.Skipf("a world of %d rank: nothing to communicate", benchMPI.c.Size())
	}
	grads := make([]float32, unetParams)
	for _, chunk := range chunks() {
		name := fmt.Sprintf("n=%d/chunk=%d/ranks=%d", unetParams, chunk, m.Size())
		b.Run(name, func(b *testing.B) {
			defer func(c int) { m.chunk = c }(m.chunk)
			m.chunk = chunk
			b.SetBytes(4 * unetParams)
			if err := m.Barrier(); err != nil {
				b.Fatal(err)
			}
			f0 := minorFaults()
			b.ResetTimer()
			for range b.N {
				if err := m.AllReduceSum(grads); err != nil {
					b.Fatal(err)
				}
			}
			b.StopTimer()
			// Page faults are the load-independent symptom of scratch
			// memory that malloc takes from and returns to the kernel.
			b.ReportMetric(float64(minorFaults()-f0)/float64(b.N), "faults/op")
		})
	}
}

// minorFaults is the process's minor page-fault count (getrusage).
func minorFaults() int64 {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return ru.Minflt
}

// chunks are the Options.Chunk values to time: $DDPM_DIST_CHUNKS (a
// comma-separated list) or a default spread.
func chunks() []int {
	if s := os.Getenv("DDPM_DIST_CHUNKS"); s != "" {
		var out []int
		for _, f := range strings.Split(s, ",") {
			if v, err := strconv.Atoi(strings.TrimSpace(f)); err == nil && v > 0 {
				out = append(out, v)
			}
		}
		return out
	}
	return []int{DefaultChunk, unetParams, 1 << 22, 1 << 18}
}
