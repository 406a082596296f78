package main

import (
	"bufio"
	"context"
	"encoding/json"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/ddpm-go/ddpm/weights"
)

// mpiSetup builds the ddpm binary and a tiny class-conditional UNet config
// (16x16, null class, dropout), or skips without mpirun.
func mpiSetup(t *testing.T) (bin, cfg string) {
	t.Helper()
	if testing.Short() {
		t.Skip("runs ddpm under mpirun; skipped with -short")
	}
	if _, err := exec.LookPath("mpirun"); err != nil {
		t.Skip("mpirun not installed (Debian's openmpi-bin; CI installs it)")
	}
	return buildDDPM(t), tinyTrainConfig(t, 0.1)
}

// trainArgs are the flags of the equivalence runs: MNIST at 16x16, global
// batch 16, label dropout 0.1 (the default), one thread per process.
func trainArgs(cfg, out string, steps string) []string {
	return []string{"train", "--config", cfg, "--dataset", "mnist", "--size", "16", "--resize", "resize", "--batch", "16",
		"--steps", steps, "--warmup", "2", "--log-every", "1", "--save-every", "5", "--threads", "1", "--seed", "3", "--out", out}
}

func mpirun(ctx context.Context, np string, bin string, args ...string) *exec.Cmd {
	return exec.CommandContext(ctx, "mpirun", append([]string{"--allow-run-as-root", "--oversubscribe", "-np", np, bin}, args...)...)
}

