package pt

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math"
	"strconv"
)

// The scanner walks a pickle's opcodes before gopickle sees them. It is the
// memory and safety gate: gopickle allocates whatever length an opcode
// declares, indexes a 255-entry table with any byte, and resolves a few
// globals (builtins object, copyreg reconstructor) before asking the class
// resolver, so the scanner
//
//   - accepts only the opcodes a state dict can need, each argument complete
//     and no longer than the bytes that remain;
//   - checks every global (GLOBAL's text arguments, and STACK_GLOBAL's
//     module and name, which must be literal strings or memo references to
//     them) against the same allowlist as the resolver;
//   - charges each opcode an upper estimate of what gopickle allocates for it
//     and refuses a pickle whose total exceeds maxPickleCost;
//   - limits the opcodes whose work is not proportional to their size
//     (BUILD walks a whole dict; LONG decodes quadratically).
//
// It returns the offset just past the STOP opcode.

// maxPickleCost bounds, in estimated bytes, what unpickling one pickle may
// allocate (garbage included). The estimate runs about twice the real
// figure (TestCostModel); a state dict is charged some 10 KiB per tensor
// (GLIDE's: 2.6 MB for 261 tensors), so this admits about 50,000 tensors.
const maxPickleCost = 512 << 20

// maxBuilds bounds the BUILD opcodes of one pickle (a state dict has one,
// setting its _metadata).
const maxBuilds = 64

// maxIntArg bounds the length in bytes of integer arguments (LONG1, LONG4
// and the text forms): sizes and offsets fit in 8 bytes, and gopickle
// decodes long integers in quadratic time.
const maxIntArg = 32

// maxLine bounds text-line arguments other than strings (ints, floats,
// memo indices, global names).
const maxLine = 1024

// Approximate allocation charged per opcode, by kind (bytes).
const (
	costBase      = 64 << 10 // the unpickler itself: memo map, stacks
	costOp        = 128      // a stack slot with its growth, a small boxed value, argument buffers
	costLong      = 256      // a big.Int from LONG1/LONG4
	costMark      = 320      // gopickle starts a fresh 16-slot stack per MARK
	costContainer = 192      // an empty dict, list, set or tuple header
	costMemo      = 96       // one memo map entry
	costCall      = 512      // REDUCE: an OrderedDict or a tensor reference
)

// opcode argument kinds.
const (
	argNone = iota
	argU1
	argU2
	argI4
	argU8
	argF8
	argLine       // a newline-terminated ints, floats or memo index
	argStringLine // a newline-terminated string
	argGlobal     // two newline-terminated names
	argBytes1     // length in 1 byte, then the bytes
	argBytes4     // length in 4 bytes (unsigned), then the bytes
	argBytes4s    // length in 4 bytes (signed), then the bytes
	argBytes8     // length in 8 bytes, then the bytes
	argLong1      // like argBytes1, an integer
	argLong4      // like argBytes4s, an integer
)

type opInfo struct {
	name string
	arg  int
}

// allowedOps are the opcodes a state dict pickle (protocol 0 to 5) may hold;
// everything else (INST, OBJ, NEWOBJ, EXT*, PERSID, out-of-band buffers) is
// refused by name.
var allowedOps = map[byte]opInfo{
	'(': {"MARK", argNone}, '.': {"STOP", argNone}, '0': {"POP", argNone},
	'1': {"POP_MARK", argNone}, '2': {"DUP", argNone},
	'F': {"FLOAT", argLine}, 'I': {"INT", argLine}, 'J': {"BININT", argI4},
	'K': {"BININT1", argU1}, 'L': {"LONG", argLine}, 'M': {"BININT2", argU2},
	'N': {"NONE", argNone}, 'Q': {"BINPERSID", argNone}, 'R': {"REDUCE", argNone},
	'S': {"STRING", argStringLine}, 'T': {"BINSTRING", argBytes4s},
	'U': {"SHORT_BINSTRING", argBytes1}, 'V': {"UNICODE", argStringLine},
	'X': {"BINUNICODE", argBytes4}, 'a': {"APPEND", argNone}, 'b': {"BUILD", argNone},
	'c': {"GLOBAL", argGlobal}, 'd': {"DICT", argNone}, '}': {"EMPTY_DICT", argNone},
	'e': {"APPENDS", argNone}, 'g': {"GET", argLine}, 'h': {"BINGET", argU1},
	'j': {"LONG_BINGET", argI4}, 'l': {"LIST", argNone}, ']': {"EMPTY_LIST", argNone},
	'p': {"PUT", argLine}, 'q': {"BINPUT", argU1}, 'r': {"LONG_BINPUT", argI4},
	's': {"SETITEM", argNone}, 't': {"TUPLE", argNone}, ')': {"EMPTY_TUPLE", argNone},
	'u': {"SETITEMS", argNone}, 'G': {"BINFLOAT", argF8},
	0x80: {"PROTO", argU1}, 0x85: {"TUPLE1", argNone}, 0x86: {"TUPLE2", argNone},
	0x87: {"TUPLE3", argNone}, 0x88: {"NEWTRUE", argNone}, 0x89: {"NEWFALSE", argNone},
	0x8a: {"LONG1", argLong1}, 0x8b: {"LONG4", argLong4},
	'B': {"BINBYTES", argBytes4}, 'C': {"SHORT_BINBYTES", argBytes1},
	0x8c: {"SHORT_BINUNICODE", argBytes1}, 0x8d: {"BINUNICODE8", argBytes8},
	0x8e: {"BINBYTES8", argBytes8}, 0x8f: {"EMPTY_SET", argNone},
	0x90: {"ADDITEMS", argNone}, 0x91: {"FROZENSET", argNone},
	0x93: {"STACK_GLOBAL", argNone}, 0x94: {"MEMOIZE", argNone},
	0x95: {"FRAME", argU8}, 0x96: {"BYTEARRAY8", argBytes8},
}

