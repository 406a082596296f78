package kernels

import (
	"math"
	"math/rand/v2"
	"testing"
)

// TestBlockRows: the nChw16c transposes (AVX-512 where present) against
// the index formula, float32 exactly and bf16 against toBF16's rounding
// of each value, and unblockRows back (with a residual), for odd pixel
// counts and strides.
func TestBlockRows(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	for _, s := range []struct{ n, stride int }{{1, 1}, {5, 7}, {16, 16}, {37, 40}, {256, 1024}} {
		src := rnd(r, 15*s.stride+s.n)
		dst := make([]float32, 16*s.n)
		dst16 := make([]uint16, 16*s.n)
		blockRows(dst, src, s.n, s.stride)
		blockRowsBF16(dst16, src, s.n, s.stride)
		for p := 0; p < s.n; p++ {
			for c := 0; c < 16; c++ {
				want := src[c*s.stride+p]
				if dst[p*16+c] != want {
					t.Fatalf("%+v: dst[%d,%d] = %v, want %v", s, p, c, dst[p*16+c], want)
				}
				if got := dst16[p*16+c]; got != toBF16(want) {
					t.Fatalf("%+v: bf16 dst[%d,%d] = %#x, want %#x (%v)", s, p, c, got, toBF16(want), want)
				}
			}
		}
		// Into token-major rows of 40.
		tok := make([]float32, 40*s.n)
		blockRowsTo(tok, src, s.n, s.stride, 40)
		for p := 0; p < s.n; p++ {
			for c := 0; c < 16; c++ {
				if tok[p*40+c] != src[c*s.stride+p] {
					t.Fatalf("%+v: token-major [%d,%d] = %v, want %v", s, p, c, tok[p*40+c], src[c*s.stride+p])
				}
			}
		}
		back := make([]float32, len(src))
		unblockRowsFrom(back, tok, nil, s.n, s.stride, 40)
		for p := 0; p < s.n; p++ {
			for c := 0; c < 16; c++ {
				if back[c*s.stride+p] != src[c*s.stride+p] {
					t.Fatalf("%+v: from token-major [%d,%d] = %v, want %v", s, c, p, back[c*s.stride+p], src[c*s.stride+p])
				}
			}
		}
		// And back, with and without a residual.
		res := rnd(r, len(src))
		for _, withRes := range []bool{false, true} {
			back := make([]float32, len(src))
			rr := res
			if !withRes {
				rr = nil
			}
			unblockRows(back, dst, rr, s.n, s.stride)
			for p := 0; p < s.n; p++ {
				for c := 0; c < 16; c++ {
					want := src[c*s.stride+p]
					if withRes {
						want += res[c*s.stride+p]
					}
					if got := back[c*s.stride+p]; got != want {
						t.Fatalf("%+v residual %v: unblocked [%d,%d] = %v, want %v", s, withRes, c, p, got, want)
					}
				}
			}
		}
	}
}

// TestToBF16: rounding to nearest even, and the error bound 2^-8 (half
// an ulp of an 8-bit significand).
func TestToBF16(t *testing.T) {
	for _, c := range []struct {
		in   uint32
		want uint16
	}{
		{0x3f800000, 0x3f80}, // 1
		{0x3f808000, 0x3f80}, // tie, even stays
		{0x3f818000, 0x3f82}, // tie, odd rounds up
		{0x3f808001, 0x3f81}, // above the tie
		{0x7f7fffff, 0x7f80}, // overflows to +Inf
	} {
		if got := toBF16(math.Float32frombits(c.in)); got != c.want {
			t.Errorf("toBF16(%#x) = %#x, want %#x", c.in, got, c.want)
		}
	}
	r := rand.New(rand.NewPCG(3, 4))
	for i := 0; i < 1000; i++ {
		v := float32(r.NormFloat64())
		back := math.Float32frombits(uint32(toBF16(v)) << 16)
		if math.Abs(float64(back-v)) > math.Abs(float64(v))/256 {
			t.Fatalf("toBF16(%v) = %v", v, back)
		}
	}
}
