// Package tokenizer turns GLIDE prompts into the token ids its text
// transformer reads.
//
// GLIDE (github.com/openai/glide-text2im, glide_text2im/tokenizer/bpe.py)
// uses GPT-2's byte-level BPE (50257 tokens, the last, 50256, being
// <|endoftext|>): Encoder.encode lowercases the prompt with Python's
// str.lower, splits it with GPT-2's pre-tokenisation pattern
//
//	's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
//
// and byte-pair-encodes each piece's UTF-8 bytes. Special tokens are not
// recognised in the text: "<|endoftext|>" in a prompt is encoded as the
// characters it is made of. Encoder.padded_tokens_and_mask then cuts the
// ids to the model's text_ctx and pads them with the end token.
//
// The vocabulary is GPT-2's, shipped offline as tiktoken's r50k_base (the
// same ranks under the same ids) by github.com/pkoukk/tiktoken-go-loader;
// github.com/pkoukk/tiktoken-go applies the pattern and the merges. Nothing
// is downloaded.
package tokenizer

import (
	"fmt"
	"strings"
	"sync"
	"unicode"
	"unicode/utf8"

	"github.com/pkoukk/tiktoken-go"
	loader "github.com/pkoukk/tiktoken-go-loader"
)

// EndToken is GPT-2's <|endoftext|> id, which GLIDE uses as its end and
// padding token (Encoder.end_token = n_vocab - 1).
const EndToken = 50256

// NVocab is the vocabulary size, GLIDE's Encoder.n_vocab.
const NVocab = 50257

// gpt2Pattern is the pre-tokenisation regular expression of GPT-2's
// encoder.py, which glide-text2im's bpe.py keeps (case-sensitive: it is
// applied after lowercasing).
const gpt2Pattern = `'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+`

// BPE is GLIDE's tokenizer. It is safe for concurrent use.
type BPE struct {
	enc *tiktoken.Tiktoken
}

var (
	glideOnce sync.Once
	glide     *BPE
	glideErr  error
)

// NewGLIDE returns GLIDE's tokenizer, glide_text2im.tokenizer.bpe's
// get_encoder(). The vocabulary is loaded once per process (about 50,000
// ranks) and shared.
func NewGLIDE() (*BPE, error) {
	glideOnce.Do(func() {
		ranks, err := loader.NewOfflineLoader().LoadTiktokenBpe("r50k_base.tiktoken")
		if err != nil {
			glideErr = fmt.Errorf("tokenizer: load the GPT-2 vocabulary (r50k_base): %w", err)
			return
		}
		if len(ranks) != NVocab-1 {
			glideErr = fmt.Errorf("tokenizer: the GPT-2 vocabulary has %d byte-pair ranks, want %d", len(ranks), NVocab-1)
			return
		}
		special := map[string]int{"<|endoftext|>": EndToken}
		core, err := tiktoken.NewCoreBPE(ranks, special, gpt2Pattern)
		if err != nil {
			glideErr = fmt.Errorf("tokenizer: %w", err)
			return
		}
		enc := &tiktoken.Encoding{Name: "r50k_base", PatStr: gpt2Pattern, MergeableRanks: ranks, SpecialTokens: special, ExplicitNVocab: NVocab}
		glide = &BPE{enc: tiktoken.NewTiktoken(core, enc, map[string]any{"<|endoftext|>": true})}
	})
	return glide, glideErr
}

// Encode returns the token ids of text as glide-text2im's
// Encoder.encode(text) does: lowercased (Python's str.lower), split by the
// GPT-2 pattern, byte-pair encoded; no special tokens, no truncation.
// Invalid UTF-8 bytes are read as U+FFFD.
func (b *BPE) Encode(text string) []int {
	return b.enc.EncodeOrdinary(pyLower(text))
}

// Decode returns the text of ids, GLIDE's Encoder.decode: the tokens'
// bytes joined, byte sequences that are not UTF-8 shown as U+FFFD (one per
// bad byte, where Python may use one per sequence). It fails on an id
// outside [0, NVocab).
func (b *BPE) Decode(ids []int) (string, error) {
	for i, id := range ids {
		if id < 0 || id >= NVocab {
			return "", fmt.Errorf("tokenizer: token %d of %d is %d, outside [0, %d)", i, len(ids), id, NVocab)
		}
	}
	s := b.enc.Decode(ids)
	if utf8.ValidString(s) {
		return s, nil
	}
	var sb strings.Builder
	for _, r := range s { // ranging yields U+FFFD for each invalid byte
		sb.WriteRune(r)
	}
	return sb.String(), nil
}

