//go:build amd64

#include "textflag.h"

// AVX-512 (F+DQ) versions of the kernels in vec_amd64.s: the same
// algorithm on 16 floats at a time. Constants are 16 copies each, 64 bytes
// apart.

DATA exp16<>+0(SB)/4, $0x80000000
DATA exp16<>+4(SB)/4, $0x80000000
DATA exp16<>+8(SB)/4, $0x80000000
DATA exp16<>+12(SB)/4, $0x80000000
DATA exp16<>+16(SB)/4, $0x80000000
DATA exp16<>+20(SB)/4, $0x80000000
DATA exp16<>+24(SB)/4, $0x80000000
DATA exp16<>+28(SB)/4, $0x80000000
DATA exp16<>+32(SB)/4, $0x80000000
DATA exp16<>+36(SB)/4, $0x80000000
DATA exp16<>+40(SB)/4, $0x80000000
DATA exp16<>+44(SB)/4, $0x80000000
DATA exp16<>+48(SB)/4, $0x80000000
DATA exp16<>+52(SB)/4, $0x80000000
DATA exp16<>+56(SB)/4, $0x80000000
DATA exp16<>+60(SB)/4, $0x80000000
DATA exp16<>+64(SB)/4, $0x3fb8aa3b
DATA exp16<>+68(SB)/4, $0x3fb8aa3b
DATA exp16<>+72(SB)/4, $0x3fb8aa3b
DATA exp16<>+76(SB)/4, $0x3fb8aa3b
DATA exp16<>+80(SB)/4, $0x3fb8aa3b
DATA exp16<>+84(SB)/4, $0x3fb8aa3b
DATA exp16<>+88(SB)/4, $0x3fb8aa3b
DATA exp16<>+92(SB)/4, $0x3fb8aa3b
DATA exp16<>+96(SB)/4, $0x3fb8aa3b
DATA exp16<>+100(SB)/4, $0x3fb8aa3b
DATA exp16<>+104(SB)/4, $0x3fb8aa3b
DATA exp16<>+108(SB)/4, $0x3fb8aa3b
DATA exp16<>+112(SB)/4, $0x3fb8aa3b
DATA exp16<>+116(SB)/4, $0x3fb8aa3b
DATA exp16<>+120(SB)/4, $0x3fb8aa3b
DATA exp16<>+124(SB)/4, $0x3fb8aa3b
DATA exp16<>+128(SB)/4, $0x3f318000
DATA exp16<>+132(SB)/4, $0x3f318000
DATA exp16<>+136(SB)/4, $0x3f318000
DATA exp16<>+140(SB)/4, $0x3f318000
DATA exp16<>+144(SB)/4, $0x3f318000
DATA exp16<>+148(SB)/4, $0x3f318000
DATA exp16<>+152(SB)/4, $0x3f318000
DATA exp16<>+156(SB)/4, $0x3f318000
DATA exp16<>+160(SB)/4, $0x3f318000
DATA exp16<>+164(SB)/4, $0x3f318000
DATA exp16<>+168(SB)/4, $0x3f318000
DATA exp16<>+172(SB)/4, $0x3f318000
DATA exp16<>+176(SB)/4, $0x3f318000
DATA exp16<>+180(SB)/4, $0x3f318000
DATA exp16<>+184(SB)/4, $0x3f318000
DATA exp16<>+188(SB)/4, $0x3f318000
DATA exp16<>+192(SB)/4, $0xb95e8083
DATA exp16<>+196(SB)/4, $0xb95e8083
DATA exp16<>+200(SB)/4, $0xb95e8083
DATA exp16<>+204(SB)/4, $0xb95e8083
DATA exp16<>+208(SB)/4, $0xb95e8083
DATA exp16<>+212(SB)/4, $0xb95e8083
DATA exp16<>+216(SB)/4, $0xb95e8083
DATA exp16<>+220(SB)/4, $0xb95e8083
DATA exp16<>+224(SB)/4, $0xb95e8083
DATA exp16<>+228(SB)/4, $0xb95e8083
DATA exp16<>+232(SB)/4, $0xb95e8083
DATA exp16<>+236(SB)/4, $0xb95e8083
DATA exp16<>+240(SB)/4, $0xb95e8083
DATA exp16<>+244(SB)/4, $0xb95e8083
DATA exp16<>+248(SB)/4, $0xb95e8083
DATA exp16<>+252(SB)/4, $0xb95e8083
DATA exp16<>+256(SB)/4, $0xc2aeac4f
DATA exp16<>+260(SB)/4, $0xc2aeac4f
DATA exp16<>+264(SB)/4, $0xc2aeac4f
DATA exp16<>+268(SB)/4, $0xc2aeac4f
DATA exp16<>+272(SB)/4, $0xc2aeac4f
DATA exp16<>+276(SB)/4, $0xc2aeac4f
DATA exp16<>+280(SB)/4, $0xc2aeac4f
DATA exp16<>+284(SB)/4, $0xc2aeac4f
DATA exp16<>+288(SB)/4, $0xc2aeac4f
DATA exp16<>+292(SB)/4, $0xc2aeac4f
DATA exp16<>+296(SB)/4, $0xc2aeac4f
DATA exp16<>+300(SB)/4, $0xc2aeac4f
DATA exp16<>+304(SB)/4, $0xc2aeac4f
DATA exp16<>+308(SB)/4, $0xc2aeac4f
DATA exp16<>+312(SB)/4, $0xc2aeac4f
DATA exp16<>+316(SB)/4, $0xc2aeac4f
DATA exp16<>+320(SB)/4, $0x3f800000
DATA exp16<>+324(SB)/4, $0x3f800000
DATA exp16<>+328(SB)/4, $0x3f800000
DATA exp16<>+332(SB)/4, $0x3f800000
DATA exp16<>+336(SB)/4, $0x3f800000
DATA exp16<>+340(SB)/4, $0x3f800000
DATA exp16<>+344(SB)/4, $0x3f800000
DATA exp16<>+348(SB)/4, $0x3f800000
DATA exp16<>+352(SB)/4, $0x3f800000
DATA exp16<>+356(SB)/4, $0x3f800000
DATA exp16<>+360(SB)/4, $0x3f800000
DATA exp16<>+364(SB)/4, $0x3f800000
DATA exp16<>+368(SB)/4, $0x3f800000
DATA exp16<>+372(SB)/4, $0x3f800000
DATA exp16<>+376(SB)/4, $0x3f800000
DATA exp16<>+380(SB)/4, $0x3f800000
DATA exp16<>+384(SB)/4, $0x3efffffc
DATA exp16<>+388(SB)/4, $0x3efffffc
DATA exp16<>+392(SB)/4, $0x3efffffc
DATA exp16<>+396(SB)/4, $0x3efffffc
DATA exp16<>+400(SB)/4, $0x3efffffc
DATA exp16<>+404(SB)/4, $0x3efffffc
DATA exp16<>+408(SB)/4, $0x3efffffc
DATA exp16<>+412(SB)/4, $0x3efffffc
DATA exp16<>+416(SB)/4, $0x3efffffc
DATA exp16<>+420(SB)/4, $0x3efffffc
DATA exp16<>+424(SB)/4, $0x3efffffc
DATA exp16<>+428(SB)/4, $0x3efffffc
DATA exp16<>+432(SB)/4, $0x3efffffc
DATA exp16<>+436(SB)/4, $0x3efffffc
DATA exp16<>+440(SB)/4, $0x3efffffc
DATA exp16<>+444(SB)/4, $0x3efffffc
DATA exp16<>+448(SB)/4, $0x3e2aaa47
DATA exp16<>+452(SB)/4, $0x3e2aaa47
DATA exp16<>+456(SB)/4, $0x3e2aaa47
DATA exp16<>+460(SB)/4, $0x3e2aaa47
DATA exp16<>+464(SB)/4, $0x3e2aaa47
DATA exp16<>+468(SB)/4, $0x3e2aaa47
DATA exp16<>+472(SB)/4, $0x3e2aaa47
DATA exp16<>+476(SB)/4, $0x3e2aaa47
DATA exp16<>+480(SB)/4, $0x3e2aaa47
DATA exp16<>+484(SB)/4, $0x3e2aaa47
DATA exp16<>+488(SB)/4, $0x3e2aaa47
DATA exp16<>+492(SB)/4, $0x3e2aaa47
DATA exp16<>+496(SB)/4, $0x3e2aaa47
DATA exp16<>+500(SB)/4, $0x3e2aaa47
DATA exp16<>+504(SB)/4, $0x3e2aaa47
DATA exp16<>+508(SB)/4, $0x3e2aaa47
DATA exp16<>+512(SB)/4, $0x3d2aadac
DATA exp16<>+516(SB)/4, $0x3d2aadac
DATA exp16<>+520(SB)/4, $0x3d2aadac
DATA exp16<>+524(SB)/4, $0x3d2aadac
DATA exp16<>+528(SB)/4, $0x3d2aadac
DATA exp16<>+532(SB)/4, $0x3d2aadac
DATA exp16<>+536(SB)/4, $0x3d2aadac
DATA exp16<>+540(SB)/4, $0x3d2aadac
DATA exp16<>+544(SB)/4, $0x3d2aadac
DATA exp16<>+548(SB)/4, $0x3d2aadac
DATA exp16<>+552(SB)/4, $0x3d2aadac
DATA exp16<>+556(SB)/4, $0x3d2aadac
DATA exp16<>+560(SB)/4, $0x3d2aadac
DATA exp16<>+564(SB)/4, $0x3d2aadac
DATA exp16<>+568(SB)/4, $0x3d2aadac
DATA exp16<>+572(SB)/4, $0x3d2aadac
DATA exp16<>+576(SB)/4, $0x3c091dc7
DATA exp16<>+580(SB)/4, $0x3c091dc7
DATA exp16<>+584(SB)/4, $0x3c091dc7
DATA exp16<>+588(SB)/4, $0x3c091dc7
DATA exp16<>+592(SB)/4, $0x3c091dc7
DATA exp16<>+596(SB)/4, $0x3c091dc7
DATA exp16<>+600(SB)/4, $0x3c091dc7
DATA exp16<>+604(SB)/4, $0x3c091dc7
DATA exp16<>+608(SB)/4, $0x3c091dc7
DATA exp16<>+612(SB)/4, $0x3c091dc7
DATA exp16<>+616(SB)/4, $0x3c091dc7
DATA exp16<>+620(SB)/4, $0x3c091dc7
DATA exp16<>+624(SB)/4, $0x3c091dc7
DATA exp16<>+628(SB)/4, $0x3c091dc7
DATA exp16<>+632(SB)/4, $0x3c091dc7
DATA exp16<>+636(SB)/4, $0x3c091dc7
DATA exp16<>+640(SB)/4, $0x3ab43e11
DATA exp16<>+644(SB)/4, $0x3ab43e11
DATA exp16<>+648(SB)/4, $0x3ab43e11
DATA exp16<>+652(SB)/4, $0x3ab43e11
DATA exp16<>+656(SB)/4, $0x3ab43e11
DATA exp16<>+660(SB)/4, $0x3ab43e11
DATA exp16<>+664(SB)/4, $0x3ab43e11
DATA exp16<>+668(SB)/4, $0x3ab43e11
DATA exp16<>+672(SB)/4, $0x3ab43e11
DATA exp16<>+676(SB)/4, $0x3ab43e11
DATA exp16<>+680(SB)/4, $0x3ab43e11
DATA exp16<>+684(SB)/4, $0x3ab43e11
DATA exp16<>+688(SB)/4, $0x3ab43e11
DATA exp16<>+692(SB)/4, $0x3ab43e11
DATA exp16<>+696(SB)/4, $0x3ab43e11
DATA exp16<>+700(SB)/4, $0x3ab43e11
DATA exp16<>+704(SB)/4, $0x0000007f
DATA exp16<>+708(SB)/4, $0x0000007f
DATA exp16<>+712(SB)/4, $0x0000007f
DATA exp16<>+716(SB)/4, $0x0000007f
DATA exp16<>+720(SB)/4, $0x0000007f
DATA exp16<>+724(SB)/4, $0x0000007f
DATA exp16<>+728(SB)/4, $0x0000007f
DATA exp16<>+732(SB)/4, $0x0000007f
DATA exp16<>+736(SB)/4, $0x0000007f
DATA exp16<>+740(SB)/4, $0x0000007f
DATA exp16<>+744(SB)/4, $0x0000007f
DATA exp16<>+748(SB)/4, $0x0000007f
DATA exp16<>+752(SB)/4, $0x0000007f
DATA exp16<>+756(SB)/4, $0x0000007f
DATA exp16<>+760(SB)/4, $0x0000007f
DATA exp16<>+764(SB)/4, $0x0000007f
GLOBL exp16<>(SB), RODATA|NOPTR, $768

