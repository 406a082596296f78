//go:build amd64

#include "textflag.h"

// Winograd F(2x2, 3x3) transforms on 16 channels at a time (one ZMM
// register per pixel of an nChw16c block). See winograd.go for the math
// and the layouts.

// WIN_IN applies B^T = [1 0 -1 0; 0 1 1 0; 0 -1 1 0; 0 1 0 -1] to four
// vectors a b c d, writing p q r s: p = a-c, q = b+c, r = c-b, s = b-d.
#define WIN_IN(a, b, c, d, p, q, r, s) \
	VSUBPS c, a, p; \
	VADDPS c, b, q; \
	VSUBPS b, c, r; \
	VSUBPS d, b, s

// WIN_OUT applies A^T = [1 1 1 0; 0 1 -1 -1] to four vectors a b c d,
// writing p = a+b+c and q = b-c-d.
#define WIN_OUT(a, b, c, d, p, q) \
	VADDPS b, a, p; \
	VADDPS c, p, p; \
	VSUBPS c, b, q; \
	VSUBPS d, q, q

// LOAD_TRANSFORM_PATCH loads the 4x4 pixels at SI (rows BX bytes apart, pixels 64
// bytes apart) into Z0..Z15, pixel (r, j) in Z(4r+j); then the input
// transform leaves V(i, j) in Z(4i+j).
#define LOAD_TRANSFORM_PATCH \
	MOVQ SI, R8; \
	VMOVUPS 0(R8), Z0; \
	VMOVUPS 64(R8), Z1; \
	VMOVUPS 128(R8), Z2; \
	VMOVUPS 192(R8), Z3; \
	ADDQ BX, R8; \
	VMOVUPS 0(R8), Z4; \
	VMOVUPS 64(R8), Z5; \
	VMOVUPS 128(R8), Z6; \
	VMOVUPS 192(R8), Z7; \
	ADDQ BX, R8; \
	VMOVUPS 0(R8), Z8; \
	VMOVUPS 64(R8), Z9; \
	VMOVUPS 128(R8), Z10; \
	VMOVUPS 192(R8), Z11; \
	ADDQ BX, R8; \
	VMOVUPS 0(R8), Z12; \
	VMOVUPS 64(R8), Z13; \
	VMOVUPS 128(R8), Z14; \
	VMOVUPS 192(R8), Z15; \
	WIN_IN(Z0, Z1, Z2, Z3, Z16, Z17, Z18, Z19); \
	WIN_IN(Z4, Z5, Z6, Z7, Z20, Z21, Z22, Z23); \
	WIN_IN(Z8, Z9, Z10, Z11, Z24, Z25, Z26, Z27); \
	WIN_IN(Z12, Z13, Z14, Z15, Z28, Z29, Z30, Z31); \
	WIN_IN(Z16, Z20, Z24, Z28, Z0, Z4, Z8, Z12); \
	WIN_IN(Z17, Z21, Z25, Z29, Z1, Z5, Z9, Z13); \
	WIN_IN(Z18, Z22, Z26, Z30, Z2, Z6, Z10, Z14); \
	WIN_IN(Z19, Z23, Z27, Z31, Z3, Z7, Z11, Z15)

// func winoInBF16AVX512(v *uint16, x *float32, n, xRow, vPos, vTile int)
// Input transform of n tiles side by side (each 2 pixels right of the
// last): tile t's 4x4 patch starts at x + 128*t bytes, its rows xRow
// bytes apart; its 16 transformed vectors go, as bf16 (VCVTNEPS2BF16,
// round to nearest even; 32 bytes each), to v + t*vTile + p*vPos bytes,
// p = 4i+j.
TEXT ·winoInBF16AVX512(SB), NOSPLIT, $0-48
	MOVQ v+0(FP), DI
	MOVQ x+8(FP), SI
	MOVQ n+16(FP), CX
	MOVQ xRow+24(FP), BX
	MOVQ vPos+32(FP), R9
	MOVQ vTile+40(FP), R11