// PaddedTokensAndMask cuts tokens to textCtx ids and pads them with
// EndToken to exactly textCtx; mask[i] is true for the real tokens, false
// for the padding. It is glide-text2im's Encoder.padded_tokens_and_mask;
// the model reads (tokens, mask) as its text condition, and the empty
// prompt "" gives all padding, the unconditional input of classifier-free
// guidance. tokens is not modified. textCtx < 0 is treated as 0.
func PaddedTokensAndMask(tokens []int, textCtx int) ([]int, []bool) {
	textCtx = max(textCtx, 0)
	n := min(len(tokens), textCtx)
	out := make([]int, textCtx)
	mask := make([]bool, textCtx)
	copy(out, tokens[:n])
	for i := range out {
		if i < n {
			mask[i] = true
		} else {
			out[i] = EndToken
		}
	}
	return out, mask
}

// EncodePadded is Encode followed by PaddedTokensAndMask: the (tokens,
// mask) GLIDE's sampling code builds for a prompt.
func (b *BPE) EncodePadded(text string, textCtx int) ([]int, []bool) {
	return PaddedTokensAndMask(b.Encode(text), textCtx)
}

// pyLower lowercases s as Python 3's str.lower does: each character's full
// lowercase mapping (Unicode's simple mapping, plus U+0130 LATIN CAPITAL
// LETTER I WITH DOT ABOVE -> "i" U+0307), and GREEK CAPITAL LETTER SIGMA
// becoming final sigma (U+03C2) at the end of a word, as the Unicode
// Final_Sigma condition defines: preceded by a cased letter and not
// followed by one, case-ignorable characters skipped both ways.
func pyLower(s string) string {
	rs := []rune(s)
	var sb strings.Builder
	sb.Grow(len(s))
	for i, r := range rs {
		switch r {
		case 'İ':
			sb.WriteString("i\u0307")
		case 'Σ':
			if finalSigma(rs, i) {
				sb.WriteRune('ς')
			} else {
				sb.WriteRune('σ')
			}
		default:
			sb.WriteRune(unicode.ToLower(r))
		}
	}
	return sb.String()
}

// finalSigma reports whether the sigma at rs[i] is in the Final_Sigma
// context: \p{Cased} \p{Case_Ignorable}* Σ !(\p{Case_Ignorable}* \p{Cased}).
func finalSigma(rs []rune, i int) bool {
	j := i - 1
	for j >= 0 && caseIgnorable(rs[j]) {
		j--
	}
	if j < 0 || !cased(rs[j]) {
		return false
	}
	j = i + 1
	for j < len(rs) && caseIgnorable(rs[j]) {
		j++
	}
	return j == len(rs) || !cased(rs[j])
}

// cased is Unicode's Cased property: Lowercase, Uppercase or Lt, where
// Lowercase = Ll + Other_Lowercase and Uppercase = Lu + Other_Uppercase.
func cased(r rune) bool {
	return unicode.In(r, unicode.Ll, unicode.Lu, unicode.Lt, unicode.Other_Lowercase, unicode.Other_Uppercase)
}

// caseIgnorable is Unicode's Case_Ignorable property: Mn, Me, Cf, Lm, Sk,
// and the Word_Break classes MidLetter, MidNumLet and Single_Quote (listed
// here from WordBreakProperty.txt, which package unicode does not carry).
func caseIgnorable(r rune) bool {
	switch r {
	case '\'', // Single_Quote
		'.', '\u2018', '\u2019', '\u2024', '\uFE52', '\uFF07', '\uFF0E', // MidNumLet
		':', '\u00B7', '\u0387', '\u055F', '\u05F4', '\u2027', '\uFE13', '\uFE55', '\uFF1A': // MidLetter
		return true
	}
	return unicode.In(r, unicode.Mn, unicode.Me, unicode.Cf, unicode.Lm, unicode.Sk)
}
