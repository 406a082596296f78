package tokenizer

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"unicode/utf8"
)

// FuzzEncode: any text encodes to ids below EndToken (no special tokens),
// and byte-level BPE loses nothing: decoding gives the lowercased text
// back (invalid UTF-8 having become U+FFFD).
func FuzzEncode(f *testing.F) {
	for _, s := range []string{"", "a blue bird in the snow", "Hello, World! It's 2022...", "naïve résumé ☕", "ΑΣ Σ", "a\xffb", "<|endoftext|>", " \t\n\u3000x"} {
		f.Add(s)
	}
	if b, err := os.ReadFile(filepath.Join("testdata", "bpe_reference.json")); err == nil {
		for _, line := range strings.Split(string(b), "\n")[1:20] {
			f.Add(line)
		}
	}
	bpe, err := NewGLIDE()
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, s string) {
		ids := bpe.Encode(s)
		for _, id := range ids {
			if id < 0 || id >= EndToken {
				t.Fatalf("Encode(%q) gave id %d", s, id)
			}
		}
		got, err := bpe.Decode(ids)
		if err != nil {
			t.Fatal(err)
		}
		want := pyLower(strings.ToValidUTF8(s, "\uFFFD"))
		if utf8.ValidString(s) && got != want {
			t.Fatalf("Decode(Encode(%q)) = %q, want %q", s, got, want)
		}
		toks, mask := PaddedTokensAndMask(ids, 8)
		if len(toks) != 8 || len(mask) != 8 {
			t.Fatal("padding length")
		}
	})
}
