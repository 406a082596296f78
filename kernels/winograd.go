package kernels

import "unsafe"

// Winograd F(2x2, 3x3) convolutions for inference (Lavin & Gray, "Fast
// Algorithms for Convolutional Neural Networks", 2016), used in bf16 mode
// for 3x3, stride-1, pad-1 convolutions (winoFits), where oneDNN 2.6 has
// only direct bf16 kernels.
//
// A tile is a 2x2 block of output pixels; it depends on the 4x4 input
// patch d around it (rows 2ty-1..2ty+2, columns 2tx-1..2tx+2, zero
// outside the image). With
//
//	B^T = [1 0 -1 0; 0 1 1 0; 0 -1 1 0; 0 1 0 -1]
//	G   = [1 0 0; 1/2 1/2 1/2; 1/2 -1/2 1/2; 0 0 1]
//	A^T = [1 1 1 0; 0 1 -1 -1]
//
// the tile's output for channel k is
//
//	Y_k = A^T [ sum_c (G g_kc G^T) ⊙ (B^T d_c B) ] A
//
// where g_kc is the 3x3 filter from input channel c to k. For each of the
// 16 positions p of the 4x4 transformed tile, the sum over c is a matrix
// product over all tiles at once:
//
//	M_p (tiles x K) = V_p (tiles x C) · U_p (C x K)
//
// 16 products of C*K per tile against the direct convolution's 36: 2.25x
// fewer multiplications. In bf16 mode V and U are rounded to bf16 after
// their transforms and the products accumulate in fp32 (oneDNN's
// dnnl_gemm_bf16bf16f32, 300-350 GFLOP/s per core here against 170 for
// its sgemm). The transforms of F(2x2, 3x3) only add and subtract (and
// halve, for the weights), but the output transform's sums of rounded
// terms lose a little more than a direct bf16 convolution: 4.0e-3
// relative L2 per conv against oneDNN's 2.3e-3 (TestWinograd).
//
// Layouts: the source is a zero-padded nChw16c ("the padded layout":
// value (n, c, y, x) at (((n*C/16 + c/16)*(H+2) + y+1)*(W+2) + x+1)*16 +
// c%16, the one-pixel border zero), so that the input transform reads
// every tile's patch in place, one ZMM register per pixel (16 channels;
// winograd512_amd64.s); the GroupNorm before the convolution writes it
// directly. The output transform writes each tile row's two pixel rows
// as nChw16c strips, which are transposed into the NCHW output (with the
// residual added) while still in cache. The tiles are taken a block of
// tile rows at a time (winoBlockTiles), each block's V and M staying in
// the core's cache: V_p is (tiles, C) row-major, M_p (tiles, K), U_p (C,
// K), prepared once per weight buffer (CPUOptions.ConstWeights) and
// cached.

// winoBlockTiles is about how many tiles one block transforms and
// multiplies at a time (whole tile rows).
const winoBlockTiles = 128

// winoFits reports whether d runs on the Winograd kernels: bf16 mode on
// a CPU with AVX-512 BF16 and oneDNN's bf16 GEMM, a shape they can take
// (winoShape) and one where they measured faster than oneDNN's direct
// bf16 kernel (winoFaster).
func (c *CPU) winoFits(d ConvDims) bool {
	return c.bf16w != nil && winoShape(d) && winoFaster(d)
}

// winoShape reports a 3x3 filter, stride 1, padding 1 on every side,
// even height and width, and channel counts in and out multiples of 16
// (the nChw16c blocks).
func winoShape(d ConvDims) bool {
	return d.R == 3 && d.S == 3 && d.StrideH == 1 && d.StrideW == 1 &&
		d.PadTop == 1 && d.PadLeft == 1 && d.PadBottom == 1 && d.PadRight == 1 &&
		d.H%2 == 0 && d.W%2 == 0 && d.C%16 == 0 && d.K%16 == 0
}

// winoFaster reports the shapes where the Winograd kernels measured
// faster than oneDNN's direct bf16 kernel on this machine's AMD EPYC
// (BenchmarkWinograd, 2 threads): at least 128 channels in and out and
// 8x8 pixels. 1.2-1.7x on the DDPM CIFAR-10 UNet's convolutions (128 to
// 128 channels at 32x32, batch 4: 2.6 -> 2.0 ms; 384 to 128: 7.6 -> 4.5
// ms; 256 to 256 at 16x16 and 8x8: 1.2x, 1.4x), about even with one
// image; slower with fewer channels (GEMMs with 32 or 64 columns: 0.5x
// at 32 channels, 0.7x at 64) and at 4x4 (0.7x), and 512 to 256 at 8x8
// (0.9x).
func winoFaster(d ConvDims) bool {
	return d.C >= 128 && d.K >= 128 && d.H*d.W >= 64
}

