package npy

import (
	"fmt"
	"strconv"
	"unicode/utf8"
)

// header is the decoded dict literal of a .npy header.
type header struct {
	dtype DType
	shape []int
}

// parseHeader decodes the Python dict literal of a .npy header, e.g.
//
//	{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }
//
// It accepts the literal forms NumPy and Python 2 write (single or double
// quotes, trailing commas, "3L" integers) and nothing else: the dict must
// hold exactly the keys 'descr', 'fortran_order' and 'shape'.
func parseHeader(b []byte, major byte) (header, error) {
	if major < 3 {
		for i, c := range b {
			if c >= 0x80 {
				return header{}, fmt.Errorf("%w: header byte %d is not ASCII (version %d headers are latin-1/ASCII)", ErrFormat, i, major)
			}
		}
	} else if !utf8.Valid(b) {
		return header{}, fmt.Errorf("%w: version 3 header is not valid UTF-8", ErrFormat)
	}
	p := &lit{s: string(b)}
	var (
		h                             header
		seenDescr, seenOrder, seenShp bool
		fortran                       bool
	)
	if err := p.expect('{'); err != nil {
		return h, err
	}
	for {
		p.space()
		if p.peek() == '}' {
			p.i++
			break
		}
		key, err := p.str()
		if err != nil {
			return h, err
		}
		if err := p.expect(':'); err != nil {
			return h, err
		}
		switch key {
		case "descr":
			if seenDescr {
				return h, fmt.Errorf("%w: duplicate key 'descr'", ErrFormat)
			}
			seenDescr = true
			p.space()
			if p.peek() != '\'' && p.peek() != '"' {
				return h, fmt.Errorf("%w: 'descr' is not a string; structured dtypes are not supported (want one of <f4, <f8, <i8, <i4, |u1)", ErrFormat)
			}
			s, err := p.str()
			if err != nil {
				return h, err
			}
			h.dtype = DType(s)
		case "fortran_order":
			if seenOrder {
				return h, fmt.Errorf("%w: duplicate key 'fortran_order'", ErrFormat)
			}
			seenOrder = true
			v, err := p.boolean()
			if err != nil {
				return h, err
			}
			fortran = v
		case "shape":
			if seenShp {
				return h, fmt.Errorf("%w: duplicate key 'shape'", ErrFormat)
			}
			seenShp = true
			s, err := p.tuple()
			if err != nil {
				return h, err
			}
			h.shape = s
		default:
			return h, fmt.Errorf("%w: unexpected header key %q (want 'descr', 'fortran_order', 'shape')", ErrFormat, key)
		}
		p.space()
		switch p.peek() {
		case ',':
			p.i++
		case '}':
		default:
			return h, p.errorf("want ',' or '}'")
		}
	}
	p.space()
	if p.i != len(p.s) {
		return h, p.errorf("trailing bytes after the header dict")
	}
	switch {
	case !seenDescr:
		return h, fmt.Errorf("%w: header lacks 'descr'", ErrFormat)
	case !seenOrder:
		return h, fmt.Errorf("%w: header lacks 'fortran_order'", ErrFormat)
	case !seenShp:
		return h, fmt.Errorf("%w: header lacks 'shape'", ErrFormat)
	}
	if fortran {
		return h, fmt.Errorf("%w: fortran_order is True; only C-order arrays are supported (save with np.ascontiguousarray)", ErrFormat)
	}
	if h.dtype.Size() == 0 {
		hint := ""
		if len(h.dtype) > 0 && h.dtype[0] == '>' {
			hint = " (big-endian data is not supported)"
		}
		return h, fmt.Errorf("%w: descr %q%s, want one of <f4, <f8, <i8, <i4, |u1", ErrFormat, string(h.dtype), hint)
	}
	return h, nil
}

// lit is a cursor over a Python literal.
type lit struct {
	s        string
	i        int
	hadComma bool // the last tuple element was followed by a comma
}

func (p *lit) errorf(msg string) error {
	return fmt.Errorf("%w: header dict at byte %d: %s", ErrFormat, p.i, msg)
}

func (p *lit) peek() byte {
	if p.i < len(p.s) {
		return p.s[p.i]
	}
	return 0
}

func (p *lit) space() {
	for p.i < len(p.s) && (p.s[p.i] == ' ' || p.s[p.i] == '\t' || p.s[p.i] == '\n' || p.s[p.i] == '\r') {
		p.i++
	}
}

func (p *lit) expect(c byte) error {
	p.space()
	if p.peek() != c {
		return p.errorf(fmt.Sprintf("want %q", c))
	}
	p.i++
	return nil
}

// str reads a quoted string without escapes (header strings never need
// them).
func (p *lit) str() (string, error) {
	p.space()
	q := p.peek()
	if q != '\'' && q != '"' {
		return "", p.errorf("want a quoted string")
	}
	start := p.i + 1
	for j := start; j < len(p.s); j++ {
		switch p.s[j] {
		case q:
			p.i = j + 1
			return p.s[start:j], nil
		case '\\':
			return "", p.errorf("escapes in strings are not supported")
		}
	}
	return "", p.errorf("unterminated string")
}

func (p *lit) boolean() (bool, error) {
	p.space()
	rest := p.s[p.i:]
	switch {
	case len(rest) >= 4 && rest[:4] == "True":
		p.i += 4
		return true, nil
	case len(rest) >= 5 && rest[:5] == "False":
		p.i += 5
		return false, nil
	}
	return false, p.errorf("want True or False")
}

// tuple reads "()", "(n,)" or "(n, m, ...)" with an optional trailing comma.
func (p *lit) tuple() ([]int, error) {
	if err := p.expect('('); err != nil {
		return nil, err
	}
	shape := []int{}
	for {
		p.space()
		if p.peek() == ')' {
			p.i++
			if len(shape) == 1 && !p.hadComma {
				// "(3)" is an int in Python, not a tuple; NumPy never writes it.
				return nil, p.errorf("shape (n) without a trailing comma is not a tuple")
			}
			return shape, nil
		}
		if len(shape) >= maxDims {
			return nil, p.errorf(fmt.Sprintf("more than %d dimensions", maxDims))
		}
		start := p.i
		for p.i < len(p.s) && p.s[p.i] >= '0' && p.s[p.i] <= '9' {
			p.i++
		}
		if start == p.i {
			return nil, p.errorf("want a non-negative integer in shape")
		}
		v, err := strconv.Atoi(p.s[start:p.i])
		if err != nil {
			return nil, p.errorf("shape extent out of range")
		}
		if p.peek() == 'L' { // Python 2 long literal
			p.i++
		}
		shape = append(shape, v)
		p.space()
		p.hadComma = false
		switch p.peek() {
		case ',':
			p.i++
			p.hadComma = true
		case ')':
		default:
			return nil, p.errorf("want ',' or ')' in shape")
		}
	}
}