// EXPNEG16: Z6 = e^Z4 for Z4 <= 0 (clamped below at ln(2^-126)).
// Clobbers Z4, Z5, Z7.
#define EXPNEG16 \
	VMAXPS exp16<>+256(SB), Z4, Z4 \
	VMULPS exp16<>+64(SB), Z4, Z5 \
	VRNDSCALEPS $0, Z5, Z5 \
	VFNMADD231PS exp16<>+128(SB), Z5, Z4 \
	VFNMADD231PS exp16<>+192(SB), Z5, Z4 \
	VCVTPS2DQ Z5, Z5 \
	VPADDD exp16<>+704(SB), Z5, Z5 \
	VPSLLD $23, Z5, Z5 \
	VMOVUPS exp16<>+640(SB), Z6 \
	VFMADD213PS exp16<>+576(SB), Z4, Z6 \
	VFMADD213PS exp16<>+512(SB), Z4, Z6 \
	VFMADD213PS exp16<>+448(SB), Z4, Z6 \
	VFMADD213PS exp16<>+384(SB), Z4, Z6 \
	VMULPS Z4, Z4, Z7 \
	VADDPS exp16<>+320(SB), Z4, Z4 \
	VFMADD213PS Z4, Z7, Z6 \
	VMULPS Z5, Z6, Z6

