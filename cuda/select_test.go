package cuda

import (
	"fmt"
	"strings"
	"testing"
)

func TestParseDevice(t *testing.T) {
	for _, tc := range []struct {
		in      string
		want    DeviceSpec
		wantErr string
	}{
		{"", DeviceSpec{Kind: "auto"}, ""},
		{"auto", DeviceSpec{Kind: "auto"}, ""},
		{"CPU", DeviceSpec{Kind: "cpu"}, ""},
		{"cuda", DeviceSpec{Kind: "cuda"}, ""},
		{"cuda:3", DeviceSpec{Kind: "cuda", Index: 3}, ""},
		{"cuda:-1", DeviceSpec{}, "must be an integer >= 0"},
		{"cuda:x", DeviceSpec{}, "must be an integer >= 0"},
		{"tpu", DeviceSpec{}, "allowed are auto, cpu, cuda, cuda:N"},
	} {
		t.Run(tc.in, func(t *testing.T) {
			got, err := ParseDevice(tc.in)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("ParseDevice(%q) error = %v, want %q", tc.in, err, tc.wantErr)
				}
				return
			}
			if err != nil || got != tc.want {
				t.Fatalf("ParseDevice(%q) = %+v, %v; want %+v", tc.in, got, err, tc.want)
			}
		})
	}
}

func TestSelect(t *testing.T) {
	var lines []string
	logf := func(f string, a ...any) { lines = append(lines, fmt.Sprintf(f, a...)) }
	b, err := Select("cpu", SelectOptions{Logf: logf})
	if err != nil || b.CPU == nil || b.GPU != nil {
		t.Fatalf("Select(cpu) = %+v, %v", b, err)
	}
	b, err = Select("auto", SelectOptions{Logf: logf})
	if err != nil {
		t.Fatalf("Select(auto): %v", err)
	}
	defer b.Close()
	if (b.GPU != nil) == (b.CPU != nil) {
		t.Fatalf("Select(auto) set both or neither: %+v", b)
	}
	if len(lines) != 2 || !strings.HasPrefix(lines[1], "device: ") {
		t.Fatalf("log lines = %q, want one per Select", lines)
	}
	t.Logf("%s", lines[1])
	if _, err := Select("cuda:7", SelectOptions{}); err == nil || !strings.Contains(err.Error(), "--device cuda:7") {
		t.Fatalf("Select(cuda:7) error = %v, want one naming the flag", err)
	}
}

func ExampleSelect() {
	b, err := Select("cpu", SelectOptions{Logf: func(string, ...any) {}})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer b.Close()
	fmt.Println(b.GPU == nil, b.Reason)
	// Output: true cpu
}
