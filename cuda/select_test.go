package cuda

import (
	"fmt"
	"strings"
	"testing"

	"github.com/ddpm-go/ddpm/kernels"
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

// TestSelectBadOptions: bad GPU options are errors under auto too, not a
// GPU that "failed to open".
func TestSelectBadOptions(t *testing.T) {
	for _, flag := range []string{"auto", "cpu", "cuda"} {
		_, err := Select(flag, SelectOptions{GPU: Options{Precision: "fp8"}})
		if err == nil || err.Error() != `cuda: Options.Precision = "fp8": allowed are fp32, tf32, bf16, fp16` {
			t.Errorf("Select(%s, fp8): %v", flag, err)
		}
	}
	if _, err := Select("cpu", SelectOptions{GPU: Options{Precision: "fp16"}}); err == nil ||
		!strings.Contains(err.Error(), "--precision fp16: not supported on the CPU backend") {
		t.Errorf("Select(cpu, fp16): %v", err)
	}
	if _, err := Select("cpu", SelectOptions{GPU: Options{Precision: "bf16"}}); err == nil ||
		!strings.Contains(err.Error(), "--precision bf16: on the CPU it is for inference") {
		t.Errorf("Select(cpu, bf16) for training: %v", err)
	}
	b16, err := Select("cpu", SelectOptions{CPU: kernels.CPUOptions{ConstWeights: true}, GPU: Options{Precision: "bf16"}})
	switch {
	case kernels.BF16Supported() != nil:
		if err == nil || !strings.Contains(err.Error(), "--precision bf16: ") {
			t.Errorf("Select(cpu, bf16) on a CPU without bf16: %v", err)
		}
	case err != nil:
		t.Errorf("Select(cpu, bf16) for inference: %v", err)
	default:
		if !b16.CPU.BF16() {
			t.Errorf("Select(cpu, bf16): %s does not compute in bf16", b16.CPU.Name())
		}
		b16.Close()
	}
	var notes []string
	b, err := Select("cpu", SelectOptions{GPU: Options{Precision: "tf32"}, Logf: func(f string, a ...any) { notes = append(notes, fmt.Sprintf(f, a...)) }})
	if err != nil {
		t.Fatal(err)
	}
	b.Close()
	if len(notes) != 2 || !strings.Contains(notes[0], "applies to the GPU only") {
		t.Errorf("Select(cpu, tf32) log %q: want the note, then the device line", notes)
	}
}
