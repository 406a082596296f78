package npy

import (
	"bytes"
	"os"
	"path/filepath"
	"slices"
	"testing"
)

// FuzzRead checks that Read never panics, and that whatever it accepts
// survives a Write/Read round trip unchanged.
func FuzzRead(f *testing.F) {
	files, _ := filepath.Glob(filepath.Join("testdata", "*.npy"))
	for _, p := range files {
		b, err := os.ReadFile(p)
		if err == nil {
			f.Add(b)
		}
	}
	f.Add([]byte("\x93NUMPY\x01\x00\x10\x00{'shape': (1,)}"))
	f.Fuzz(func(t *testing.T, in []byte) {
		a, err := Read(bytes.NewReader(in))
		if err != nil {
			return
		}
		if len(a.data) != a.Len()*a.DType.Size() {
			t.Fatalf("accepted %s %v with %d data bytes", a.DType, a.Shape, len(a.data))
		}
		var buf bytes.Buffer
		if err := Write(&buf, a); err != nil {
			t.Fatalf("re-encoding an accepted array: %v", err)
		}
		b, err := Read(&buf)
		if err != nil {
			t.Fatalf("re-reading: %v", err)
		}
		if b.DType != a.DType || !slices.Equal(b.Shape, a.Shape) || !bytes.Equal(b.data, a.data) {
			t.Fatal("round trip changed the array")
		}
	})
}
