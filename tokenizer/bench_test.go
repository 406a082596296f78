package tokenizer

import (
	"strings"
	"testing"
)

// BenchmarkEncode encodes a typical GLIDE prompt.
func BenchmarkEncode(b *testing.B) {
	bpe, err := NewGLIDE()
	if err != nil {
		b.Fatal(err)
	}
	for b.Loop() {
		bpe.Encode("an oil painting of a corgi wearing a party hat, trending on artstation")
	}
}

// BenchmarkEncodeLong encodes 10,000 characters of text.
func BenchmarkEncodeLong(b *testing.B) {
	bpe, err := NewGLIDE()
	if err != nil {
		b.Fatal(err)
	}
	s := strings.Repeat("A surreal Painting, of 3 cats; naïve ☕ ", 250)
	b.SetBytes(int64(len(s)))
	for b.Loop() {
		bpe.Encode(s)
	}
}