// refusedOps name the standard opcodes that allowedOps leaves out, for
// clearer errors.
var refusedOps = map[byte]string{
	'i': "INST", 'o': "OBJ", 'P': "PERSID", 0x81: "NEWOBJ", 0x92: "NEWOBJ_EX",
	0x82: "EXT1", 0x83: "EXT2", 0x84: "EXT4", 0x97: "NEXT_BUFFER", 0x98: "READONLY_BUFFER",
}

// scanner reads a pickle from a byte source whose remaining length is
// known, validating as described above.
type scanner struct {
	r      io.ByteReader
	rd     io.Reader
	pos    int64 // offset from the start of the pickle
	remain int64 // bytes left in the source
	cost   int64
	builds int
	// lastIdx is the integer argument of the latest opcode that has one
	// (memo indices for GET and PUT).
	lastIdx int64

	// String tracking for STACK_GLOBAL: the literal strings pushed by the
	// latest run of string pushes (nil entries are unknown values), and the
	// memo: which indices are set and which of them hold strings.
	recent   []string
	memoSet  map[int64]bool
	memoStrs map[int64]string
}

// scanPickle validates the pickle at the start of r, which holds at most
// limit bytes, and returns its length (up to and including STOP).
func scanPickle(r io.Reader, limit int64) (int64, error) {
	n, _, err := scanPickleCost(r, limit)
	return n, err
}

// scanPickleCost is scanPickle that also returns the estimated allocation.
func scanPickleCost(r io.Reader, limit int64) (int64, int64, error) {
	br, ok := r.(interface {
		io.Reader
		io.ByteReader
	})
	if !ok {
		br = bufio.NewReader(r)
	}
	s := &scanner{r: br, rd: br, remain: limit, cost: costBase, memoSet: map[int64]bool{}, memoStrs: map[int64]string{}}
	if err := s.run(); err != nil {
		return 0, 0, fmt.Errorf("%w: pickle: %w", ErrFormat, err)
	}
	return s.pos, s.cost, nil
}

// errPickleEnd reports a pickle that ends inside an opcode or before STOP.
var errPickleEnd = errors.New("unexpected end of data (truncated?)")

// scanErr maps end-of-file errors to errPickleEnd.
func scanErr(err error) error {
	if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
		return errPickleEnd
	}
	return err
}

func (s *scanner) byte1() (byte, error) {
	if s.remain < 1 {
		return 0, errPickleEnd
	}
	b, err := s.r.ReadByte()
	if err != nil {
		return 0, scanErr(err)
	}
	s.pos++
	s.remain--
	return b, nil
}

// take reads n bytes, or discards them when keep is false.
func (s *scanner) take(n int64, keep bool) ([]byte, error) {
	if n < 0 || n > s.remain {
		return nil, fmt.Errorf("argument of %d bytes runs past the %d bytes left (truncated or corrupt)", n, s.remain)
	}
	var buf []byte
	var err error
	if keep {
		buf = make([]byte, n)
		_, err = io.ReadFull(s.rd, buf)
	} else {
		_, err = io.CopyN(io.Discard, s.rd, n)
	}
	if err != nil {
		return nil, scanErr(err)
	}
	s.pos += n
	s.remain -= n
	return buf, nil
}

