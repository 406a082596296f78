package tokenizer

import (
	"encoding/json"
	"os"
	"path/filepath"
	"reflect"
	"testing"

	"github.com/ddpm-go/ddpm/internal/fixtures"
)

func newBPE(t testing.TB) *BPE {
	t.Helper()
	b, err := NewGLIDE()
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// checkEncode compares Encode with reference ids from glide-text2im's own
// encoder for every prompt of a JSON object prompt -> ids.
func checkEncode(t *testing.T, path string) int {
	t.Helper()
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var cases map[string][]int
	if err := json.Unmarshal(raw, &cases); err != nil {
		t.Fatal(err)
	}
	b := newBPE(t)
	for prompt, want := range cases {
		got := b.Encode(prompt)
		if len(want) == 0 {
			want = []int{}
		}
		if !reflect.DeepEqual(got, want) {
			t.Errorf("Encode(%q) = %v, want %v", prompt, got, want)
		}
	}
	return len(cases)
}

// TestGLIDECases: every case of the shared fixture glide_bpe_cases.json
// (ids from glide-text2im's get_encoder().encode), and padding to
// text_ctx = 128 as GLIDE's sampling notebooks do.
func TestGLIDECases(t *testing.T) {
	dir := fixtures.Dir(t, "openai-small")
	n := checkEncode(t, filepath.Join(dir, "glide_bpe_cases.json"))
	if n != 4 {
		t.Errorf("%d cases, want 4", n)
	}
	b := newBPE(t)
	toks, mask := b.EncodePadded("x x x x x x x x x x x x x x x x x x x x x x x x x x x x x x x x x x x x x x x x ", 16)
	want := []int{87, 2124, 2124, 2124, 2124, 2124, 2124, 2124, 2124, 2124, 2124, 2124, 2124, 2124, 2124, 2124}
	if !reflect.DeepEqual(toks, want) {
		t.Errorf("truncated to 16: %v", toks)
	}
	for i, m := range mask {
		if !m {
			t.Errorf("mask[%d] false for a truncated prompt", i)
		}
	}
}

// TestReference: 499 prompts (hand-picked hard cases and seeded random
// strings over many scripts, whitespace kinds, marks and emoji) encoded by
// glide-text2im's bpe.py; see testdata/README.md.
func TestReference(t *testing.T) {
	n := checkEncode(t, filepath.Join("testdata", "bpe_reference.json"))
	if n != 499 {
		t.Errorf("%d prompts, want 499", n)
	}
}

// TestGLIDEPrompts: the prompts of the glide fixture, padded to its
// text_ctx of 16, give exactly the tokens and mask OpenAI's code fed the
// model (glide/tokens.npy and mask.npy).
func TestGLIDEPrompts(t *testing.T) {
	dir := fixtures.Dir(t, "openai-small")
	for _, model := range []string{"glide", "glide-inpaint"} {
		raw, err := os.ReadFile(filepath.Join(dir, model, "prompts.json"))
		if err != nil {
			t.Fatal(err)
		}
		var prompts []string
		if err := json.Unmarshal(raw, &prompts); err != nil {
			t.Fatal(err)
		}
		tokens := readNPY(t, filepath.Join(dir, model, "tokens.npy"))
		mask := readNPY(t, filepath.Join(dir, model, "mask.npy"))
		if len(prompts) != 2 || len(tokens) != 2*16 || len(mask) != 2*16 {
			t.Fatalf("%s: %d prompts, %d tokens, %d mask values; want 2, 32, 32", model, len(prompts), len(tokens), len(mask))
		}
		b := newBPE(t)
		for i, p := range prompts {
			gotT, gotM := b.EncodePadded(p, 16)
			for j := 0; j < 16; j++ {
				if int64(gotT[j]) != tokens[16*i+j] || gotM[j] != (mask[16*i+j] != 0) {
					t.Errorf("%s prompt %q position %d: token %d mask %v, want %d %v", model, p, j, gotT[j], gotM[j], tokens[16*i+j], mask[16*i+j] != 0)
				}
			}
		}
	}
}

func TestPaddedTokensAndMask(t *testing.T) {
	E := EndToken
	cases := []struct {
		name   string
		tokens []int
		ctx    int
		want   []int
		mask   []bool
	}{
		{"pad", []int{1, 2}, 4, []int{1, 2, E, E}, []bool{true, true, false, false}},
		{"exact", []int{1, 2, 3}, 3, []int{1, 2, 3}, []bool{true, true, true}},
		{"truncate", []int{1, 2, 3, 4, 5}, 2, []int{1, 2}, []bool{true, true}},
		{"empty prompt", nil, 3, []int{E, E, E}, []bool{false, false, false}},
		{"zero ctx", []int{1}, 0, []int{}, []bool{}},
		{"negative ctx", []int{1}, -1, []int{}, []bool{}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			in := append([]int(nil), c.tokens...)
			got, mask := PaddedTokensAndMask(in, c.ctx)
			if !reflect.DeepEqual(got, c.want) || !reflect.DeepEqual(mask, c.mask) {
				t.Errorf("got %v %v, want %v %v", got, mask, c.want, c.mask)
			}
			if !reflect.DeepEqual(in, c.tokens) && c.tokens != nil {
				t.Error("input modified")
			}
		})
	}
}

func TestDecode(t *testing.T) {
	b := newBPE(t)
	for _, s := range []string{"a blue bird in the snow", "naïve résumé ☕", "hello, world!  \n"} {
		got, err := b.Decode(b.Encode(s))
		if err != nil || got != pyLower(s) {
			t.Errorf("Decode(Encode(%q)) = %q, %v", s, got, err)
		}
	}
	if s, err := b.Decode([]int{EndToken}); err != nil || s != "<|endoftext|>" {
		t.Errorf("Decode(EndToken) = %q, %v", s, err)
	}
	// 243 alone is the last byte of a 3-byte character: not UTF-8.
	if s, err := b.Decode([]int{243}); err != nil || s != "\uFFFD" {
		t.Errorf("Decode of a lone continuation byte = %q, %v", s, err)
	}
	for _, bad := range []int{-1, NVocab} {
		if _, err := b.Decode([]int{bad}); err == nil {
			t.Errorf("Decode(%d) succeeded", bad)
		}
	}
}

// TestInvalidUTF8: bytes that are not UTF-8 encode as U+FFFD would.
func TestInvalidUTF8(t *testing.T) {
	b := newBPE(t)
	got, want := b.Encode("a\xffb"), b.Encode("a\uFFFDb")
	if !reflect.DeepEqual(got, want) {
		t.Errorf("Encode(a\\xffb) = %v, want %v", got, want)
	}
}

func TestConcurrent(t *testing.T) {
	b := newBPE(t)
	want := b.Encode("a corgi in a party hat")
	done := make(chan []int)
	for i := 0; i < 8; i++ {
		go func() {
			b2, _ := NewGLIDE()
			done <- b2.Encode("a corgi in a party hat")
		}()
	}
	for i := 0; i < 8; i++ {
		if got := <-done; !reflect.DeepEqual(got, want) {
			t.Errorf("concurrent Encode = %v, want %v", got, want)
		}
	}
}
