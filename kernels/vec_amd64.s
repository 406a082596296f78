//go:build amd64

#include "textflag.h"

// AVX2+FMA kernels for the exponential-heavy loops (SiLU, fused
// GroupNorm+SiLU, softmax). The exponential is the same as expf in
// expf.go: e^a = p(r) * 2^n, a = n*ln2 + r, with the same polynomial.
// Constants are 8 copies each, 32 bytes apart.

DATA expc<>+0(SB)/4, $0x80000000
DATA expc<>+4(SB)/4, $0x80000000
DATA expc<>+8(SB)/4, $0x80000000
DATA expc<>+12(SB)/4, $0x80000000
DATA expc<>+16(SB)/4, $0x80000000
DATA expc<>+20(SB)/4, $0x80000000
DATA expc<>+24(SB)/4, $0x80000000
DATA expc<>+28(SB)/4, $0x80000000
DATA expc<>+32(SB)/4, $0x3fb8aa3b
DATA expc<>+36(SB)/4, $0x3fb8aa3b
DATA expc<>+40(SB)/4, $0x3fb8aa3b
DATA expc<>+44(SB)/4, $0x3fb8aa3b
DATA expc<>+48(SB)/4, $0x3fb8aa3b
DATA expc<>+52(SB)/4, $0x3fb8aa3b
DATA expc<>+56(SB)/4, $0x3fb8aa3b
DATA expc<>+60(SB)/4, $0x3fb8aa3b
DATA expc<>+64(SB)/4, $0x3f318000
DATA expc<>+68(SB)/4, $0x3f318000
DATA expc<>+72(SB)/4, $0x3f318000
DATA expc<>+76(SB)/4, $0x3f318000
DATA expc<>+80(SB)/4, $0x3f318000
DATA expc<>+84(SB)/4, $0x3f318000
DATA expc<>+88(SB)/4, $0x3f318000
DATA expc<>+92(SB)/4, $0x3f318000
DATA expc<>+96(SB)/4, $0xb95e8083
DATA expc<>+100(SB)/4, $0xb95e8083
DATA expc<>+104(SB)/4, $0xb95e8083
DATA expc<>+108(SB)/4, $0xb95e8083
DATA expc<>+112(SB)/4, $0xb95e8083
DATA expc<>+116(SB)/4, $0xb95e8083
DATA expc<>+120(SB)/4, $0xb95e8083
DATA expc<>+124(SB)/4, $0xb95e8083
DATA expc<>+128(SB)/4, $0xc2aeac4f
DATA expc<>+132(SB)/4, $0xc2aeac4f
DATA expc<>+136(SB)/4, $0xc2aeac4f
DATA expc<>+140(SB)/4, $0xc2aeac4f
DATA expc<>+144(SB)/4, $0xc2aeac4f
DATA expc<>+148(SB)/4, $0xc2aeac4f
DATA expc<>+152(SB)/4, $0xc2aeac4f
DATA expc<>+156(SB)/4, $0xc2aeac4f
DATA expc<>+160(SB)/4, $0x3f800000
DATA expc<>+164(SB)/4, $0x3f800000
DATA expc<>+168(SB)/4, $0x3f800000
DATA expc<>+172(SB)/4, $0x3f800000
DATA expc<>+176(SB)/4, $0x3f800000
DATA expc<>+180(SB)/4, $0x3f800000
DATA expc<>+184(SB)/4, $0x3f800000
DATA expc<>+188(SB)/4, $0x3f800000
DATA expc<>+192(SB)/4, $0x3efffffc
DATA expc<>+196(SB)/4, $0x3efffffc
DATA expc<>+200(SB)/4, $0x3efffffc
DATA expc<>+204(SB)/4, $0x3efffffc
DATA expc<>+208(SB)/4, $0x3efffffc
DATA expc<>+212(SB)/4, $0x3efffffc
DATA expc<>+216(SB)/4, $0x3efffffc
DATA expc<>+220(SB)/4, $0x3efffffc
DATA expc<>+224(SB)/4, $0x3e2aaa47
DATA expc<>+228(SB)/4, $0x3e2aaa47
DATA expc<>+232(SB)/4, $0x3e2aaa47
DATA expc<>+236(SB)/4, $0x3e2aaa47
DATA expc<>+240(SB)/4, $0x3e2aaa47
DATA expc<>+244(SB)/4, $0x3e2aaa47
DATA expc<>+248(SB)/4, $0x3e2aaa47
DATA expc<>+252(SB)/4, $0x3e2aaa47
DATA expc<>+256(SB)/4, $0x3d2aadac
DATA expc<>+260(SB)/4, $0x3d2aadac
DATA expc<>+264(SB)/4, $0x3d2aadac
DATA expc<>+268(SB)/4, $0x3d2aadac
DATA expc<>+272(SB)/4, $0x3d2aadac
DATA expc<>+276(SB)/4, $0x3d2aadac
DATA expc<>+280(SB)/4, $0x3d2aadac
DATA expc<>+284(SB)/4, $0x3d2aadac
DATA expc<>+288(SB)/4, $0x3c091dc7
DATA expc<>+292(SB)/4, $0x3c091dc7
DATA expc<>+296(SB)/4, $0x3c091dc7
DATA expc<>+300(SB)/4, $0x3c091dc7
DATA expc<>+304(SB)/4, $0x3c091dc7
DATA expc<>+308(SB)/4, $0x3c091dc7
DATA expc<>+312(SB)/4, $0x3c091dc7
DATA expc<>+316(SB)/4, $0x3c091dc7
DATA expc<>+320(SB)/4, $0x3ab43e11
DATA expc<>+324(SB)/4, $0x3ab43e11
DATA expc<>+328(SB)/4, $0x3ab43e11
DATA expc<>+332(SB)/4, $0x3ab43e11
DATA expc<>+336(SB)/4, $0x3ab43e11
DATA expc<>+340(SB)/4, $0x3ab43e11
DATA expc<>+344(SB)/4, $0x3ab43e11
DATA expc<>+348(SB)/4, $0x3ab43e11
DATA expc<>+352(SB)/4, $0x0000007f
DATA expc<>+356(SB)/4, $0x0000007f
DATA expc<>+360(SB)/4, $0x0000007f
DATA expc<>+364(SB)/4, $0x0000007f
DATA expc<>+368(SB)/4, $0x0000007f
DATA expc<>+372(SB)/4, $0x0000007f
DATA expc<>+376(SB)/4, $0x0000007f
DATA expc<>+380(SB)/4, $0x0000007f
GLOBL expc<>(SB), RODATA|NOPTR, $384

