package dist

import (
	"errors"
	"math"
	"path/filepath"
	"strings"
	"testing"
)

func TestSingleIsIdentity(t *testing.T) {
	var c Comm = Single{}
	if c.Rank() != 0 || c.Size() != 1 {
		t.Fatalf("Single: rank %d size %d, want 0 and 1", c.Rank(), c.Size())
	}
	buf := []float32{1, -2.5, float32(math.NaN()), float32(math.Inf(1)), 0}
	want := make([]uint32, len(buf))
	for i, v := range buf {
		want[i] = math.Float32bits(v)
	}
	for _, s := range [][]float32{buf, buf[1:3], nil} {
		if err := c.AllReduceSum(s); err != nil {
			t.Fatalf("AllReduceSum: %v", err)
		}
	}
	for i, v := range buf {
		if math.Float32bits(v) != want[i] {
			t.Errorf("AllReduceSum changed element %d: %v", i, v)
		}
	}
	b := []byte("config")
	if err := c.Broadcast(b, 0); err != nil || string(b) != "config" {
		t.Errorf("Broadcast(root 0) = %v, buf %q", err, b)
	}
	if err := c.Broadcast(b, 1); err == nil || !strings.Contains(err.Error(), "root 1 out of range") {
		t.Errorf("Broadcast(root 1) = %v, want an out-of-range error", err)
	}
	if err := c.Barrier(); err != nil {
		t.Errorf("Barrier: %v", err)
	}
	if err := CheckSame(c, "flags", []byte("--lr=1e-4")); err != nil {
		t.Errorf("CheckSame: %v", err)
	}
	if err := c.Close(); err != nil {
		t.Errorf("Close: %v", err)
	}
	if err := c.AllReduceSum(buf); err != nil {
		t.Errorf("Single after Close: %v", err)
	}
}

func TestExchangeIDSingle(t *testing.T) {
	calls := 0
	want := NCCLID{1, 2, 3, 127: 9}
	id, err := ExchangeID(Single{}, func() (NCCLID, error) { calls++; return want, nil })
	if err != nil || id != want || calls != 1 {
		t.Fatalf("ExchangeID = %v, %v after %d calls; want the generated id after 1 call", id[:4], err, calls)
	}
	boom := errors.New("no GPU")
	_, err = ExchangeID(Single{}, func() (NCCLID, error) { return NCCLID{}, boom })
	if !errors.Is(err, boom) || !strings.Contains(err.Error(), "create the NCCL id") {
		t.Fatalf("ExchangeID with a failing source = %v, want it wrapped", err)
	}
}

func TestDetectLaunch(t *testing.T) {
	for _, tc := range []struct {
		name string
		env  []string
		want Launch
		mpi  bool
		err  string
	}{
		{name: "plain process", want: Launch{NoLauncher, 0, 1, 0, 1}},
		{name: "mpirun -np 2", env: []string{"OMPI_COMM_WORLD_SIZE=2", "OMPI_COMM_WORLD_RANK=1",
			"OMPI_COMM_WORLD_LOCAL_RANK=1", "OMPI_COMM_WORLD_LOCAL_SIZE=2", "PMIX_RANK=1"},
			want: Launch{OpenMPILauncher, 1, 2, 1, 2}, mpi: true},
		{name: "mpirun -np 1", env: []string{"OMPI_COMM_WORLD_SIZE=1", "OMPI_COMM_WORLD_RANK=0"},
			want: Launch{OpenMPILauncher, 0, 1, -1, -1}},
		{name: "PMIx launcher", env: []string{"PMIX_RANK=3"}, want: Launch{PMIxLauncher, 3, -1, -1, -1}, mpi: true},
		{name: "MPICH hydra", env: []string{"PMI_RANK=0", "PMI_SIZE=4"}, want: Launch{MPICHLauncher, 0, 4, -1, -1}, mpi: true},
		{name: "bad size", env: []string{"OMPI_COMM_WORLD_SIZE=two", "OMPI_COMM_WORLD_RANK=0"}, err: `OMPI_COMM_WORLD_SIZE="two"`},
		{name: "zero size", env: []string{"OMPI_COMM_WORLD_SIZE=0", "OMPI_COMM_WORLD_RANK=0"}, err: "want an integer >= 1"},
		{name: "rank without size", env: []string{"OMPI_COMM_WORLD_RANK=0"}, err: "both must be set"},
		{name: "rank beyond size", env: []string{"OMPI_COMM_WORLD_SIZE=2", "OMPI_COMM_WORLD_RANK=2"}, err: "rank 2 of 2"},
		{name: "negative PMIx rank", env: []string{"PMIX_RANK=-1"}, err: "PMIX_RANK"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := DetectLaunch(envMap(tc.env...))
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("DetectLaunch = %+v, %v; want an error containing %q", got, err, tc.err)
				}
				return
			}
			if err != nil || got != tc.want || got.MPI() != tc.mpi {
				t.Fatalf("DetectLaunch = %+v (MPI %v), %v; want %+v (MPI %v)", got, got.MPI(), err, tc.want, tc.mpi)
			}
		})
	}
}