winoInBF16_loop:
	TESTQ CX, CX
	JZ winoInBF16_done
	LOAD_TRANSFORM_PATCH
	MOVQ DI, R10
	BYTE $0x62; BYTE $0xe2; BYTE $0x7e; BYTE $0x48; BYTE $0x72; BYTE $0xc0 // VCVTNEPS2BF16 Z0, Y16
	VMOVDQU32 Y16, (R10)
	ADDQ R9, R10
	BYTE $0x62; BYTE $0xe2; BYTE $0x7e; BYTE $0x48; BYTE $0x72; BYTE $0xc1 // VCVTNEPS2BF16 Z1, Y16
	VMOVDQU32 Y16, (R10)
	ADDQ R9, R10
	BYTE $0x62; BYTE $0xe2; BYTE $0x7e; BYTE $0x48; BYTE $0x72; BYTE $0xc2 // VCVTNEPS2BF16 Z2, Y16
	VMOVDQU32 Y16, (R10)
	ADDQ R9, R10
	BYTE $0x62; BYTE $0xe2; BYTE $0x7e; BYTE $0x48; BYTE $0x72; BYTE $0xc3 // VCVTNEPS2BF16 Z3, Y16
	VMOVDQU32 Y16, (R10)
	ADDQ R9, R10
	BYTE $0x62; BYTE $0xe2; BYTE $0x7e; BYTE $0x48; BYTE $0x72; BYTE $0xc4 // VCVTNEPS2BF16 Z4, Y16
	VMOVDQU32 Y16, (R10)
	ADDQ R9, R10
	BYTE $0x62; BYTE $0xe2; BYTE $0x7e; BYTE $0x48; BYTE $0x72; BYTE $0xc5 // VCVTNEPS2BF16 Z5, Y16
	VMOVDQU32 Y16, (R10)
	ADDQ R9, R10
	BYTE $0x62; BYTE $0xe2; BYTE $0x7e; BYTE $0x48; BYTE $0x72; BYTE $0xc6 // VCVTNEPS2BF16 Z6, Y16
	VMOVDQU32 Y16, (R10)
	ADDQ R9, R10
	BYTE $0x62; BYTE $0xe2; BYTE $0x7e; BYTE $0x48; BYTE $0x72; BYTE $0xc7 // VCVTNEPS2BF16 Z7, Y16
	VMOVDQU32 Y16, (R10)
	ADDQ R9, R10
	BYTE $0x62; BYTE $0xc2; BYTE $0x7e; BYTE $0x48; BYTE $0x72; BYTE $0xc0 // VCVTNEPS2BF16 Z8, Y16
	VMOVDQU32 Y16, (R10)
	ADDQ R9, R10
	BYTE $0x62; BYTE $0xc2; BYTE $0x7e; BYTE $0x48; BYTE $0x72; BYTE $0xc1 // VCVTNEPS2BF16 Z9, Y16
	VMOVDQU32 Y16, (R10)
	ADDQ R9, R10
	BYTE $0x62; BYTE $0xc2; BYTE $0x7e; BYTE $0x48; BYTE $0x72; BYTE $0xc2 // VCVTNEPS2BF16 Z10, Y16
	VMOVDQU32 Y16, (R10)
	ADDQ R9, R10
	BYTE $0x62; BYTE $0xc2; BYTE $0x7e; BYTE $0x48; BYTE $0x72; BYTE $0xc3 // VCVTNEPS2BF16 Z11, Y16
	VMOVDQU32 Y16, (R10)
	ADDQ R9, R10
	BYTE $0x62; BYTE $0xc2; BYTE $0x7e; BYTE $0x48; BYTE $0x72; BYTE $0xc4 // VCVTNEPS2BF16 Z12, Y16
	VMOVDQU32 Y16, (R10)
	ADDQ R9, R10
	BYTE $0x62; BYTE $0xc2; BYTE $0x7e; BYTE $0x48; BYTE $0x72; BYTE $0xc5 // VCVTNEPS2BF16 Z13, Y16
	VMOVDQU32 Y16, (R10)
	ADDQ R9, R10
	BYTE $0x62; BYTE $0xc2; BYTE $0x7e; BYTE $0x48; BYTE $0x72; BYTE $0xc6 // VCVTNEPS2BF16 Z14, Y16
	VMOVDQU32 Y16, (R10)
	ADDQ R9, R10
	BYTE $0x62; BYTE $0xc2; BYTE $0x7e; BYTE $0x48; BYTE $0x72; BYTE $0xc7 // VCVTNEPS2BF16 Z15, Y16
	VMOVDQU32 Y16, (R10)
	ADDQ $128, SI
	ADDQ R11, DI
	DECQ CX
	JMP winoInBF16_loop
