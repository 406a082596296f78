package weights

import (
	"bytes"
	"testing"
)

// benchFile is a 4M-parameter model (16 MiB as float32) in 64 tensors.
func benchFile() *File {
	f := &File{Tensors: map[string]Tensor{}}
	for i := 0; i < 64; i++ {
		f.Tensors[string(rune('a'+i%26))+string(rune('a'+i/26))] = Tensor{Shape: []int{256, 256}, Data: seq(1 << 16)}
	}
	return f
}

func BenchmarkWrite(b *testing.B) {
	f := benchFile()
	var buf bytes.Buffer
	b.SetBytes(64 << 18)
	for b.Loop() {
		buf.Reset()
		if err := Write(&buf, f); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkRead(b *testing.B) {
	var buf bytes.Buffer
	if err := Write(&buf, benchFile()); err != nil {
		b.Fatal(err)
	}
	r := bytes.NewReader(buf.Bytes())
	b.SetBytes(int64(buf.Len()))
	for b.Loop() {
		if _, err := Read(r, int64(buf.Len())); err != nil {
			b.Fatal(err)
		}
	}
}