// winoConv sets y (NCHW, N*K*H*W) to the convolution of src
// (the padded layout) with w (K, C, 3, 3) plus b (K, or nil) plus res (like y,
// or nil). d must satisfy winoShape. Each thread takes blocks of tile
// rows through the three stages and moves their output pixels into y
// (with res) while they are still in its cache.
func (c *CPU) winoConv(y, res, src, w, b []float32, d ConvDims) error {
	th, tw := d.H/2, d.W/2
	rows := d.N * th
	rb := max(1, winoBlockTiles/tw)
	if per := (rows + c.threads - 1) / c.threads; per < rb {
		rb = per // at least one block per thread
	}
	blocks := (rows + rb - 1) / rb
	u := c.winoWeights(w, d)
	maxT := rb * tw
	return c.parallelErr(blocks, 1, func(_, lo, hi int) error {
		v := c.ws.get((16*winoPos(maxT*d.C) + 1) / 2) // bf16
		m := c.ws.get(16 * winoPos(maxT*d.K))
		out := c.ws.get(maxT * 4 * d.K)
		defer c.ws.put(v)
		defer c.ws.put(m)
		defer c.ws.put(out)
		v16 := unsafe.Slice((*uint16)(unsafe.Pointer(&v[0])), 16*winoPos(maxT*d.C))
		for blk := lo; blk < hi; blk++ {
			r0, r1 := blk*rb, min(rows, (blk+1)*rb)
			nt := (r1 - r0) * tw
			winoInput(v16, src, r0, r1, nt, d)
			if err := c.winoGemms(m, v16, u, nt, d); err != nil {
				return err
			}
			winoOutput(y, res, out, m, b, r0, r1, nt, d)
		}
		return nil
	})
}

// winoPos is the distance in values between V_p and V_p+1 (or M_p and
// M_p+1) for n values each: 32 more than n, so that the 16 positions'
// rows, which the transforms read or write together, do not all fall in
// the same L1 cache sets (n is often a multiple of 4 KiB).
func winoPos(n int) int { return n + 32 }

// winoInput writes V_p for tile rows r0..r1-1 (row r: image r/(H/2),
// tile row r%(H/2)) into v: value (p, t, c) at p*winoPos(nt*C) + t*C + c,
// t counting the block's tiles from 0. src is zero-padded nChw16c
// (the padded layout), so every tile's 4x4 patch is read in place.
func winoInput(v []uint16, src []float32, r0, r1, nt int, d ConvDims) {
	th, tw, phw := d.H/2, d.W/2, (d.H+2)*(d.W+2)
	_ = v[16*winoPos(nt*d.C)-1]
	vPos, vTile, xRow := winoPos(nt*d.C)*2, d.C*2, (d.W+2)*64
	for r := r0; r < r1; r++ {
		n, ty := r/th, r%th
		t0 := (r - r0) * tw
		for cb := 0; cb < d.C/16; cb++ {
			x := ((n*d.C/16+cb)*phw + 2*ty*(d.W+2)) * 16
			_ = src[x+(3*(d.W+2)+d.W+1)*16+15] // the last patch's last value
			winoInBF16AVX512(&v[t0*d.C+cb*16], &src[x], tw, xRow, vPos, vTile)
		}
	}
}

// winoGemms sets M_p = V_p U_p for the block's nt tiles, p = 0..15.
func (c *CPU) winoGemms(m []float32, v, u []uint16, nt int, d ConvDims) error {
	vp, mp := winoPos(nt*d.C), winoPos(nt*d.K)
	_, _, _ = m[16*mp-1], v[16*vp-1], u[16*d.C*d.K-1]
	defer c.pinOneThread()()
	for p := 0; p < 16; p++ {
		if err := c.gemmBF16Pinned(false, false, nt, d.K, d.C, v[p*vp:], d.C, u[p*d.C*d.K:], d.K, 0, m[p*mp:], d.K); err != nil {
			return err
		}
	}
	return nil
}

// winoOutput writes the output tiles of tile rows r0..r1-1 from M (value
// (p, t, k) at p*winoPos(nt*K) + t*K + k), plus b, into y (NCHW) with
// res added: each tile row's two pixel rows, 16 channels at a time, go
// to out (nChw16c strips of 2*W pixels, 2*W*K values per tile row) and
// from there, transposed, to y.
func winoOutput(y, res, out, m, b []float32, r0, r1, nt int, d ConvDims) {
	th, tw, hw := d.H/2, d.W/2, d.H*d.W
	mp := winoPos(nt * d.K)
	_ = m[16*mp-1]
	strip := 2 * d.W * 16 // values of one 16-channel strip
	for r := r0; r < r1; r++ {
		n, ty := r/th, r%th
		t0 := (r - r0) * tw
		for kb := 0; kb < d.K/16; kb++ {
			o := out[kb*strip : (kb+1)*strip]
			var bias *float32
			if b != nil {
				bias = &b[kb*16]
			}
			winoOutAVX512(&o[0], &m[t0*d.K+kb*16], bias, tw, d.W*64, mp*4, d.K*4)
			at := (n*d.K+kb*16)*hw + 2*ty*d.W
			var rs []float32
			if res != nil {
				rs = res[at:]
			}
			unblockRows(y[at:], o, rs, 2*d.W, hw)
		}
	}
}

