package weights

import (
	"encoding/binary"
	"math"
)

// dtypeSize returns the element size in bytes of a dtype Read converts to
// float32, and false for any other dtype.
func dtypeSize(dt string) (int, bool) {
	switch dt {
	case "F64", "I64":
		return 8, true
	case "F32", "I32":
		return 4, true
	case "F16", "BF16", "I16":
		return 2, true
	case "I8", "U8", "BOOL":
		return 1, true
	}
	return 0, false
}

// supportedDTypes lists the dtypes dtypeSize knows, for error messages.
const supportedDTypes = "F32, F16, BF16, F64, I64, I32, I16, I8, U8, BOOL"

// decode converts little-endian elements of dtype dt in src to float32 in
// dst; len(src) must be len(dst) times dtypeSize(dt).
func decode(dst []float32, src []byte, dt string) {
	switch dt {
	case "F32":
		for i := range dst {
			dst[i] = math.Float32frombits(binary.LittleEndian.Uint32(src[4*i:]))
		}
	case "F16":
		for i := range dst {
			dst[i] = halfToFloat32(binary.LittleEndian.Uint16(src[2*i:]))
		}
	case "BF16":
		for i := range dst {
			dst[i] = math.Float32frombits(uint32(binary.LittleEndian.Uint16(src[2*i:])) << 16)
		}
	case "F64":
		for i := range dst {
			dst[i] = float32(math.Float64frombits(binary.LittleEndian.Uint64(src[8*i:])))
		}
	case "I64":
		for i := range dst {
			dst[i] = float32(int64(binary.LittleEndian.Uint64(src[8*i:])))
		}
	case "I32":
		for i := range dst {
			dst[i] = float32(int32(binary.LittleEndian.Uint32(src[4*i:])))
		}
	case "I16":
		for i := range dst {
			dst[i] = float32(int16(binary.LittleEndian.Uint16(src[2*i:])))
		}
	case "I8":
		for i := range dst {
			dst[i] = float32(int8(src[i]))
		}
	case "U8", "BOOL":
		for i := range dst {
			dst[i] = float32(src[i])
		}
	}
}

// halfToFloat32 converts an IEEE 754 binary16 value to float32 exactly:
// sign, 5-bit exponent (bias 15), 10-bit fraction; subnormals, infinities
// and NaNs included.
func halfToFloat32(h uint16) float32 {
	sign := uint32(h>>15) << 31
	exp := uint32(h>>10) & 0x1f
	frac := uint32(h) & 0x3ff
	switch {
	case exp == 0x1f: // Inf or NaN; keep the payload
		return math.Float32frombits(sign | 0xff<<23 | frac<<13)
	case exp != 0: // normal: rebias 15 -> 127
		return math.Float32frombits(sign | (exp+127-15)<<23 | frac<<13)
	case frac == 0: // signed zero
		return math.Float32frombits(sign)
	}
	// Subnormal: value = frac * 2^-24; normalise into a float32.
	e := uint32(127 - 15 + 1)
	for frac&0x400 == 0 {
		frac <<= 1
		e--
	}
	return math.Float32frombits(sign | e<<23 | (frac&0x3ff)<<13)
}
