package pt

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"math"
	"math/big"
	"strconv"
	"strings"

	"github.com/nlpodyssey/gopickle/pickle"
	"github.com/nlpodyssey/gopickle/types"
)

// ErrFormat is wrapped by every error about a malformed, unsupported or
// refused checkpoint.
var ErrFormat = errors.New("invalid PyTorch checkpoint")

// GlobalError reports a pickle global (a class or function reference)
// outside the allowlist. It wraps ErrFormat.
type GlobalError struct {
	Module, Name string
	// Reason says why, when the global is known but not supported (a
	// complex or quantized storage type, say); empty for unknown globals.
	Reason string
}

// Error says which global was refused and why.
func (e *GlobalError) Error() string {
	if e.Reason != "" {
		return fmt.Sprintf("pickle global %s.%s: %s", e.Module, e.Name, e.Reason)
	}
	return fmt.Sprintf("pickle global %s.%s is not allowed: a tensor state dict needs only collections.OrderedDict, torch._utils._rebuild_tensor_v2, torch._utils._rebuild_parameter and torch.*Storage", e.Module, e.Name)
}

// Unwrap returns ErrFormat.
func (e *GlobalError) Unwrap() error { return ErrFormat }

// dtype describes a storage element type.
type dtype struct {
	name  string // the weights.Tensor DType spelling: F32, F16, ...
	size  int    // bytes per element
	float bool   // converted by default (F32, F16, BF16, F64)
}

// storageTypes maps torch's storage class names (the pickled form of a
// storage's dtype, in torch 1.x and 2.x alike) to element types. Untyped
// storages hold bytes.
var storageTypes = map[string]dtype{
	"FloatStorage":    {"F32", 4, true},
	"HalfStorage":     {"F16", 2, true},
	"BFloat16Storage": {"BF16", 2, true},
	"DoubleStorage":   {"F64", 8, true},
	"LongStorage":     {"I64", 8, false},
	"IntStorage":      {"I32", 4, false},
	"ShortStorage":    {"I16", 2, false},
	"CharStorage":     {"I8", 1, false},
	"ByteStorage":     {"U8", 1, false},
	"BoolStorage":     {"BOOL", 1, false},
	"UntypedStorage":  {"U8", 1, false},
	"_UntypedStorage": {"U8", 1, false},
}

// storageType is what the resolver returns for torch.<X>Storage; the
// persistent id carries it.
type storageType struct{ dt dtype }

// rebuildTensor stands for torch._utils._rebuild_tensor_v2(storage,
// storage_offset, size, stride, requires_grad, backward_hooks[, metadata]):
// it builds a tensorRef, validating the view against its storage.
type rebuildTensor struct{}

// rebuildParameter stands for torch._utils._rebuild_parameter(data,
// requires_grad, backward_hooks): it returns data.
type rebuildParameter struct{}

// storageRef is one storage named by a persistent id.
type storageRef struct {
	key   string
	dt    dtype
	numel int64
}

// tensorRef is a tensor as the pickle describes it: a view of a storage.
type tensorRef struct {
	st     *storageRef
	offset int64
	shape  []int
	stride []int64
}

// numel returns product(shape), validated not to overflow when built.
func (t *tensorRef) numel() int64 {
	n := int64(1)
	for _, d := range t.shape {
		n *= int64(d)
	}
	return n
}

// maxDims bounds a tensor's rank.
const maxDims = 32

// resolveGlobal is the class resolver: it maps the allowed globals to
// inert Go values and refuses every other one. Nothing is executed.
func resolveGlobal(module, name string) (any, error) {
	switch module + "." + name {
	case "collections.OrderedDict":
		return &types.OrderedDictClass{}, nil
	case "torch._utils._rebuild_tensor_v2":
		return rebuildTensor{}, nil
	case "torch._utils._rebuild_parameter":
		return rebuildParameter{}, nil
	}
	if module == "torch" {
		if dt, ok := storageTypes[name]; ok {
			return storageType{dt}, nil
		}
		if strings.HasSuffix(name, "Storage") {
			return nil, &GlobalError{Module: module, Name: name, Reason: "storage type not supported (float32, float16, bfloat16, float64 and integer/bool storages are)"}
		}
	}
	return nil, &GlobalError{Module: module, Name: name}
}