// line reads a newline-terminated argument of at most max bytes (newline
// excluded) and returns it without the newline.
func (s *scanner) line(max int64) ([]byte, error) {
	var out []byte
	for {
		b, err := s.byte1()
		if err != nil {
			return nil, err
		}
		if b == '\n' {
			return out, nil
		}
		if int64(len(out)) >= max {
			return nil, fmt.Errorf("text argument longer than %d bytes", max)
		}
		out = append(out, b)
	}
}

func (s *scanner) charge(n int64) error {
	s.cost += n
	if s.cost > maxPickleCost {
		return fmt.Errorf("pickle would need more than %d MiB to unpickle", maxPickleCost>>20)
	}
	return nil
}

func (s *scanner) run() error {
	for {
		start := s.pos
		op, err := s.byte1()
		if err != nil {
			if err == errPickleEnd {
				return fmt.Errorf("no STOP opcode before the end (truncated pickle)")
			}
			return err
		}
		info, ok := allowedOps[op]
		if !ok {
			if name, known := refusedOps[op]; known {
				return fmt.Errorf("opcode %s (0x%02x) at byte %d is not allowed in a tensor state dict", name, op, start)
			}
			return fmt.Errorf("unknown opcode 0x%02x at byte %d", op, start)
		}
		if err := s.charge(costOp); err != nil {
			return err
		}
		pushed, isString, err := s.arg(op, info)
		if err != nil {
			return fmt.Errorf("%s at byte %d: %w", info.name, start, err)
		}
		switch op {
		case '.':
			return nil
		case '(':
			err = s.charge(costMark)
		case '}', ']', ')', 0x8f, 0x85, 0x86, 0x87, 't', 'l', 'd', 0x91:
			err = s.charge(costContainer)
		case 'R', 'Q':
			err = s.charge(costCall)
		case 'b':
			s.builds++
			if s.builds > maxBuilds {
				err = fmt.Errorf("more than %d BUILD opcodes", maxBuilds)
			}
		case 0x93: // STACK_GLOBAL
			if len(s.recent) < 2 || s.recent[len(s.recent)-2] == "\x00" || s.recent[len(s.recent)-1] == "\x00" {
				err = fmt.Errorf("STACK_GLOBAL at byte %d: module and name are not literal strings", start)
			} else if _, err = resolveGlobal(s.recent[len(s.recent)-2], s.recent[len(s.recent)-1]); err != nil {
				err = fmt.Errorf("STACK_GLOBAL at byte %d: %w", start, err)
			}
		}
		if err != nil {
			return err
		}
		s.track(op, pushed, isString)
	}
}