// logLosses reads every logged loss of a run.
func logLosses(t *testing.T, dir string) []float64 {
	t.Helper()
	f, err := os.Open(filepath.Join(dir, "log.jsonl"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var out []float64
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		var r struct{ Loss float64 }
		json.Unmarshal(sc.Bytes(), &r)
		out = append(out, r.Loss)
	}
	return out
}

// TestDataParallelEquivalence: 2 ranks with a global batch of 16 train the
// same model as one process with a batch of 16 (every draw of example i of
// step s comes from (seed, s, i)): every logged loss and the checkpoint's
// weights agree to 1e-3 (only the float summation order differs).
func TestDataParallelEquivalence(t *testing.T) {
	bin, cfg := mpiSetup(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	one, two := t.TempDir(), t.TempDir()
	// Both runs at once: three single-threaded processes, mostly waiting
	// on their start-up.
	type result struct {
		out []byte
		err error
	}
	single := make(chan result, 1)
	go func() {
		out, err := exec.CommandContext(ctx, bin, trainArgs(cfg, one, "12")...).CombinedOutput()
		single <- result{out, err}
	}()
	out, err := mpirun(ctx, "2", bin, trainArgs(cfg, two, "12")...).CombinedOutput()
	if r := <-single; r.err != nil {
		t.Fatalf("one process: %v\n%s", r.err, r.out)
	}
	if err != nil {
		t.Fatalf("mpirun -np 2: %v\n%s", err, out)
	}
	if !strings.Contains(string(out), "data-parallel over 2 ranks") {
		t.Errorf("the 2-rank run did not say it is data-parallel:\n%s", out)
	}
	l1, l2 := logLosses(t, one), logLosses(t, two)
	if len(l1) != 12 || len(l2) != 12 {
		t.Fatalf("%d and %d logged losses, want 12 each (rank 0 alone logs)", len(l1), len(l2))
	}
	for i := range l1 {
		if math.Abs(l1[i]-l2[i]) > 1e-3*math.Abs(l1[i]) {
			t.Errorf("step %d: loss %.6g with one process, %.6g with 2 ranks", i+1, l1[i], l2[i])
		}
	}
	a, err := weights.ReadCheckpoint(filepath.Join(one, "checkpoint.safetensors"))
	if err != nil {
		t.Fatal(err)
	}
	b, err := weights.ReadCheckpoint(filepath.Join(two, "checkpoint.safetensors"))
	if err != nil {
		t.Fatal(err)
	}
	var num, den float64
	for name, ta := range a.Raw {
		for j, v := range ta.Data {
			d := float64(v) - float64(b.Raw[name].Data[j])
			num += d * d
			den += float64(v) * float64(v)
		}
	}
	e := math.Sqrt(num / den)
	t.Logf("weights after 12 steps: relative L2 %.3g between 1 process and 2 ranks", e)
	if e > 1e-3 {
		t.Errorf("weights differ by relative L2 %.3g > 1e-3", e)
	}
}

// TestDataParallelKilledRank: a rank killed with SIGKILL ends the whole
// job with a non-zero status in bounded time, the last checkpoint stays
// intact, and resuming with the same number of ranks finishes the run.
func TestDataParallelKilledRank(t *testing.T) {
	bin, cfg := mpiSetup(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	dir := t.TempDir()
	cmd := mpirun(ctx, "2", bin, trainArgs(cfg, dir, "100000")...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	ckpt := filepath.Join(dir, "checkpoint.safetensors")
	for deadline := time.Now().Add(90 * time.Second); ; time.Sleep(200 * time.Millisecond) {
		if _, err := os.Stat(ckpt); err == nil {
			break
		}
		if time.Now().After(deadline) {
			syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
			t.Fatal("no checkpoint after 90 s")
		}
	}
	// Kill one rank (the newest ddpm process of the job).
	out, _ := exec.Command("pgrep", "-n", "-f", bin+" train").Output()
	var pid int
	json.Unmarshal([]byte(strings.TrimSpace(string(out))), &pid)
	if pid == 0 {
		t.Fatalf("no rank process found: %q", out)
	}
	killed := time.Now()
	syscall.Kill(pid, syscall.SIGKILL)
	err := cmd.Wait()
	took := time.Since(killed)
	if err == nil {
		t.Fatal("the job exited 0 after a rank was killed")
	}
	t.Logf("job ended %v after the kill: %v", took.Round(time.Millisecond), err)
	if took > 30*time.Second {
		t.Errorf("the job took %v to end after a rank was killed", took)
	}
	c, err := weights.ReadCheckpoint(ckpt)
	if err != nil {
		t.Fatalf("checkpoint unreadable after the kill: %v", err)
	}
	var st struct{ Step int }
	json.Unmarshal(c.TrainState, &st)
	args := trainArgs(cfg, dir, "")
	for i, a := range args {
		if a == "--steps" {
			args[i+1] = strconv.Itoa(st.Step + 5)
		}
	}
	if out, err := mpirun(ctx, "2", bin, append(args, "--resume")...).CombinedOutput(); err != nil {
		t.Fatalf("resume with 2 ranks from step %d: %v\n%s", st.Step, err, out)
	}
	c, err = weights.ReadCheckpoint(ckpt)
	if err != nil {
		t.Fatal(err)
	}
	json.Unmarshal(c.TrainState, &st)
	if want := 0; st.Step <= want {
		t.Errorf("resumed run ended at step %d", st.Step)
	}
}

// TestDataParallelBadSetups: a global batch that does not split over the
// ranks, ranks launched with different flags, and MPI missing under
// mpirun are clear errors and non-zero exits.
func TestDataParallelBadSetups(t *testing.T) {
	bin, cfg := mpiSetup(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel) // after the parallel subtests, which run after this function returns
	for _, tc := range []struct {
		name string
		cmd  *exec.Cmd
		want string
	}{
		{"batch", mpirun(ctx, "3", bin, trainArgs(cfg, t.TempDir(), "2")...), "does not split over 3 ranks"},
		{"flags", exec.CommandContext(ctx, "mpirun", append(append(append([]string{"--allow-run-as-root", "--oversubscribe", "-np", "1", bin},
			trainArgs(cfg, filepath.Join(t.TempDir(), "a"), "2")...), ":", "-np", "1", bin), append(trainArgs(cfg, filepath.Join(t.TempDir(), "a"), "2"), "--lr", "1e-3")...)...), "ranks disagree"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel() // mostly waiting for mpirun to start its ranks
			out, err := tc.cmd.CombinedOutput()
			if err == nil || !strings.Contains(string(out), tc.want) {
				t.Fatalf("err %v, output:\n%s\nwant a failure saying %q", err, out, tc.want)
			}
		})
	}
	t.Run("no-libmpi", func(t *testing.T) {
		t.Parallel()
		cmd := exec.CommandContext(ctx, "mpirun", "--allow-run-as-root", "--oversubscribe", "-np", "2", "-x", "DDPM_LIBMPI=/nonexistent/libmpi.so.40", bin)
		cmd.Args = append(cmd.Args, trainArgs(cfg, t.TempDir(), "2")...)
		out, err := cmd.CombinedOutput()
		if err == nil || !strings.Contains(string(out), "libmpi") {
			t.Fatalf("err %v, output:\n%s", err, out)
		}
	})
}
