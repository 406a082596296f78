package cuda

import "testing"

func TestSizeClass(t *testing.T) {
	for _, tc := range []struct{ in, want int64 }{
		{1, 256}, {256, 256}, {257, 512}, {4096, 4096}, {4097, 8192},
		{1 << 20, 1 << 20}, {1<<20 + 1, 2 << 20}, {3 << 20, 4 << 20}, {5<<20 + 7, 6 << 20},
	} {
		if got := sizeClass(tc.in); got != tc.want {
			t.Errorf("sizeClass(%d) = %d, want %d", tc.in, got, tc.want)
		}
		if sizeClass(tc.in) < tc.in {
			t.Errorf("sizeClass(%d) smaller than the request", tc.in)
		}
	}
}
