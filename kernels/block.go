package kernels

import "math"

// blockRows writes 16 rows of src, stride apart, n values each, as n
// groups of 16 (dst[p*16+c] = src[c*stride+p]): one 16-channel block of
// n pixels in oneDNN's nChw16c layout.
func blockRows(dst, src []float32, n, stride int) { blockRowsTo(dst, src, n, stride, 16) }

// blockRowsTo is blockRows with the groups ld apart (dst[p*ld+c] =
// src[c*stride+p], ld >= 16): 16 channels of n pixels of an NHWC (token
// major) tensor with ld channels.
func blockRowsTo(dst, src []float32, n, stride, ld int) {
	if n == 0 {
		return
	}
	_, _ = dst[(n-1)*ld+15], src[15*stride+n-1]
	p := 0
	if useAVX512 && n >= 16 {
		p = n &^ 15
		blockRowsAVX512(&dst[0], &src[0], p, stride, ld)
	}
	for ; p < n; p++ {
		for c := 0; c < 16; c++ {
			dst[p*ld+c] = src[c*stride+p]
		}
	}
}

// blockRowsBF16 is blockRows converting to bf16 (round to nearest even).
func blockRowsBF16(dst []uint16, src []float32, n, stride int) {
	if n == 0 {
		return
	}
	_, _ = dst[16*n-1], src[15*stride+n-1]
	p := 0
	if useAVX512BF16 && n >= 16 {
		p = n &^ 15
		blockRowsBF16AVX512(&dst[0], &src[0], p, stride)
	}
	for ; p < n; p++ {
		for c := 0; c < 16; c++ {
			dst[p*16+c] = toBF16(src[c*stride+p])
		}
	}
}

// toBF16 rounds v to bfloat16 (nearest, ties to even; NaN stays NaN),
// as VCVTNEPS2BF16 does for normal numbers.
func toBF16(v float32) uint16 {
	b := math.Float32bits(v)
	if b&0x7fffffff > 0x7f800000 {
		return uint16(b>>16) | 0x40
	}
	return uint16((b + 0x7fff + (b>>16)&1) >> 16)
}

// unblockRows is blockRows backwards, adding a residual: 16 rows of dst,
// stride apart, get n values each from n groups of 16 of src (dst[c*stride
// +p] = src[p*16+c] + res[c*stride+p], without res when it is nil): one
// 16-channel block of n pixels out of nChw16c into NCHW.
func unblockRows(dst, src, res []float32, n, stride int) {
	unblockRowsFrom(dst, src, res, n, stride, 16)
}

// unblockRowsFrom is unblockRows with the groups ld apart in src
// (dst[c*stride+p] = src[p*ld+c] (+ res[c*stride+p]), ld >= 16): 16
// channels of n pixels out of an NHWC (token-major) tensor with ld
// channels.
func unblockRowsFrom(dst, src, res []float32, n, stride, ld int) {
	if n == 0 {
		return
	}
	_, _ = dst[15*stride+n-1], src[(n-1)*ld+15]
	if res != nil {
		_ = res[15*stride+n-1]
	}
	p := 0
	if useAVX512 && n >= 16 {
		p = n &^ 15
		var rp *float32
		if res != nil {
			rp = &res[0]
		}
		unblockRowsAVX512(&dst[0], &src[0], rp, p, stride, ld)
	}
	for ; p < n; p++ {
		for c := 0; c < 16; c++ {
			v := src[p*ld+c]
			if res != nil {
				v += res[c*stride+p]
			}
			dst[c*stride+p] = v
		}
	}
}