// winoWeights returns w's transformed filters, made on first use:
// U_p[c][k] = (G g_kc G^T)[i][j] for p = 4i+j, computed in float64 and
// rounded to bf16. w holds at least K*C*9 values (the ops check).
func (c *CPU) winoWeights(w []float32, d ConvDims) []uint16 {
	return c.bf16Form(w[:d.K*d.C*9], func() []uint16 {
		u := make([]uint16, 16*d.C*d.K)
		winoTransformWeights(u, w, d.C, d.K)
		return u
	})
}

// winoG is F(2x2, 3x3)'s filter transform G (4x3).
var winoG = [4][3]float64{{1, 0, 0}, {0.5, 0.5, 0.5}, {0.5, -0.5, 0.5}, {0, 0, 1}}

// winoTransformWeights sets u (16 (C, K) matrices) to G g G^T of each
// 3x3 filter of w (K, C, 3, 3), in bf16.
func winoTransformWeights(u []uint16, w []float32, cin, kout int) {
	for k := 0; k < kout; k++ {
		for ch := 0; ch < cin; ch++ {
			g := w[(k*cin+ch)*9 : (k*cin+ch+1)*9]
			var t [4][3]float64 // G g
			for i := 0; i < 4; i++ {
				for b := 0; b < 3; b++ {
					for a := 0; a < 3; a++ {
						t[i][b] += winoG[i][a] * float64(g[a*3+b])
					}
				}
			}
			for i := 0; i < 4; i++ {
				for j := 0; j < 4; j++ {
					var s float64
					for b := 0; b < 3; b++ {
						s += t[i][b] * winoG[j][b]
					}
					u[((i*4+j)*cin+ch)*kout+k] = toBF16(float32(s))
				}
			}
		}
	}
}

// winoForward runs op's convolution d on the Winograd kernels between
// NCHW tensors: fill(src, lo, hi) writes 16-channel blocks lo..hi-1
// (block i: channels 16*(i%(C/16)).. of image i/(C/16)) of the source
// into src (the padded layout, borders already zero), over the threads; the
// output goes to y (NCHW) with res added when it is not nil.
func (c *CPU) winoForward(op string, y, res, w, b []float32, d ConvDims, fill func(src []float32, lo, hi int)) {
	hw, phw := d.H*d.W, (d.H+2)*(d.W+2)
	src := c.ws.get(d.N * d.C * phw)
	defer c.ws.put(src)
	c.parallel(d.N*d.C/16, max(1, elemGrain/(16*hw)), func(_, lo, hi int) {
		for blk := lo; blk < hi; blk++ {
			clearBorder(src[blk*phw*16:(blk+1)*phw*16], d.H+2, d.W+2)
		}
		fill(src, lo, hi)
	})
	if err := c.winoConv(y, res, src, w, b, d); err != nil {
		c.fail("%s (winograd): %v", op, err)
	}
}

// clearBorder zeroes the one-pixel border of a (h, w) image of 16-value
// pixels.
func clearBorder(img []float32, h, w int) {
	clear(img[:w*16])
	clear(img[(h-1)*w*16 : h*w*16])
	for y := 1; y < h-1; y++ {
		clear(img[y*w*16 : y*w*16+16])
		clear(img[(y*w+w-1)*16 : (y*w+w)*16])
	}
}

// putPadded writes normBlocked's pixels into dst in the padded layout for
// (h, w) images.
func putPadded(dst []float32, h, w int) func(blk, p0, np int, tile []float32) {
	return func(blk, p0, np int, tile []float32) {
		base := blk * (h + 2) * (w + 2) * 16
		for p := p0; p < p0+np; {
			y, x := p/w, p%w
			n := min(w-x, p0+np-p)
			blockRows(dst[base+((y+1)*(w+2)+x+1)*16:], tile[p-p0:], n, blockPixels)
			p += n
		}
	}
}

// blockImage writes 16-channel blocks lo..hi-1 of x (N, C, h*w) into dst
// in the padded layout.
func blockImage(dst, x []float32, lo, hi, h, w int) {
	for blk := lo; blk < hi; blk++ {
		base := blk * (h + 2) * (w + 2) * 16
		for y := 0; y < h; y++ {
			blockRows(dst[base+((y+1)*(w+2)+1)*16:], x[blk*16*h*w+y*w:], w, h*w)
		}
	}
}