// EXPNEG: Y6 = e^Y4 for Y4 <= 0 (clamped below at ln(2^-126)).
// Clobbers Y4, Y5, Y7.
#define EXPNEG \
	VMAXPS expc<>+128(SB), Y4, Y4 \
	VMULPS expc<>+32(SB), Y4, Y5 \
	VROUNDPS $0, Y5, Y5 \
	VFNMADD231PS expc<>+64(SB), Y5, Y4 \
	VFNMADD231PS expc<>+96(SB), Y5, Y4 \
	VCVTPS2DQ Y5, Y5 \
	VPADDD expc<>+352(SB), Y5, Y5 \
	VPSLLD $23, Y5, Y5 \
	VMOVUPS expc<>+320(SB), Y6 \
	VFMADD213PS expc<>+288(SB), Y4, Y6 \
	VFMADD213PS expc<>+256(SB), Y4, Y6 \
	VFMADD213PS expc<>+224(SB), Y4, Y6 \
	VFMADD213PS expc<>+192(SB), Y4, Y6 \
	VMULPS Y4, Y4, Y7 \
	VADDPS expc<>+160(SB), Y4, Y4 \
	VFMADD213PS Y4, Y7, Y6 \
	VMULPS Y5, Y6, Y6

// SIGMOID(z, s): s = 1/(1+e^-z) without overflow: e = e^-|z|,
// s = 1/(1+e) where z >= 0 and e/(1+e) where z < 0. Clobbers Y4-Y7.
#define SIGMOID(z, s) \
	VORPS expc<>+0(SB), z, Y4 \
	EXPNEG \
	VADDPS expc<>+160(SB), Y6, Y7 \
	VMOVUPS expc<>+160(SB), s \
	VDIVPS Y7, s, s \
	VMULPS s, Y6, Y6 \
	VBLENDVPS z, Y6, s, s