func TestFromEnvWithoutMPI(t *testing.T) {
	missing := filepath.Join(t.TempDir(), "libmpi.so.40")
	for _, tc := range []struct {
		name string
		env  []string
	}{
		{"not launched", nil},
		{"world of one", []string{"OMPI_COMM_WORLD_SIZE=1", "OMPI_COMM_WORLD_RANK=0"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			// Library points nowhere: a single process must not even load MPI.
			c, l, err := FromEnv(Options{Getenv: envMap(tc.env...), Library: missing})
			if err != nil {
				t.Fatalf("FromEnv: %v", err)
			}
			if _, ok := c.(Single); !ok || c.Size() != 1 || l.MPI() {
				t.Fatalf("FromEnv = %T size %d (launch %v), want Single", c, c.Size(), l)
			}
		})
	}
}

func TestFromEnvMissingMPIIsAnError(t *testing.T) {
	missing := filepath.Join(t.TempDir(), "libmpi.so.40")
	env := []string{"OMPI_COMM_WORLD_SIZE=2", "OMPI_COMM_WORLD_RANK=0"}
	for _, tc := range []struct {
		name string
		opts Options
	}{
		{"Options.Library", Options{Getenv: envMap(env...), Library: missing}},
		{"DDPM_LIBMPI", Options{Getenv: envMap(append(env, "DDPM_LIBMPI="+missing)...)}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, _, err := FromEnv(tc.opts)
			if !errors.Is(err, ErrNoMPI) || c != nil {
				t.Fatalf("FromEnv = %v, %v; want ErrNoMPI", c, err)
			}
			for _, want := range []string{missing, "openmpi rank 0 of 2", "openmpi-bin"} {
				if !strings.Contains(err.Error(), want) {
					t.Errorf("error %q does not mention %q", err, want)
				}
			}
		})
	}
}

func TestFromEnvRefusesMPICHLauncher(t *testing.T) {
	_, _, err := FromEnv(Options{Getenv: envMap("PMI_RANK=1", "PMI_SIZE=2")})
	if !errors.Is(err, ErrNotOpenMPI) || !strings.Contains(err.Error(), "MPICH") {
		t.Fatalf("FromEnv under MPICH's launcher = %v, want ErrNotOpenMPI naming MPICH", err)
	}
}

func TestInitMPIRefusesMPICH(t *testing.T) {
	so := buildFake(t, "fakempich")
	_, err := InitMPI(Options{Library: so})
	if !errors.Is(err, ErrNotOpenMPI) {
		t.Fatalf("InitMPI(fake MPICH) = %v, want ErrNotOpenMPI", err)
	}
	for _, want := range []string{"MPICH Version", "ompi_mpi_comm_world", "integers"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not mention %q", err, want)
		}
	}
}

func TestInitMPIRefusesNonMPILibrary(t *testing.T) {
	_, err := InitMPI(Options{Library: "libm.so.6"})
	if !errors.Is(err, ErrNotOpenMPI) || !strings.Contains(err.Error(), "unknown implementation") {
		t.Fatalf("InitMPI(libm) = %v, want ErrNotOpenMPI", err)
	}
}

func TestMPICandidates(t *testing.T) {
	if got := mpiCandidates(envMap("DDPM_LIBMPI=/x/libmpi.so", "OPAL_PREFIX=/opt/ompi")); len(got) != 1 || got[0] != "/x/libmpi.so" {
		t.Errorf("with DDPM_LIBMPI: %v, want it alone", got)
	}
	got := mpiCandidates(envMap("OPAL_PREFIX=/opt/ompi"))
	if got[0] != "libmpi.so.40" || !contains(got, "/opt/ompi/lib/libmpi.so.40") || !contains(got, "/usr/lib/x86_64-linux-gnu/libmpi.so.40") {
		t.Errorf("candidates %v lack the soname, $OPAL_PREFIX/lib or Debian's directory", got)
	}
}

func contains(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}

func TestExcerpt(t *testing.T) {
	a := []byte(strings.Repeat("x", 100) + "--lr=1e-4" + strings.Repeat("y", 100))
	b := []byte(strings.Repeat("x", 100) + "--lr=2e-4" + strings.Repeat("y", 100))
	at := firstDiff(a, b)
	if at != 105 {
		t.Fatalf("firstDiff = %d, want 105", at)
	}
	got := excerpt(a, at, uint64(len(a)))
	if !strings.HasPrefix(got, `..."xxx`) || !strings.Contains(got, "--lr=1e-4") || !strings.HasSuffix(got, `..." (209 bytes)`) && !strings.HasSuffix(got, `"... (209 bytes)`) {
		t.Errorf("excerpt = %s", got)
	}
	if got := excerpt([]byte("ab"), 0, 2); got != `"ab" (2 bytes)` {
		t.Errorf("short excerpt = %s", got)
	}
	if firstDiff([]byte("abc"), []byte("ab")) != 2 {
		t.Errorf("firstDiff of a prefix should be its length")
	}
}