// Call implements types.Callable.
func (rebuildTensor) Call(args ...any) (any, error) {
	if len(args) != 6 && len(args) != 7 {
		return nil, fmt.Errorf("%w: _rebuild_tensor_v2 takes 6 or 7 arguments, got %d", ErrFormat, len(args))
	}
	st, ok := args[0].(*storageRef)
	if !ok {
		return nil, fmt.Errorf("%w: _rebuild_tensor_v2: first argument is a %s, not a storage", ErrFormat, pyType(args[0]))
	}
	off, ok := toInt64(args[1])
	if !ok || off < 0 {
		return nil, fmt.Errorf("%w: _rebuild_tensor_v2: storage offset %v is not a non-negative integer", ErrFormat, args[1])
	}
	size, err := intTuple(args[2], "size")
	if err != nil {
		return nil, err
	}
	stride, err := intTuple(args[3], "stride")
	if err != nil {
		return nil, err
	}
	if len(size) != len(stride) {
		return nil, fmt.Errorf("%w: _rebuild_tensor_v2: size has %d dimensions, stride %d", ErrFormat, len(size), len(stride))
	}
	t := &tensorRef{st: st, offset: off, shape: make([]int, len(size)), stride: stride}
	numel := int64(1)
	for i, d := range size {
		if d > math.MaxInt32 {
			return nil, fmt.Errorf("%w: tensor size[%d] = %d exceeds %d", ErrFormat, i, d, math.MaxInt32)
		}
		t.shape[i] = int(d)
		if d != 0 && numel > math.MaxInt64/d {
			return nil, fmt.Errorf("%w: tensor size %v overflows", ErrFormat, size)
		}
		numel *= d
	}
	if numel == 0 {
		if off > st.numel {
			return nil, fmt.Errorf("%w: empty tensor's storage offset %d is past its storage of %d elements", ErrFormat, off, st.numel)
		}
		return t, nil
	}
	if numel > st.numel {
		return nil, fmt.Errorf("%w: a tensor of size %v (%d elements) views a storage of %d elements (overlapping or expanded views are not supported)", ErrFormat, size, numel, st.numel)
	}
	last, ok := lastElement(off, t.shape, stride)
	if !ok || last >= st.numel {
		return nil, fmt.Errorf("%w: tensor view (offset %d, size %v, stride %v) reaches past its storage of %d elements", ErrFormat, off, size, stride, st.numel)
	}
	return t, nil
}

// lastElement returns offset + sum_i (shape_i - 1) * stride_i, the highest
// storage element a non-empty view touches, and false on overflow.
func lastElement(off int64, shape []int, stride []int64) (int64, bool) {
	last := off
	for i, d := range shape {
		if d <= 1 || stride[i] == 0 {
			continue
		}
		if stride[i] > (math.MaxInt64-last)/int64(d-1) {
			return 0, false
		}
		last += int64(d-1) * stride[i]
	}
	return last, true
}

// Call implements types.Callable.
func (rebuildParameter) Call(args ...any) (any, error) {
	if len(args) != 3 {
		return nil, fmt.Errorf("%w: _rebuild_parameter takes 3 arguments, got %d", ErrFormat, len(args))
	}
	t, ok := args[0].(*tensorRef)
	if !ok {
		return nil, fmt.Errorf("%w: _rebuild_parameter: data is a %s, not a tensor", ErrFormat, pyType(args[0]))
	}
	return t, nil
}

// intTuple converts a pickled tuple of non-negative integers.
func intTuple(v any, what string) ([]int64, error) {
	tu, ok := v.(*types.Tuple)
	if !ok {
		return nil, fmt.Errorf("%w: tensor %s is a %s, not a tuple", ErrFormat, what, pyType(v))
	}
	if tu.Len() > maxDims {
		return nil, fmt.Errorf("%w: tensor %s has %d dimensions, at most %d allowed", ErrFormat, what, tu.Len(), maxDims)
	}
	out := make([]int64, tu.Len())
	for i := range out {
		n, ok := toInt64(tu.Get(i))
		if !ok || n < 0 {
			return nil, fmt.Errorf("%w: tensor %s[%d] = %v is not a non-negative integer", ErrFormat, what, i, tu.Get(i))
		}
		out[i] = n
	}
	return out, nil
}

// toInt64 converts a pickled integer (gopickle gives int or *big.Int).
func toInt64(v any) (int64, bool) {
	switch n := v.(type) {
	case int:
		return int64(n), true
	case *big.Int:
		if n.IsInt64() {
			return n.Int64(), true
		}
	}
	return 0, false
}