// func siluAffineAVX2(dst, src *float32, n int, a, b float32)
// dst[i] = z * sigmoid(z), z = a*src[i] + b, for i < n (n a multiple of 8).
TEXT ·siluAffineAVX2(SB), NOSPLIT, $0-32
	MOVQ dst+0(FP), DI
	MOVQ src+8(FP), SI
	MOVQ n+16(FP), CX
	VBROADCASTSS a+24(FP), Y14
	VBROADCASTSS b+28(FP), Y15
silu_loop:
	CMPQ CX, $8
	JL silu_done
	VMOVUPS (SI), Y0
	VFMADD213PS Y15, Y14, Y0
	SIGMOID(Y0, Y1)
	VMULPS Y1, Y0, Y0
	VMOVUPS Y0, (DI)
	ADDQ $32, SI
	ADDQ $32, DI
	SUBQ $8, CX
	JMP silu_loop
silu_done:
	VZEROUPPER
	RET

// func siluBwdAVX2(dz, x, dy *float32, n int, mu, rs, ga, be float32) (sdz, sdzx float32)
// With xh = (x-mu)*rs, z = ga*xh + be, s = sigmoid(z):
// dz[i] = dy[i] * s * (1 + z*(1-s)); returns sum dz and sum dz*xh.
TEXT ·siluBwdAVX2(SB), NOSPLIT, $0-56
	MOVQ dz+0(FP), DI
	MOVQ x+8(FP), SI
	MOVQ dy+16(FP), DX
	MOVQ n+24(FP), CX
	VBROADCASTSS mu+32(FP), Y10
	VBROADCASTSS rs+36(FP), Y11
	VBROADCASTSS ga+40(FP), Y12
	VBROADCASTSS be+44(FP), Y13
	VXORPS Y14, Y14, Y14
	VXORPS Y15, Y15, Y15
bwd_loop:
	CMPQ CX, $8
	JL bwd_done
	VMOVUPS (SI), Y0
	VSUBPS Y10, Y0, Y0
	VMULPS Y11, Y0, Y0
	VMOVUPS Y0, Y1
	VFMADD213PS Y13, Y12, Y1
	SIGMOID(Y1, Y2)
	VMOVUPS expc<>+160(SB), Y3
	VSUBPS Y2, Y3, Y3
	VMULPS Y1, Y3, Y3
	VADDPS expc<>+160(SB), Y3, Y3
	VMULPS Y2, Y3, Y3
	VMULPS (DX), Y3, Y3
	VMOVUPS Y3, (DI)
	VADDPS Y3, Y14, Y14
	VFMADD231PS Y3, Y0, Y15
	ADDQ $32, SI
	ADDQ $32, DI
	ADDQ $32, DX
	SUBQ $8, CX
	JMP bwd_loop
bwd_done:
	VEXTRACTF128 $1, Y14, X4
	VADDPS X4, X14, X14
	VHADDPS X14, X14, X14
	VHADDPS X14, X14, X14
	VEXTRACTF128 $1, Y15, X5
	VADDPS X5, X15, X15
	VHADDPS X15, X15, X15
	VHADDPS X15, X15, X15
	VZEROUPPER
	MOVSS X14, sdz+48(FP)
	MOVSS X15, sdzx+52(FP)
	RET

// func expSumAVX2(r *float32, n int, m float32) float32
// r[i] = e^(r[i]-m) for i < n (n a multiple of 8, r[i] <= m); returns the sum.
TEXT ·expSumAVX2(SB), NOSPLIT, $0-28
	MOVQ r+0(FP), DI
	MOVQ n+8(FP), CX
	VBROADCASTSS m+16(FP), Y10
	VXORPS Y14, Y14, Y14
