package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"runtime"
	"runtime/debug"
	"syscall"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	// After the first signal, restore the default handling so that a second
	// one kills a shutdown that hangs.
	context.AfterFunc(ctx, stop)
	err := run(ctx, os.Args[1:], os.Getenv, os.Stdout, os.Stderr)
	stop()
	if err != nil {
		fmt.Fprintf(os.Stderr, "caledger: %v\n", err)
		if ue := (*usageError)(nil); errors.As(err, &ue) {
			os.Exit(2)
		}
		os.Exit(1)
	}
}

// run runs the command named by args[0]. It does not exit, does not read the
// process environment (env does) and writes only to stdout and stderr.
func run(ctx context.Context, args []string, env func(string) string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		printUsage(stderr)
		return &usageError{msg: "no command given"}
	}
	switch cmd, rest := args[0], args[1:]; cmd {
	case "serve":
		return runServe(ctx, rest, env, stdout, stderr)
	case "init":
		return runInit(ctx, rest, env, stdout, stderr)
	case "officer":
		return runOfficer(ctx, rest, env, stdout, stderr)
	case "projections":
		return runProjections(ctx, rest, env, stdout, stderr)
	case "audit":
		return runAudit(ctx, rest, env, stdout, stderr)
	case "backup":
		return runBackup(ctx, rest, env, stdout, stderr)
	case "restore":
		return runRestore(ctx, rest, env, stdout, stderr)
	case "kek":
		return runKEK(ctx, rest, env, stdout, stderr)
	case "verify-erasure":
		return runVerifyErasure(ctx, rest, env, stdout, stderr)
	case "version":
		return runVersion(rest, stdout)
	case "help", "-h", "-help", "--help":
		if len(rest) > 0 && rest[0] != "help" {
			// "caledger help serve" is "caledger serve -h".
			return run(ctx, []string{rest[0], "-h"}, env, stdout, stderr)
		}
		printUsage(stdout)
		return nil
	default:
		return &usageError{msg: fmt.Sprintf("unknown command %q (run 'caledger help')", cmd)}
	}
}

func printUsage(w io.Writer) {
	fmt.Fprint(w, `Usage: caledger <command> [flags]

caledger is an event-sourced, audit-first certificate authority.

Commands:
  init          create the CAs, the server certificate and the first admin credential
  serve         serve the HTTPS API
  officer add   issue an officer, auditor, compliance or admin client credential
  projections rebuild
                recreate the views from the ledger
  audit         verify the ledger over the API as an auditor: signed checkpoint,
                Merkle root, consistency with the last audit, public rules
  backup        write a backup of the data directory, with the server running or not
  restore       restore a backup into a new data directory
  kek rotate    re-wrap every key under a new key-encryption key and destroy the
                old one, so that older copies of the vault open no key
  verify-erasure
                check offline that an erasure receipt's erasure is in the ledger
  version       print the version
  help          print this help; 'caledger help COMMAND' prints a command's flags
`)
}

// usageError reports a command line that cannot be run. main exits 2 for it.
type usageError struct{ msg string }

func (e *usageError) Error() string { return e.msg }

// parseFlags parses args with fs. When -h or -help is given it prints the
// usage to stdout and returns help true. Flag errors and stray arguments are
// usage errors; fs never prints them itself.
func parseFlags(fs *flag.FlagSet, args []string, stdout io.Writer) (help bool, err error) {
	fs.SetOutput(io.Discard)
	err = fs.Parse(args)
	if errors.Is(err, flag.ErrHelp) {
		fs.SetOutput(stdout)
		fs.Usage()
		return true, nil
	}
	if err != nil {
		return false, &usageError{msg: fmt.Sprintf("%s: %v (run 'caledger %s -h')", fs.Name(), err, fs.Name())}
	}
	if fs.NArg() > 0 {
		return false, &usageError{msg: fmt.Sprintf("%s: unexpected argument %q", fs.Name(), fs.Arg(0))}
	}
	return false, nil
}

// setUsage gives fs a usage text: a synopsis line, a description, the flags.
func setUsage(fs *flag.FlagSet, synopsis, description string) {
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "Usage: caledger %s\n\n%s\n", synopsis, description)
		if hasFlags(fs) {
			fmt.Fprint(fs.Output(), "\nFlags:\n")
			fs.PrintDefaults()
		}
	}
}

func hasFlags(fs *flag.FlagSet) bool {
	n := 0
	fs.VisitAll(func(*flag.Flag) { n++ })
	return n > 0
}

func runVersion(args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("version", flag.ContinueOnError)
	setUsage(fs, "version", "Print caledger's version, the Go version and the platform.")
	if help, err := parseFlags(fs, args, stdout); help || err != nil {
		return err
	}
	_, err := fmt.Fprintf(stdout, "caledger %s %s %s/%s\n", version(), runtime.Version(), runtime.GOOS, runtime.GOARCH)
	return err
}

// version is the main module's version stamped by the go command, or
// "devel" for a build from a work tree.
func version() string {
	info, ok := debug.ReadBuildInfo()
	if !ok || info.Main.Version == "" || info.Main.Version == "(devel)" {
		return "devel"
	}
	return info.Main.Version
}
