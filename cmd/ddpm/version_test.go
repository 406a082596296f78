package main

import (
	"bytes"
	"context"
	"encoding/json"
	"runtime"
	"strings"
	"testing"
)

func TestVersion(t *testing.T) {
	var so, se bytes.Buffer
	if err := run(context.Background(), []string{"version", "--json"}, &so, &se); err != nil {
		t.Fatal(err)
	}
	var v versionInfo
	if err := json.Unmarshal(so.Bytes(), &v); err != nil {
		t.Fatalf("%v: %s", err, so.String())
	}
	if v.Go != runtime.Version() || !strings.HasPrefix(v.CPU, "cpu (") || v.Device == "" || v.Module == "" {
		t.Fatalf("version %+v", v)
	}
	so.Reset()
	if err := run(context.Background(), []string{"version"}, &so, &se); err != nil || !strings.Contains(so.String(), "device") {
		t.Fatalf("text output %q, err %v", so.String(), err)
	}
}