exp_loop:
	CMPQ CX, $8
	JL exp_done
	VMOVUPS (DI), Y4
	VSUBPS Y10, Y4, Y4
	EXPNEG
	VMOVUPS Y6, (DI)
	VADDPS Y6, Y14, Y14
	ADDQ $32, DI
	SUBQ $8, CX
	JMP exp_loop
exp_done:
	VEXTRACTF128 $1, Y14, X4
	VADDPS X4, X14, X14
	VHADDPS X14, X14, X14
	VHADDPS X14, X14, X14
	VZEROUPPER
	MOVSS X14, ret+24(FP)
	RET

// func sumAVX2(x *float32, n int) float32: sum of x[i], n a multiple of 8.
TEXT ·sumAVX2(SB), NOSPLIT, $0-20
	MOVQ x+0(FP), SI
	MOVQ n+8(FP), CX
	VXORPS Y0, Y0, Y0
	VXORPS Y1, Y1, Y1
sum_loop16:
	CMPQ CX, $16
	JL sum_tail
	VADDPS (SI), Y0, Y0
	VADDPS 32(SI), Y1, Y1
	ADDQ $64, SI
	SUBQ $16, CX
	JMP sum_loop16
sum_tail:
	CMPQ CX, $8
	JL sum_done
	VADDPS (SI), Y0, Y0
sum_done:
	VADDPS Y1, Y0, Y0
	VEXTRACTF128 $1, Y0, X1
	VADDPS X1, X0, X0
	VHADDPS X0, X0, X0
	VHADDPS X0, X0, X0
	VZEROUPPER
	MOVSS X0, ret+16(FP)
	RET

// func sqDevAVX2(x *float32, n int, mu float32) float32: sum of
// (x[i]-mu)^2, n a multiple of 8.
TEXT ·sqDevAVX2(SB), NOSPLIT, $0-28
	MOVQ x+0(FP), SI
	MOVQ n+8(FP), CX
	VBROADCASTSS mu+16(FP), Y4
	VXORPS Y0, Y0, Y0
	VXORPS Y1, Y1, Y1
sq_loop16:
	CMPQ CX, $16
	JL sq_tail
	VMOVUPS (SI), Y2
	VMOVUPS 32(SI), Y3
	VSUBPS Y4, Y2, Y2
	VSUBPS Y4, Y3, Y3
	VFMADD231PS Y2, Y2, Y0
	VFMADD231PS Y3, Y3, Y1
	ADDQ $64, SI
	SUBQ $16, CX
	JMP sq_loop16
sq_tail:
	CMPQ CX, $8
	JL sq_done
	VMOVUPS (SI), Y2
	VSUBPS Y4, Y2, Y2
	VFMADD231PS Y2, Y2, Y0
sq_done:
	VADDPS Y1, Y0, Y0
	VEXTRACTF128 $1, Y0, X1
	VADDPS X1, X0, X0
	VHADDPS X0, X0, X0
	VHADDPS X0, X0, X0
	VZEROUPPER
	MOVSS X0, ret+24(FP)
	RET

// func axbycAVX2(y, x *float32, n int, a, b, c float32)
// y[i] = a*y[i] + b*x[i] + c, n a multiple of 8.
TEXT ·axbycAVX2(SB), NOSPLIT, $0-36
	MOVQ y+0(FP), DI
	MOVQ x+8(FP), SI
	MOVQ n+16(FP), CX
	VBROADCASTSS a+24(FP), Y10
	VBROADCASTSS b+28(FP), Y11
	VBROADCASTSS c+32(FP), Y12
axb_loop:
	CMPQ CX, $8
	JL axb_done
	VMOVUPS (SI), Y0
	VMOVUPS Y12, Y1
	VFMADD231PS Y0, Y11, Y1
	VMOVUPS (DI), Y2
	VFMADD231PS Y2, Y10, Y1
	VMOVUPS Y1, (DI)
	ADDQ $32, SI
	ADDQ $32, DI
	SUBQ $8, CX
	JMP axb_loop
axb_done:
	VZEROUPPER
	RET