winoInBF16_done:
	VZEROUPPER
	RET

// func winoOutAVX512(y, m, bias *float32, n, yRow, mPos, mTile int)
// Output transform of n tiles side by side: tile t's 16 vectors are at
// m + t*mTile + p*mPos bytes (p = 4i+j); its 2x2 output pixels, plus the
// 16 biases at bias (none when nil), go to y + 128*t bytes (row 0) and
// yRow bytes below (row 1), pixels 64 bytes apart.
TEXT ·winoOutAVX512(SB), NOSPLIT, $0-56
	MOVQ y+0(FP), DI
	MOVQ m+8(FP), SI
	MOVQ bias+16(FP), DX
	MOVQ n+24(FP), CX
	MOVQ yRow+32(FP), BX
	MOVQ mPos+40(FP), R9
	MOVQ mTile+48(FP), R11
	VXORPS Z31, Z31, Z31
	TESTQ DX, DX
	JZ winoOut_loop
	VMOVUPS (DX), Z31
winoOut_loop:
	TESTQ CX, CX
	JZ winoOut_done
	MOVQ SI, R10
	VMOVUPS (R10), Z0
	ADDQ R9, R10
	VMOVUPS (R10), Z1
	ADDQ R9, R10
	VMOVUPS (R10), Z2
	ADDQ R9, R10
	VMOVUPS (R10), Z3
	ADDQ R9, R10
	VMOVUPS (R10), Z4
	ADDQ R9, R10
	VMOVUPS (R10), Z5
	ADDQ R9, R10
	VMOVUPS (R10), Z6
	ADDQ R9, R10
	VMOVUPS (R10), Z7
	ADDQ R9, R10
	VMOVUPS (R10), Z8
	ADDQ R9, R10
	VMOVUPS (R10), Z9
	ADDQ R9, R10
	VMOVUPS (R10), Z10
	ADDQ R9, R10
	VMOVUPS (R10), Z11
	ADDQ R9, R10
	VMOVUPS (R10), Z12
	ADDQ R9, R10
	VMOVUPS (R10), Z13
	ADDQ R9, R10
	VMOVUPS (R10), Z14
	ADDQ R9, R10
	VMOVUPS (R10), Z15
	WIN_OUT(Z0, Z1, Z2, Z3, Z16, Z17)
	WIN_OUT(Z4, Z5, Z6, Z7, Z18, Z19)
	WIN_OUT(Z8, Z9, Z10, Z11, Z20, Z21)
	WIN_OUT(Z12, Z13, Z14, Z15, Z22, Z23)
	WIN_OUT(Z16, Z18, Z20, Z22, Z24, Z25)
	WIN_OUT(Z17, Z19, Z21, Z23, Z26, Z27)
	VADDPS Z31, Z24, Z24
	VADDPS Z31, Z25, Z25
	VADDPS Z31, Z26, Z26
	VADDPS Z31, Z27, Z27
	VMOVUPS Z24, 0(DI)
	VMOVUPS Z26, 64(DI)
	MOVQ DI, R8
	ADDQ BX, R8
	VMOVUPS Z25, 0(R8)
	VMOVUPS Z27, 64(R8)
	ADDQ $128, DI
	ADDQ R11, SI
	DECQ CX
	JMP winoOut_loop
winoOut_done:
	VZEROUPPER
	RET

// func toBF16AVX512(dst *uint16, src *float32, n int)
// dst[i] = bf16(src[i]) (VCVTNEPS2BF16, round to nearest even) for i < n,
// n a multiple of 16.
TEXT ·toBF16AVX512(SB), NOSPLIT, $0-24
	MOVQ dst+0(FP), DI
	MOVQ src+8(FP), SI
	MOVQ n+16(FP), CX
toBF16_loop:
	CMPQ CX, $16
	JL toBF16_done
	VMOVUPS (SI), Z0
	BYTE $0x62; BYTE $0xe2; BYTE $0x7e; BYTE $0x48; BYTE $0x72; BYTE $0xc0 // VCVTNEPS2BF16 Z0, Y16
	VMOVDQU32 Y16, (DI)
	ADDQ $64, SI
	ADDQ $32, DI
	SUBQ $16, CX
	JMP toBF16_loop
toBF16_done:
	VZEROUPPER
	RET
