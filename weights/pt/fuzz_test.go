package pt

import (
	"archive/zip"
	"bytes"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// checkAccepted asserts what every accepted input must satisfy: each
// tensor's data matches its shape, and the total stays within the default
// bound of 4 bytes of float32 per input byte.
func checkAccepted(t *testing.T, in []byte) {
	f, err := Open(bytes.NewReader(in), int64(len(in)), IncludeIntegers())
	if err != nil {
		return
	}
	m, err := f.ReadAll()
	if err != nil {
		return
	}
	total := 0
	for name, tn := range m {
		if len(tn.Data) != tn.NumElements() {
			t.Fatalf("%q: %d values for shape %v", name, len(tn.Data), tn.Shape)
		}
		total += len(tn.Data)
	}
	if total > len(in) {
		t.Fatalf("%d float32 values from %d bytes", total, len(in))
	}
	for _, ti := range f.Tensors {
		if _, ok := m[ti.Name]; !ok {
			t.Fatalf("tensor %q listed but not read", ti.Name)
		}
	}
}

// FuzzRead feeds whole files: the testdata checkpoints (zip, legacy,
// deflated, big-endian) and crafted ones, mutated. Nothing may panic or
// allocate beyond the bound. Mutations inside a zip's data.pkl mostly
// fail its CRC; FuzzPickle reaches the pickle directly, and the legacy
// seed has no CRC at all.
func FuzzRead(f *testing.F) {
	files, _ := filepath.Glob(filepath.Join("testdata", "*.pt"))
	for _, p := range files {
		b, err := os.ReadFile(p)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Add(zipFile(f, stateDict(6, 0, []int{2, 3}, []int{3, 1}), map[string][]byte{"0": f32Bytes(1, 2, 3, 4, 5, 6)}))
	f.Fuzz(checkAccepted)
}

// FuzzPickle feeds arbitrary bytes as data.pkl of a zip that holds the
// storages of testdata/dtypes.pt, so mutations reach the scanner, gopickle
// and the state-dict checks rather than the zip's CRC.
func FuzzPickle(f *testing.F) {
	zr, err := zip.OpenReader(filepath.Join("testdata", "dtypes.pt"))
	if err != nil {
		f.Fatal(err)
	}
	defer zr.Close()
	storages := map[string][]byte{}
	for _, zf := range zr.File {
		rc, err := zf.Open()
		if err != nil {
			f.Fatal(err)
		}
		b, err := io.ReadAll(rc)
		rc.Close()
		if err != nil {
			f.Fatal(err)
		}
		if strings.HasSuffix(zf.Name, "/data.pkl") {
			f.Add(b)
		} else if _, key, ok := strings.Cut(zf.Name, "/data/"); ok {
			storages[key] = b
		}
	}
	f.Add(stateDict(6, 0, []int{2, 3}, []int{3, 1}))
	f.Add(stateDict(6, 1, []int{2, 2}, []int{1, 2}))
	p := (&pk{}).proto(4).short("collections").op(0x94).short("OrderedDict").op(0x94, 0x93, ')', 'R', 0x94)
	f.Add(p.op('(').short("x").op('h', 0).setitems().stop())
	f.Fuzz(func(t *testing.T, pkl []byte) {
		checkAccepted(t, zipFile(t, pkl, storages))
	})
}