// SIGMOID16(z, s): as SIGMOID in vec_amd64.s; the z < 0 lanes come from
// the sign-bit mask K1. Clobbers Z4-Z7, K1.
#define SIGMOID16(z, s) \
	VPORD exp16<>+0(SB), z, Z4 \
	EXPNEG16 \
	VADDPS exp16<>+320(SB), Z6, Z7 \
	VMOVUPS exp16<>+320(SB), s \
	VDIVPS Z7, s, s \
	VMULPS s, Z6, Z6 \
	VPMOVD2M z, K1 \
	VBLENDMPS Z6, s, K1, s

// func siluAffineAVX512(dst, src *float32, n int, a, b float32)
// n a multiple of 16.
TEXT ·siluAffineAVX512(SB), NOSPLIT, $0-32
	MOVQ dst+0(FP), DI
	MOVQ src+8(FP), SI
	MOVQ n+16(FP), CX
	VBROADCASTSS a+24(FP), Z14
	VBROADCASTSS b+28(FP), Z15
silu16_loop:
	CMPQ CX, $16
	JL silu16_done
	VMOVUPS (SI), Z0
	VFMADD213PS Z15, Z14, Z0
	SIGMOID16(Z0, Z1)
	VMULPS Z1, Z0, Z0
	VMOVUPS Z0, (DI)
	ADDQ $64, SI
	ADDQ $64, DI
	SUBQ $16, CX
	JMP silu16_loop