// pyType names the Python type of an unpickled value, for messages.
func pyType(v any) string {
	switch v.(type) {
	case nil:
		return "None"
	case bool:
		return "bool"
	case int, *big.Int:
		return "int"
	case float64:
		return "float"
	case string:
		return "str"
	case []byte:
		return "bytes"
	case *types.ByteArray:
		return "bytearray"
	case *types.Tuple:
		return "tuple"
	case *types.List:
		return "list"
	case *types.Dict:
		return "dict"
	case *types.OrderedDict:
		return "OrderedDict"
	case *types.Set, *types.FrozenSet:
		return "set"
	case *storageRef:
		return "storage"
	case *tensorRef:
		return "tensor"
	case storageType, *types.OrderedDictClass:
		return "type"
	case rebuildTensor, rebuildParameter:
		return "function"
	}
	return fmt.Sprintf("%T", v)
}

// unpickle runs gopickle on a pickle the scanner has accepted, with the
// restricted resolver and the given persistent-id loader. A panic inside
// gopickle (it indexes its stack without checks in a few opcodes, such as
// a DICT with an odd item count) becomes an error.
func unpickle(data []byte, persistentLoad func(pid any) (any, error)) (v any, err error) {
	defer func() {
		if r := recover(); r != nil {
			v, err = nil, fmt.Errorf("%w: malformed pickle: %v", ErrFormat, r)
		}
	}()
	u := pickle.NewUnpickler(bytes.NewReader(data))
	u.FindClass = resolveGlobal
	if persistentLoad == nil {
		persistentLoad = func(any) (any, error) {
			return nil, fmt.Errorf("%w: unexpected persistent id", ErrFormat)
		}
	}
	u.PersistentLoad = persistentLoad
	v, err = u.Load()
	if err != nil {
		if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
			return nil, fmt.Errorf("%w: pickle ends early", ErrFormat)
		}
		if !errors.Is(err, ErrFormat) {
			err = fmt.Errorf("%w: pickle: %w", ErrFormat, err)
		}
		return nil, err
	}
	return v, nil
}

// storageTable hands out one storageRef per key, checking that every
// persistent id naming a key agrees on its type and size.
type storageTable struct {
	byKey map[string]*storageRef
	order []*storageRef
	// legacy selects the 6-tuple persistent ids of the pre-zip format.
	legacy bool
}

// load implements the persistent-id protocol: ('storage', storage_type,
// key, location, numel) in zip files, with a sixth view_metadata entry
// (None) in legacy files.
func (t *storageTable) load(pid any) (any, error) {
	tu, ok := pid.(*types.Tuple)
	if !ok {
		return nil, fmt.Errorf("%w: persistent id is a %s, not a tuple", ErrFormat, pyType(pid))
	}
	want := 5
	if t.legacy {
		want = 6
	}
	if tu.Len() != want || tu.Get(0) != "storage" {
		return nil, fmt.Errorf("%w: persistent id %s is not ('storage', type, key, location, numel%s)", ErrFormat, describe(tu), map[bool]string{true: ", None"}[t.legacy])
	}
	stt, ok := tu.Get(1).(storageType)
	if !ok {
		return nil, fmt.Errorf("%w: persistent id's storage type is a %s", ErrFormat, pyType(tu.Get(1)))
	}
	key, ok := tu.Get(2).(string)
	if !ok || key == "" || len(key) > 256 {
		return nil, fmt.Errorf("%w: persistent id's storage key %s is not a short string", ErrFormat, describe(tu.Get(2)))
	}
	if _, ok := tu.Get(3).(string); !ok {
		return nil, fmt.Errorf("%w: persistent id's location is a %s, not a string", ErrFormat, pyType(tu.Get(3)))
	}
	numel, ok := toInt64(tu.Get(4))
	if !ok || numel < 0 || numel > math.MaxInt64/int64(stt.dt.size) {
		return nil, fmt.Errorf("%w: storage %q: element count %s is not a valid size", ErrFormat, key, describe(tu.Get(4)))
	}
	if t.legacy && tu.Get(5) != nil {
		return nil, fmt.Errorf("%w: storage %q is a view of another storage (the format of PyTorch before 1.0), not supported", ErrFormat, key)
	}
	if s, ok := t.byKey[key]; ok {
		if s.dt != stt.dt || s.numel != numel {
			return nil, fmt.Errorf("%w: storage %q is named as %d %s elements and as %d %s elements", ErrFormat, key, s.numel, s.dt.name, numel, stt.dt.name)
		}
		return s, nil
	}
	s := &storageRef{key: key, dt: stt.dt, numel: numel}
	if t.byKey == nil {
		t.byKey = map[string]*storageRef{}
	}
	t.byKey[key] = s
	t.order = append(t.order, s)
	return s, nil
}

