package pt

import (
	"encoding/binary"
	"math"
)

// gather converts the elements of a strided view to float32 in row-major
// order: dst[i] = storage[sum_k idx_k * stride[k]] for the multi-index idx
// of i, where src holds the storage from the view's offset on. Integer and
// bool types convert as float32(v).
func gather(dst []float32, src []byte, shape []int, stride []int64, dt string, order binary.ByteOrder) {
	if isContiguous(shape, stride) {
		decodeRun(dst, src, dt, order)
		return
	}
	es := int64(elemSize(dt))
	// Walk the multi-index with an odometer, innermost dimension fastest.
	r := len(shape)
	idx := make([]int, r)
	var pos int64 // element offset of idx in src
	for i := range dst {
		dst[i] = decodeOne(src[pos*es:], dt, order)
		for k := r - 1; k >= 0; k-- {
			idx[k]++
			pos += stride[k]
			if idx[k] < shape[k] {
				break
			}
			pos -= int64(idx[k]) * stride[k]
			idx[k] = 0
		}
	}
}

// isContiguous reports whether a view is row-major contiguous: each
// stride equals the product of the later sizes (size-1 dimensions may have
// any stride).
func isContiguous(shape []int, stride []int64) bool {
	want := int64(1)
	for k := len(shape) - 1; k >= 0; k-- {
		if shape[k] != 1 && stride[k] != want {
			return false
		}
		want *= int64(shape[k])
	}
	return true
}

func elemSize(dt string) int {
	switch dt {
	case "F64", "I64":
		return 8
	case "F32", "I32":
		return 4
	case "F16", "BF16", "I16":
		return 2
	}
	return 1
}

// decodeRun converts len(dst) consecutive elements.
func decodeRun(dst []float32, src []byte, dt string, order binary.ByteOrder) {
	switch {
	case dt == "F32" && order == binary.LittleEndian:
		for i := range dst {
			dst[i] = math.Float32frombits(binary.LittleEndian.Uint32(src[4*i:]))
		}
	case dt == "F16" && order == binary.LittleEndian:
		for i := range dst {
			dst[i] = halfToFloat32(binary.LittleEndian.Uint16(src[2*i:]))
		}
	default:
		es := elemSize(dt)
		for i := range dst {
			dst[i] = decodeOne(src[i*es:], dt, order)
		}
	}
}

// decodeOne converts the element at the start of b.
func decodeOne(b []byte, dt string, order binary.ByteOrder) float32 {
	switch dt {
	case "F32":
		return math.Float32frombits(order.Uint32(b))
	case "F16":
		return halfToFloat32(order.Uint16(b))
	case "BF16":
		return math.Float32frombits(uint32(order.Uint16(b)) << 16)
	case "F64":
		return float32(math.Float64frombits(order.Uint64(b)))
	case "I64":
		return float32(int64(order.Uint64(b)))
	case "I32":
		return float32(int32(order.Uint32(b)))
	case "I16":
		return float32(int16(order.Uint16(b)))
	case "I8":
		return float32(int8(b[0]))
	case "BOOL":
		if b[0] != 0 {
			return 1
		}
		return 0
	}
	return float32(b[0]) // U8
}

// halfToFloat32 converts an IEEE 754 binary16 value to float32 exactly:
// 1 sign bit, 5 exponent bits (bias 15), 10 fraction bits; subnormals,
// infinities and NaN payloads included.
func halfToFloat32(h uint16) float32 {
	sign := uint32(h&0x8000) << 16
	exp := uint32(h>>10) & 0x1f
	frac := uint32(h & 0x3ff)
	switch exp {
	case 0x1f:
		return math.Float32frombits(sign | 0x7f800000 | frac<<13)
	case 0:
		if frac == 0 {
			return math.Float32frombits(sign)
		}
		// frac * 2^-24, exact in float32.
		v := float32(frac) * (1.0 / (1 << 24))
		return math.Float32frombits(sign | math.Float32bits(v))
	}
	return math.Float32frombits(sign | (exp+112)<<23 | frac<<13)
}
