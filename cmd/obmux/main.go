// Command obmux is a OneBot v11 multiplexer: it holds one connection to a
// OneBot implementation (NapCat, Lagrange, LLOneBot, go-cqhttp) and fans its
// events out to many named reverse-WS targets (NoneBot2, Koishi, ZeroBot),
// each a full OneBot connection of its own, with API calls routed back.
//
// Usage:
//
//	obmux               run the sidecar, configured by OBMUX_* variables
//	obmux demo          run obmux with a simulated upstream and two targets
//	obmux doctor        check the configuration and try every connection once
//	obmux healthcheck   exit 0 if /readyz on OBMUX_METRICS_LISTEN answers 200
//	obmux version       print the version
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"

	"github.com/obmux/obmux/config"
)

// version is stamped at build time with -ldflags "-X main.version=...".
var version = "dev"

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	go func() {
		// A second signal exits at once.
		<-ctx.Done()
		stop()
		second := make(chan os.Signal, 1)
		signal.Notify(second, syscall.SIGINT, syscall.SIGTERM)
		<-second
		fmt.Fprintln(os.Stderr, "obmux: second signal, exiting now")
		os.Exit(1)
	}()
	err := run(ctx, os.Args[1:], os.Environ(), os.Stdout, os.Stderr)
	os.Exit(exitCode(err, os.Stderr))
}

// exitCode reports err and returns the exit status for it: 0 for none, 2 for
// a configuration or usage error, 1 otherwise.
func exitCode(err error, stderr io.Writer) int {
	if err == nil {
		return 0
	}
	var ce *config.Error
	var ue usageError
	if errors.As(err, &ce) || errors.As(err, &ue) {
		fmt.Fprintln(stderr, "obmux:", err)
		return 2
	}
	if errors.Is(err, errUnhealthy) {
		return 1
	}
	fmt.Fprintln(stderr, "obmux:", err)
	return 1
}

type usageError string

func (e usageError) Error() string { return string(e) }

// run is obmux as a function: args are the command-line arguments after the
// program name, environ the environment as KEY=value strings. It returns when
// ctx is done (after a graceful shutdown) or on a fatal error.
func run(ctx context.Context, args, environ []string, stdout, stderr io.Writer) error {
	cmd := ""
	if len(args) > 0 {
		cmd = args[0]
	}
	switch cmd {
	case "", "serve":
		cfg, err := config.Load(environ)
		if err != nil {
			return err
		}
		return serve(ctx, cfg, stderr, nil)
	case "demo":
		return demo(ctx, environ, stdout, stderr)
	case "healthcheck":
		return healthcheck(ctx, environ, stdout)
	case "doctor":
		return doctor(ctx, environ, stdout)
	case "version", "-version", "--version":
		fmt.Fprintln(stdout, "obmux", version)
		return nil
	case "help", "-h", "-help", "--help":
		fmt.Fprint(stdout, usage)
		return nil
	}
	return usageError(fmt.Sprintf("unknown command %q\n%s", cmd, usage))
}

const usage = `usage: obmux [serve|demo|doctor|healthcheck|version]
  (no command)  run the sidecar, configured by OBMUX_* environment variables
  demo          run obmux with a simulated upstream and two simulated targets
  doctor        check the configuration obmux would run with and try every connection once
                (exit 0 only when all are OK)
  healthcheck   exit 0 if /readyz on OBMUX_METRICS_LISTEN answers 200, else 1
  version       print the version
`
