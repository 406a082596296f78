//go:build !amd64

package kernels

const useAVX2 = false

func siluAffineAVX2(dst, src *float32, n int, a, b float32) { panic("unreachable") }

func siluBwdAVX2(dz, x, dy *float32, n int, mu, rs, ga, be float32) (float32, float32) {
	panic("unreachable")
}

func expSumAVX2(r *float32, n int, m float32) float32 { panic("unreachable") }

func sumAVX2(x *float32, n int) float32 { panic("unreachable") }

func sqDevAVX2(x *float32, n int, mu float32) float32 { panic("unreachable") }

func axbycAVX2(y, x *float32, n int, a, b, c float32) { panic("unreachable") }

const useAVX512 = false

func siluAffineAVX512(dst, src *float32, n int, a, b float32) { panic("unreachable") }

func siluBwdAVX512(dz, x, dy *float32, n int, mu, rs, ga, be float32) (float32, float32) {
	panic("unreachable")
}

func expSumAVX512(r *float32, n int, m float32) float32 { panic("unreachable") }

func maxAVX512(r *float32, n int) float32 { panic("unreachable") }

const useAVX512BF16 = false

func blockRowsAVX512(dst, src *float32, n, stride, ld int) { panic("unreachable") }

func blockRowsBF16AVX512(dst *uint16, src *float32, n, stride int) { panic("unreachable") }

func unblockRowsAVX512(dst, src, res *float32, n, stride, ld int) { panic("unreachable") }

func winoInBF16AVX512(v *uint16, x *float32, n, xRow, vPos, vTile int) { panic("unreachable") }

func winoOutAVX512(y, m, bias *float32, n, yRow, mPos, mTile int) { panic("unreachable") }

func toBF16AVX512(dst *uint16, src *float32, n int) { panic("unreachable") }