// arg reads op's argument. For string pushes it returns the string and
// true; memo opcodes are handled in track.
func (s *scanner) arg(op byte, info opInfo) (string, bool, error) {
	switch info.arg {
	case argNone:
		return "", false, nil
	case argU1:
		b, err := s.byte1()
		if err != nil {
			return "", false, err
		}
		if op == 0x80 && b > 5 {
			return "", false, fmt.Errorf("unsupported pickle protocol %d", b)
		}
		s.lastIdx = int64(b)
		return "", false, nil
	case argU2:
		_, err := s.take(2, false)
		return "", false, err
	case argI4:
		b, err := s.take(4, true)
		if err != nil {
			return "", false, err
		}
		s.lastIdx = int64(binary.LittleEndian.Uint32(b))
		return "", false, nil
	case argF8:
		_, err := s.take(8, false)
		return "", false, err
	case argU8:
		b, err := s.take(8, true)
		if err != nil {
			return "", false, err
		}
		n := binary.LittleEndian.Uint64(b)
		if n > uint64(s.remain) {
			return "", false, fmt.Errorf("frame of %d bytes runs past the %d bytes left", n, s.remain)
		}
		return "", false, s.charge(int64(n))
	case argLine:
		l, err := s.line(maxLine)
		if err != nil {
			return "", false, err
		}
		if op == 'L' || op == 'I' {
			if len(l) > maxIntArg {
				return "", false, fmt.Errorf("integer of %d digits is too long", len(l))
			}
		}
		if op == 'g' || op == 'p' {
			i, err := strconv.ParseInt(string(l), 10, 64)
			if err != nil || i < 0 {
				return "", false, fmt.Errorf("bad memo index %q", l)
			}
			s.lastIdx = i
		}
		return "", false, nil
	case argStringLine:
		l, err := s.line(math.MaxInt64)
		if err != nil {
			return "", false, err
		}
		if err := s.charge(3*int64(len(l)) + 32); err != nil {
			return "", false, err
		}
		if op == 'S' { // quoted
			if len(l) < 2 || l[0] != l[len(l)-1] || (l[0] != '\'' && l[0] != '"') {
				return "", false, fmt.Errorf("STRING argument is not quoted")
			}
			l = l[1 : len(l)-1]
		}
		return string(l), true, nil
	case argGlobal:
		mod, err := s.line(maxLine)
		if err != nil {
			return "", false, err
		}
		name, err := s.line(maxLine)
		if err != nil {
			return "", false, err
		}
		if _, err := resolveGlobal(string(mod), string(name)); err != nil {
			return "", false, err
		}
		return "", false, nil
	case argBytes1, argLong1:
		n, err := s.byte1()
		if err != nil {
			return "", false, err
		}
		return s.counted(op, info.arg, int64(n))
	case argBytes4, argBytes4s, argLong4:
		b, err := s.take(4, true)
		if err != nil {
			return "", false, err
		}
		n := int64(binary.LittleEndian.Uint32(b))
		if info.arg != argBytes4 {
			n = int64(int32(uint32(n)))
		}
		return s.counted(op, info.arg, n)
	case argBytes8:
		b, err := s.take(8, true)
		if err != nil {
			return "", false, err
		}
		n := binary.LittleEndian.Uint64(b)
		if n > uint64(s.remain) {
			return "", false, fmt.Errorf("argument of %d bytes runs past the %d bytes left (truncated or corrupt)", n, s.remain)
		}
		return s.counted(op, info.arg, int64(n))
	}
	return "", false, fmt.Errorf("internal: no argument kind for opcode 0x%02x", op)
}

// counted reads a length-prefixed argument of n bytes.
func (s *scanner) counted(op byte, kind int, n int64) (string, bool, error) {
	if n < 0 {
		return "", false, fmt.Errorf("negative length %d", n)
	}
	if kind == argLong1 || kind == argLong4 {
		if n == 0 || n > maxIntArg {
			return "", false, fmt.Errorf("integer of %d bytes is not supported (1 to %d)", n, maxIntArg)
		}
		if _, err := s.take(n, false); err != nil {
			return "", false, err
		}
		return "", false, s.charge(costLong)
	}
	if n > s.remain {
		return "", false, fmt.Errorf("argument of %d bytes runs past the %d bytes left (truncated or corrupt)", n, s.remain)
	}
	if err := s.charge(2*n + 32); err != nil {
		return "", false, err
	}
	isString := op == 'X' || op == 0x8c || op == 0x8d || op == 'T' || op == 'U'
	// Only short strings can name a global; others are skipped unread.
	keep := isString && n <= maxLine
	b, err := s.take(n, keep)
	if err != nil {
		return "", false, err
	}
	if !isString {
		return "", false, nil
	}
	if !keep {
		return "\x00", true, nil
	}
	if bytes.IndexByte(b, 0) >= 0 {
		return "\x00", true, nil // never a valid global name
	}
	return string(b), true, nil
}

// track updates the string and memo shadow after op.
func (s *scanner) track(op byte, str string, isString bool) {
	const unknown = "\x00"
	switch {
	case isString:
		s.recent = append(s.recent, str)
		if len(s.recent) > 2 {
			s.recent = s.recent[len(s.recent)-2:]
		}
		return
	case op == 'h' || op == 'j' || op == 'g': // memo get
		v, ok := s.memoStrs[s.lastIdx]
		if !ok {
			v = unknown
		}
		s.recent = append(s.recent, v)
		if len(s.recent) > 2 {
			s.recent = s.recent[len(s.recent)-2:]
		}
		return
	case op == 'q' || op == 'r' || op == 'p' || op == 0x94: // memo put: stack unchanged
		idx := s.lastIdx
		if op == 0x94 {
			idx = int64(len(s.memoSet))
		}
		if !s.memoSet[idx] {
			s.memoSet[idx] = true
			s.cost += costMemo
		}
		if len(s.recent) > 0 && s.recent[len(s.recent)-1] != unknown {
			s.memoStrs[idx] = s.recent[len(s.recent)-1]
		} else {
			delete(s.memoStrs, idx)
		}
		return
	case op == 0x95 || op == 0x80: // FRAME, PROTO: no stack effect
		return
	}
	s.recent = s.recent[:0]
}
