package main

import (
	"bytes"
	"errors"
	"os"
	"strings"
	"testing"
)

// asMainEnv, set to 1, makes the test binary run caledger's main instead of
// the tests: scripts the tests run (the README's lines) call the binary under
// test as bin/caledger through a wrapper (caledgerWrapper), without a second
// build.
const asMainEnv = "CALEDGER_TEST_AS_MAIN"

func TestMain(m *testing.M) {
	if os.Getenv(asMainEnv) == "1" {
		main() // exits on error
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// caledgerWrapper writes dir/bin/caledger, a script that runs the test binary
// as caledger.
func caledgerWrapper(t *testing.T, dir string) {
	t.Helper()
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(dir+"/bin", 0o755); err != nil {
		t.Fatal(err)
	}
	script := "#!/bin/sh\n" + asMainEnv + "=1 exec '" + self + "' \"$@\"\n"
	if err := os.WriteFile(dir+"/bin/caledger", []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
}

// noEnv is an empty environment.
func noEnv(string) string { return "" }

func TestRunCommandLine(t *testing.T) {
	tests := []struct {
		name       string
		args       []string
		usageErr   bool   // run returns a *usageError
		errWant    string // in the error
		stdoutWant string // in stdout
		stderrWant string // in stderr
	}{
		{name: "no command", args: nil, usageErr: true, errWant: "no command", stderrWant: "Usage: caledger <command>"},
		{name: "unknown command", args: []string{"frobnicate"}, usageErr: true, errWant: `unknown command "frobnicate"`},
		{name: "help", args: []string{"help"}, stdoutWant: "Commands:\n  init"},
		{name: "-h", args: []string{"-h"}, stdoutWant: "Commands:\n  init"},
		{name: "--help", args: []string{"--help"}, stdoutWant: "Commands:\n  init"},
		{name: "help serve", args: []string{"help", "serve"}, stdoutWant: "Usage: caledger serve [--data DIR] [--addr ADDR]"},
		{name: "serve -h", args: []string{"serve", "-h"}, stdoutWant: "-addr address"},
		{name: "serve --help", args: []string{"serve", "--help"}, stdoutWant: "curl --cacert DIR/ca/root.pem"},
		{name: "help unknown", args: []string{"help", "frobnicate"}, usageErr: true, errWant: `unknown command "frobnicate"`},
		{name: "serve bad flag", args: []string{"serve", "--bogus"}, usageErr: true, errWant: "serve: flag provided but not defined: -bogus (run 'caledger serve -h')"},
		{name: "serve flag without value", args: []string{"serve", "--addr"}, usageErr: true, errWant: "flag needs an argument: -addr"},
		{name: "serve stray argument", args: []string{"serve", "now"}, usageErr: true, errWant: `serve: unexpected argument "now"`},
		{name: "version", args: []string{"version"}, stdoutWant: "caledger devel go1."},
		{name: "version -h", args: []string{"version", "-h"}, stdoutWant: "Usage: caledger version"},
		{name: "version stray argument", args: []string{"version", "x"}, usageErr: true, errWant: `version: unexpected argument "x"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			err := run(t.Context(), tt.args, noEnv, &stdout, &stderr)
			switch {
			case tt.errWant == "" && err != nil:
				t.Fatalf("run: %v", err)
			case tt.errWant != "" && err == nil:
				t.Fatalf("run succeeded, want an error with %q", tt.errWant)
			case tt.errWant != "" && !strings.Contains(err.Error(), tt.errWant):
				t.Errorf("error = %q, want it to contain %q", err, tt.errWant)
			}
			var ue *usageError
			if got := errors.As(err, &ue); got != tt.usageErr {
				t.Errorf("usage error = %v, want %v (err %v)", got, tt.usageErr, err)
			}
			if !strings.Contains(stdout.String(), tt.stdoutWant) {
				t.Errorf("stdout = %q, want it to contain %q", stdout.String(), tt.stdoutWant)
			}
			if !strings.Contains(stderr.String(), tt.stderrWant) {
				t.Errorf("stderr = %q, want it to contain %q", stderr.String(), tt.stderrWant)
			}
			if tt.stderrWant == "" && stderr.Len() > 0 {
				t.Errorf("stderr = %q, want nothing", stderr.String())
			}
		})
	}
}
