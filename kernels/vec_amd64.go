package kernels

import "golang.org/x/sys/cpu"

// useAVX2 says whether the assembly kernels in vec_amd64.s may run.
var useAVX2 = cpu.X86.HasAVX2 && cpu.X86.HasFMA

//go:noescape
func siluAffineAVX2(dst, src *float32, n int, a, b float32)

//go:noescape
func siluBwdAVX2(dz, x, dy *float32, n int, mu, rs, ga, be float32) (sdz, sdzx float32)

//go:noescape
func expSumAVX2(r *float32, n int, m float32) float32

//go:noescape
func sumAVX2(x *float32, n int) float32

//go:noescape
func sqDevAVX2(x *float32, n int, mu float32) float32

//go:noescape
func axbycAVX2(y, x *float32, n int, a, b, c float32)

// useAVX512 says whether the AVX-512 kernels in vec512_amd64.s may run.
var useAVX512 = useAVX2 && cpu.X86.HasAVX512F && cpu.X86.HasAVX512DQ

//go:noescape
func siluAffineAVX512(dst, src *float32, n int, a, b float32)

//go:noescape
func siluBwdAVX512(dz, x, dy *float32, n int, mu, rs, ga, be float32) (sdz, sdzx float32)

//go:noescape
func expSumAVX512(r *float32, n int, m float32) float32

//go:noescape
func maxAVX512(r *float32, n int) float32

// useAVX512BF16 says whether blockRowsBF16AVX512 (VCVTNEPS2BF16) may run.
var useAVX512BF16 = useAVX512 && cpu.X86.HasAVX512BF16

//go:noescape
func blockRowsAVX512(dst, src *float32, n, stride, ld int)

//go:noescape
func blockRowsBF16AVX512(dst *uint16, src *float32, n, stride int)

//go:noescape
func unblockRowsAVX512(dst, src, res *float32, n, stride, ld int)

//go:noescape
func winoInBF16AVX512(v *uint16, x *float32, n, xRow, vPos, vTile int)

//go:noescape
func winoOutAVX512(y, m, bias *float32, n, yRow, mPos, mTile int)

//go:noescape
func toBF16AVX512(dst *uint16, src *float32, n int)
