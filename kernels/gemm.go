package kernels

// gemmGrain is the least number of multiply-adds worth a goroutine.
const gemmGrain = 1 << 18

// mm computes C = alpha*op(A)*op(B) + beta*C (row-major, as blas.Sgemm),
// splitting C into column (or row) blocks over c.threads goroutines when
// par is set and the product is large. The BLAS itself runs one thread.
func (c *CPU) mm(par, ta, tb bool, m, n, k int, alpha float32, a []float32, lda int,
	b []float32, ldb int, beta float32, cc []float32, ldc int) {
	if !par || c.threads == 1 || m*n*k < 2*gemmGrain {
		c.sgemm(ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, cc, ldc)
		return
	}
	if n >= m {
		// column blocks of C: B's columns (or rows when transposed).
		blocks := min(c.threads, max(n/16, 1))
		c.parallel(blocks, 1, func(_, lo, hi int) {
			j0 := align16(lo * n / blocks)
			j1 := align16(hi * n / blocks)
			if hi == blocks {
				j1 = n
			}
			if j1 <= j0 {
				return
			}
			bo := j0
			if tb {
				bo = j0 * ldb
			}
			c.sgemm(ta, tb, m, j1-j0, k, alpha, a, lda, b[bo:], ldb, beta, cc[j0:], ldc)
		})
		return
	}
	blocks := min(c.threads, m)
	c.parallel(blocks, 1, func(_, lo, hi int) {
		i0, i1 := lo*m/blocks, hi*m/blocks
		if i1 <= i0 {
			return
		}
		ao := i0 * lda
		if ta {
			ao = i0
		}
		c.sgemm(ta, tb, i1-i0, n, k, alpha, a[ao:], lda, b, ldb, beta, cc[i0*ldc:], ldc)
	})
}

// sgemm is one BLAS call; its error (bad arguments, a library failure)
// is recorded for Sync.
func (c *CPU) sgemm(ta, tb bool, m, n, k int, alpha float32, a []float32, lda int,
	b []float32, ldb int, beta float32, cc []float32, ldc int) {
	if err := c.gemm.Sgemm(ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, cc, ldc); err != nil {
		c.fail("%v", err)
	}
}

func align16(x int) int { return x &^ 15 }
