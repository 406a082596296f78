package weights

import (
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"
)

// failAfter is a writer that fails once n bytes have gone through.
type failAfter struct {
	w io.Writer
	n int
}

var errDiskFull = errors.New("simulated disk full")

func (f *failAfter) Write(p []byte) (int, error) {
	if len(p) > f.n {
		k, _ := f.w.Write(p[:f.n])
		f.n = 0
		return k, errDiskFull
	}
	f.n -= len(p)
	return f.w.Write(p)
}

func bigFile(n int) *File {
	return &File{
		Metadata: map[string]string{"v": "new"},
		Tensors:  map[string]Tensor{"w": {Shape: []int{n}, Data: seq(n)}},
	}
}

func TestWriteFileAtomicFailureKeepsOld(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "model.safetensors")
	old := sampleFile()
	if err := WriteFileAtomic(path, old); err != nil {
		t.Fatal(err)
	}
	for _, n := range []int{0, 7, 100, 1 << 20} {
		t.Run(fmt.Sprint("fail after ", n), func(t *testing.T) {
			err := writeFileAtomic(path, bigFile(1<<19), func(w io.Writer) io.Writer { return &failAfter{w: w, n: n} })
			if !errors.Is(err, errDiskFull) || !strings.Contains(err.Error(), path) {
				t.Fatalf("error %v, want the simulated failure naming %s", err, path)
			}
			got, err := ReadFile(path)
			if err != nil {
				t.Fatalf("old file no longer loads: %v", err)
			}
			if !reflect.DeepEqual(got.Metadata, old.Metadata) {
				t.Fatal("old file changed")
			}
			entries, _ := os.ReadDir(dir)
			if len(entries) != 1 {
				t.Fatalf("directory holds %d entries after a failed write, want only the old file", len(entries))
			}
		})
	}
	if err := WriteFileAtomic(path, bigFile(10)); err != nil {
		t.Fatal(err)
	}
	got, err := ReadFile(path)
	if err != nil || got.Metadata["v"] != "new" {
		t.Fatalf("replacement: %v, %v", got, err)
	}
	if st, _ := os.Stat(path); st.Mode().Perm() != 0o644 {
		t.Errorf("mode %v, want 0644", st.Mode().Perm())
	}
}

func TestWriteFileAtomicInvalidDoesNotTouchDisk(t *testing.T) {
	dir := t.TempDir()
	err := WriteFileAtomic(filepath.Join(dir, "x.safetensors"), &File{Tensors: map[string]Tensor{"w": {Shape: []int{2}}}})
	if err == nil {
		t.Fatal("want a validation error")
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 0 {
		t.Fatalf("invalid File left %d entries", len(entries))
	}
}

const childEnv = "DDPM_WEIGHTS_TEST_CHILD"

// stallAfter lets n bytes through, then creates a marker file and blocks
// until the process is killed.
type stallAfter struct {
	w      io.Writer
	n      int
	marker string
}

func (s *stallAfter) Write(p []byte) (int, error) {
	if len(p) >= s.n {
		k, err := s.w.Write(p[:s.n])
		if err != nil {
			return k, err
		}
		if f, ok := s.w.(*os.File); ok {
			f.Sync()
		}
		os.WriteFile(s.marker, nil, 0o644)
		time.Sleep(time.Hour)
	}
	s.n -= len(p)
	return s.w.Write(p)
}

// TestWriteFileAtomicKilled kills a process in the middle of writing a
// checkpoint and checks that the previous file still loads.
func TestWriteFileAtomicKilled(t *testing.T) {
	if path := os.Getenv(childEnv); path != "" {
		err := writeFileAtomic(path, bigFile(1<<20), func(w io.Writer) io.Writer {
			return &stallAfter{w: w, n: 3 << 20, marker: path + ".marker"}
		})
		fmt.Fprintln(os.Stderr, "child: write returned", err)
		os.Exit(3)
	}
	dir := t.TempDir()
	path := filepath.Join(dir, "ckpt.safetensors")
	old := sampleFile()
	if err := WriteFileAtomic(path, old); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(os.Args[0], "-test.run=^TestWriteFileAtomicKilled$")
	cmd.Env = append(os.Environ(), childEnv+"="+path)
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(60 * time.Second)
	for {
		if _, err := os.Stat(path + ".marker"); err == nil {
			break
		}
		if time.Now().After(deadline) {
			cmd.Process.Kill()
			cmd.Wait()
			t.Fatal("child never reached the middle of its write")
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err := cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	cmd.Wait()

	got, err := ReadFile(path)
	if err != nil {
		t.Fatalf("previous file does not load after a killed write: %v", err)
	}
	if !reflect.DeepEqual(got.Metadata, old.Metadata) || !reflect.DeepEqual(got.Tensors["conv.weight"].Data, old.Tensors["conv.weight"].Data) {
		t.Fatal("previous file changed")
	}
	// The half-written temporary is there (proving the kill was midway) and
	// is itself rejected as truncated, never mistaken for a model.
	tmps, _ := filepath.Glob(filepath.Join(dir, ".ckpt.safetensors.tmp*"))
	if len(tmps) != 1 {
		t.Fatalf("found %d temporary files, want 1", len(tmps))
	}
	if _, err := ReadFile(tmps[0]); !errors.Is(err, ErrFormat) {
		t.Fatalf("half-written temporary: %v, want ErrFormat", err)
	}
}