silu16_done:
	VZEROUPPER
	RET

// func siluBwdAVX512(dz, x, dy *float32, n int, mu, rs, ga, be float32) (sdz, sdzx float32)
// n a multiple of 16.
TEXT ·siluBwdAVX512(SB), NOSPLIT, $0-56
	MOVQ dz+0(FP), DI
	MOVQ x+8(FP), SI
	MOVQ dy+16(FP), DX
	MOVQ n+24(FP), CX
	VBROADCASTSS mu+32(FP), Z10
	VBROADCASTSS rs+36(FP), Z11
	VBROADCASTSS ga+40(FP), Z12
	VBROADCASTSS be+44(FP), Z13
	VXORPS Z14, Z14, Z14
	VXORPS Z15, Z15, Z15
bwd16_loop:
	CMPQ CX, $16
	JL bwd16_done
	VMOVUPS (SI), Z0
	VSUBPS Z10, Z0, Z0
	VMULPS Z11, Z0, Z0
	VMOVUPS Z0, Z1
	VFMADD213PS Z13, Z12, Z1
	SIGMOID16(Z1, Z2)
	VMOVUPS exp16<>+320(SB), Z3
	VSUBPS Z2, Z3, Z3
	VMULPS Z1, Z3, Z3
	VADDPS exp16<>+320(SB), Z3, Z3
	VMULPS Z2, Z3, Z3
	VMULPS (DX), Z3, Z3
	VMOVUPS Z3, (DI)
	VADDPS Z3, Z14, Z14
	VFMADD231PS Z3, Z0, Z15
	ADDQ $64, SI
	ADDQ $64, DI
	ADDQ $64, DX
	SUBQ $16, CX
	JMP bwd16_loop