// describe formats a small pickled value for an error message, briefly.
func describe(v any) string {
	switch x := v.(type) {
	case string:
		if len(x) > 40 {
			x = x[:40] + "..."
		}
		return strconv.Quote(x)
	case *types.Tuple:
		parts := make([]string, 0, x.Len())
		for i := 0; i < x.Len() && i < 6; i++ {
			parts = append(parts, describe(x.Get(i)))
		}
		return "(" + strings.Join(parts, ", ") + ")"
	case int, *big.Int, bool:
		return fmt.Sprint(x)
	}
	return pyType(v)
}

// Skipped is an entry of the checkpoint that is not a tensor (an int, a
// string, None, a list ...).
type Skipped struct {
	// Name is the entry's key, nested keys joined with ".".
	Name string
	// Type is the Python type: "int", "str", "None", "list", ...
	Type string
}

// walk limits: nesting depth and visited entries (shared sub-dicts could
// otherwise make the walk exponential).
const (
	maxDepth  = 16
	maxVisits = 1 << 22
)

type namedTensor struct {
	name string
	t    *tensorRef
}

// collect flattens the unpickled state dict: tensors in order, nested
// dicts under "outer.inner" names, everything else as skipped entries.
func collect(root any) ([]namedTensor, []Skipped, error) {
	if !isDict(root) {
		what := pyType(root)
		if what == "tensor" {
			return nil, nil, fmt.Errorf("%w: the checkpoint holds a single tensor, not a state dict (save a dict of name -> tensor)", ErrFormat)
		}
		return nil, nil, fmt.Errorf("%w: the checkpoint holds a %s, not a state dict (a dict of name -> tensor)", ErrFormat, what)
	}
	c := &collector{seen: map[string]bool{}}
	if err := c.walk(root, "", 0); err != nil {
		return nil, nil, err
	}
	return c.tensors, c.skipped, nil
}

type collector struct {
	tensors []namedTensor
	skipped []Skipped
	seen    map[string]bool
	visits  int
}

func isDict(v any) bool {
	switch v.(type) {
	case *types.OrderedDict, *types.Dict:
		return true
	}
	return false
}

type kv struct {
	key   any
	value any
}

// items lists a dict's entries in order; for a plain dict, a repeated key
// keeps its first position and its last value, as in Python.
func items(v any) []kv {
	var out []kv
	switch d := v.(type) {
	case *types.OrderedDict:
		for e := d.List.Front(); e != nil; e = e.Next() {
			en := e.Value.(*types.OrderedDictEntry)
			out = append(out, kv{en.Key, en.Value})
		}
	case *types.Dict:
		pos := map[any]int{}
		for _, en := range *d {
			if isHashable(en.Key) {
				if i, ok := pos[en.Key]; ok {
					out[i].value = en.Value
					continue
				}
				pos[en.Key] = len(out)
			}
			out = append(out, kv{en.Key, en.Value})
		}
	}
	return out
}

func isHashable(k any) bool {
	switch k.(type) {
	case string, int, bool, float64, nil:
		return true
	}
	return false
}

func (c *collector) walk(d any, prefix string, depth int) error {
	if depth >= maxDepth {
		return fmt.Errorf("%w: dicts nested more than %d deep at %q", ErrFormat, maxDepth, prefix)
	}
	for _, e := range items(d) {
		c.visits++
		if c.visits > maxVisits {
			return fmt.Errorf("%w: the checkpoint has more than %d entries", ErrFormat, maxVisits)
		}
		var key string
		switch k := e.key.(type) {
		case string:
			key = k
		case int:
			key = strconv.Itoa(k)
		default:
			c.skipped = append(c.skipped, Skipped{Name: prefix + "<" + pyType(k) + " key>", Type: pyType(e.value)})
			continue
		}
		name := prefix + key
		switch v := e.value.(type) {
		case *tensorRef:
			if c.seen[name] {
				return fmt.Errorf("%w: two tensors are named %q (a nested dict's name collides with a dotted key)", ErrFormat, name)
			}
			c.seen[name] = true
			c.tensors = append(c.tensors, namedTensor{name, v})
		case *types.OrderedDict, *types.Dict:
			if err := c.walk(v, name+".", depth+1); err != nil {
				return err
			}
		default:
			c.skipped = append(c.skipped, Skipped{Name: name, Type: pyType(v)})
		}
	}
	return nil
}