bwd16_done:
	VEXTRACTF64X4 $1, Z14, Y4
	VADDPS Y4, Y14, Y14
	VEXTRACTF128 $1, Y14, X4
	VADDPS X4, X14, X14
	VHADDPS X14, X14, X14
	VHADDPS X14, X14, X14
	VEXTRACTF64X4 $1, Z15, Y5
	VADDPS Y5, Y15, Y15
	VEXTRACTF128 $1, Y15, X5
	VADDPS X5, X15, X15
	VHADDPS X15, X15, X15
	VHADDPS X15, X15, X15
	VZEROUPPER
	MOVSS X14, sdz+48(FP)
	MOVSS X15, sdzx+52(FP)
	RET

// func expSumAVX512(r *float32, n int, m float32) float32
// n a multiple of 16.
TEXT ·expSumAVX512(SB), NOSPLIT, $0-28
	MOVQ r+0(FP), DI
	MOVQ n+8(FP), CX
	VBROADCASTSS m+16(FP), Z10
	VXORPS Z14, Z14, Z14
exp16_loop:
	CMPQ CX, $16
	JL exp16_done
	VMOVUPS (DI), Z4
	VSUBPS Z10, Z4, Z4
	EXPNEG16
	VMOVUPS Z6, (DI)
	VADDPS Z6, Z14, Z14
	ADDQ $64, DI
	SUBQ $16, CX
	JMP exp16_loop
exp16_done:
	VEXTRACTF64X4 $1, Z14, Y4
	VADDPS Y4, Y14, Y14
	VEXTRACTF128 $1, Y14, X4
	VADDPS X4, X14, X14
	VHADDPS X14, X14, X14
	VHADDPS X14, X14, X14
	VZEROUPPER
	MOVSS X14, ret+24(FP)
	RET

// func maxAVX512(r *float32, n int) float32
// n a multiple of 16, at least 16. Four running maxima, so that the
// VMAXPS (latency 2-4) do not wait on each other.
TEXT ·maxAVX512(SB), NOSPLIT, $0-20
	MOVQ r+0(FP), DI
	MOVQ n+8(FP), CX
	VMOVUPS (DI), Z0
	VMOVAPS Z0, Z1
	VMOVAPS Z0, Z2
	VMOVAPS Z0, Z3
max64_loop:
	CMPQ CX, $64
	JL max16_loop
	VMAXPS (DI), Z0, Z0
	VMAXPS 64(DI), Z1, Z1
	VMAXPS 128(DI), Z2, Z2
	VMAXPS 192(DI), Z3, Z3
	ADDQ $256, DI
	SUBQ $64, CX
	JMP max64_loop
max16_loop:
	CMPQ CX, $16
	JL max_done
	VMAXPS (DI), Z0, Z0
	ADDQ $64, DI
	SUBQ $16, CX
	JMP max16_loop
max_done:
	VMAXPS Z1, Z0, Z0
	VMAXPS Z3, Z2, Z2
	VMAXPS Z2, Z0, Z0
	VEXTRACTF64X4 $1, Z0, Y1
	VMAXPS Y1, Y0, Y0
	VEXTRACTF128 $1, Y0, X1
	VMAXPS X1, X0, X0
	VPERMILPS $0x4e, X0, X1
	VMAXPS X1, X0, X0
	VPERMILPS $0xb1, X0, X1
	VMAXPS X1, X0, X0
	VZEROUPPER
	MOVSS X0, ret+16(FP)
	RET
